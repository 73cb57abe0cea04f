"""How a dataset is read and split: :class:`SplitConfig` (no numpy or pandas import, for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from tlops.data.archives import ArchiveLimits
from tlops.settings import SettingError, check_ranges, internal, setting


@dataclass(frozen=True)
class SplitConfig:
    """How the dataset is split; the split is deterministic for the run's seed.

    Attributes:
        val_fraction: Fraction of each class held out for validation; for a pre-split dataset without val, the
            fraction of each class's training images moved to val.
        test_fraction: Fraction of each class held out for the final test (unused when the test split is given).
        seed: Seed of the per-class shuffle (the run's seed).
        max_text_chars: Longest text kept (characters, after normalisation); longer ones are quarantined.
        workers: Files read and decoded in parallel.
        archive_limits: How much an archive source may expand (the edges read them from the environment with
            :meth:`ArchiveLimits.from_environment`).
    """

    val_fraction: float = setting(
        0.15,
        "share of each class held out for validation (of train, for a pre-split dataset without val/)",
        minimum=0,
        maximum=1,
        open_min=True,
        open_max=True,
    )
    test_fraction: float = setting(
        0.15, "share of each class held out for the test", minimum=0, maximum=1, open_min=True, open_max=True
    )
    max_text_chars: int = setting(
        100_000, "longest text kept, in characters (text classification); longer texts are quarantined", minimum=1
    )
    seed: int = internal(0)
    workers: int = internal(8)
    archive_limits: ArchiveLimits = internal(factory=ArchiveLimits)

    def __post_init__(self) -> None:
        """Reject fractions that leave nothing to train on."""
        check_ranges(self)
        if self.val_fraction + self.test_fraction >= 0.9:
            raise SettingError(
                ("val_fraction", "test_fraction"), "{0} + {1} must leave at least 10% for training; lower them"
            )
