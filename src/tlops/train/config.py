"""Fine-tuning settings: the transfer strategies and :class:`TrainConfig` (no torch import, for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from tlops.errors import TlopsError

STRATEGIES: tuple[str, ...] = ("auto", "linear-probe", "full")


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings.

    Attributes:
        strategy: ``auto``, ``linear-probe`` or ``full``.
        epochs: Fine-tuning epochs (``full``).
        batch_size: Images per step.
        lr: Peak AdamW learning rate for all layers (low: the head starts trained).
        weight_decay: AdamW weight decay.
        label_smoothing: Cross-entropy label smoothing.
        freeze_batchnorm: Keep BatchNorm statistics frozen (safer on small datasets).
        warmup_fraction: Fraction of steps with linear warm-up before the cosine decay.
        auto_probe_accuracy: ``auto`` keeps the probe when its validation accuracy reaches this.
        auto_min_images_per_class: ``auto`` keeps the probe below this many training images per class.
        seed: Seed for shuffling and augmentation.
        hflip: Random horizontal flips (for photos whose mirror image has the same class).
        class_weighted: Weight the loss of each class inversely to its training frequency (imbalanced data).
    """

    strategy: str = "auto"
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    freeze_batchnorm: bool = True
    warmup_fraction: float = 0.1
    auto_probe_accuracy: float = 0.97
    auto_min_images_per_class: int = 10
    seed: int = 0
    hflip: bool = False
    class_weighted: bool = False

    def __post_init__(self) -> None:
        """Reject settings that cannot train."""
        if self.strategy not in STRATEGIES:
            raise TlopsError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        for name, value in (("epochs", self.epochs), ("batch size", self.batch_size), ("learning rate", self.lr)):
            if value <= 0:
                raise TlopsError(f"the {name} must be positive, got {value}")
