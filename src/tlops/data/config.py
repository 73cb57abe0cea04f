"""How a dataset is read and split: :class:`SplitConfig` (no numpy or pandas import, for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tlops.data.archives import ArchiveLimits
from tlops.errors import TlopsError


@dataclass(frozen=True)
class SplitConfig:
    """How the dataset is split; the split is deterministic for a seed.

    Attributes:
        val_fraction: Fraction of each class held out for validation; for a pre-split dataset without val, the
            fraction of each class's training images moved to val.
        test_fraction: Fraction of each class held out for the final test (unused when the test split is given).
        seed: Seed of the per-class shuffle.
        workers: Files read and decoded in parallel.
        archive_limits: How much an archive source may expand (the edges read them from the environment with
            :meth:`ArchiveLimits.from_environment`).
    """

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    workers: int = 8
    archive_limits: ArchiveLimits = field(default_factory=ArchiveLimits)

    def __post_init__(self) -> None:
        """Reject fractions that leave nothing to train on."""
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1):
            raise TlopsError("val and test fractions must each lie strictly between 0 and 1")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise TlopsError("val + test fractions must leave at least 10% for training; lower them")
