"""Fine-tuning settings: the transfer strategies and :class:`TrainConfig` (no torch import, for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from tlops.errors import TlopsError

STRATEGIES: tuple[str, ...] = ("auto", "linear-probe", "mlp-probe", "partial", "surgical", "lp-ft", "gradual")
"""Every strategy ``--strategy`` accepts (``full`` is still read as ``lp-ft``)."""
PROBES: tuple[str, ...] = ("linear-probe", "mlp-probe")
"""Feature-based strategies: the backbone stays frozen, a head is fitted on cached features."""
FINE_TUNING: tuple[str, ...] = ("partial", "surgical", "lp-ft", "gradual")
"""Parameter-based strategies: some or all backbone blocks are trained from the probe head."""
SURGICAL_BLOCKS: tuple[str, ...] = ("first", "middle", "last")
ALIASES = {"full": "lp-ft"}


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings (the defaults are the measured ones: see bench/README.md).

    Attributes:
        strategy: One of :data:`STRATEGIES`.
        epochs: Fine-tuning epochs (the budget of ``auto`` too).
        batch_size: Images per optimizer step over all processes (the global batch).
        lr: Peak AdamW learning rate of the head and the top block (low: the head starts trained).
        weight_decay: AdamW weight decay (never applied to norms and biases).
        layer_decay: Layer-wise learning-rate decay: block ``i`` from the top trains at ``lr * layer_decay**i``
            (1.0, no decay, measured best at the default ``lr`` against 0.75 and 0.5: bench/README.md).
        label_smoothing: Cross-entropy label smoothing.
        freeze_batchnorm: Keep BatchNorm statistics frozen (safer on small datasets).
        warmup_fraction: Fraction of steps with linear warm-up before the cosine decay.
        unfreeze_blocks: ``partial``: how many block groups from the top train; ``surgical``: how many train.
        surgical_blocks: ``surgical``: which blocks train, ``first`` (input-level shift: new colours, blur,
            sensors), ``middle`` (feature-level) or ``last`` (output-level: new label semantics).
        mlp_hidden: Hidden width of the ``mlp-probe`` head.
        mlp_dropout: Dropout before the ``mlp-probe`` output layer.
        swa_epochs: Average the weights of the last N epochs (stochastic weight averaging; 0: off).
        crop_scale: Smallest area fraction RandomResizedCrop keeps.
        hflip: Random horizontal flips (only for images whose mirror image has the same class).
        trivial_augment: TrivialAugmentWide on training images.
        mixup: MixUp alpha (0: off).
        cutmix: CutMix alpha (0: off).
        grad_accumulation: Micro-batches per optimizer step (reach ``batch_size`` on a small GPU).
        clip_grad_norm: Clip the gradient norm to this (0: off).
        torch_compile: ``torch.compile`` the model for training (pays off on GPUs, over many steps).
        auto_probe_accuracy: ``auto`` keeps a probe when its validation accuracy reaches this.
        auto_min_images_per_class: ``auto`` keeps a probe below this many training images in the smallest class.
        auto_lp_ft_images_per_class: ``auto`` fine-tunes every layer from this many images per class, fewer
            blocks below it.
        seed: Seed for shuffling, augmentation and initialisation.
        class_weighted: Weight the loss of each class inversely to its training frequency (imbalanced data).
    """

    strategy: str = "auto"
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    layer_decay: float = 1.0
    label_smoothing: float = 0.1
    freeze_batchnorm: bool = True
    warmup_fraction: float = 0.1
    unfreeze_blocks: int = 2
    surgical_blocks: str = "first"
    mlp_hidden: int = 512
    mlp_dropout: float = 0.2
    swa_epochs: int = 0
    crop_scale: float = 0.6
    hflip: bool = False
    trivial_augment: bool = False
    mixup: float = 0.0
    cutmix: float = 0.0
    grad_accumulation: int = 1
    clip_grad_norm: float = 1.0
    torch_compile: bool = False
    auto_probe_accuracy: float = 0.97
    auto_min_images_per_class: int = 10
    auto_lp_ft_images_per_class: int = 100
    seed: int = 0
    class_weighted: bool = False

    def __post_init__(self) -> None:
        """Reject settings that cannot train (``full`` is read as ``lp-ft``)."""
        object.__setattr__(self, "strategy", ALIASES.get(self.strategy, self.strategy))
        if self.strategy not in STRATEGIES:
            raise TlopsError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.surgical_blocks not in SURGICAL_BLOCKS:
            raise TlopsError(
                f"unknown surgical blocks {self.surgical_blocks!r}; choose one of {', '.join(SURGICAL_BLOCKS)}"
            )
        for name, value in (
            ("epochs", self.epochs),
            ("batch size", self.batch_size),
            ("learning rate", self.lr),
            ("number of blocks to unfreeze", self.unfreeze_blocks),
            ("gradient accumulation", self.grad_accumulation),
            ("MLP hidden width", self.mlp_hidden),
        ):
            if value <= 0:
                raise TlopsError(f"the {name} must be positive, got {value}")
        if not 0 < self.layer_decay <= 1:
            raise TlopsError(f"--layer-decay must be in (0, 1] (1: one learning rate for all), got {self.layer_decay}")
        if not 0 < self.crop_scale <= 1:
            raise TlopsError(f"--crop-scale must be in (0, 1], got {self.crop_scale}")
        if self.swa_epochs < 0 or self.swa_epochs > self.epochs:
            raise TlopsError(f"--swa-epochs must be between 0 and --epochs ({self.epochs}), got {self.swa_epochs}")
        if self.batch_size % self.grad_accumulation:
            raise TlopsError(
                f"--batch-size {self.batch_size} is not a multiple of --grad-accumulation {self.grad_accumulation}"
            )
        if min(self.mixup, self.cutmix, self.clip_grad_norm, self.mlp_dropout) < 0 or self.mlp_dropout >= 1:
            raise TlopsError("--mixup, --cutmix and --clip-grad-norm must be >= 0, and the MLP dropout in [0, 1)")

    @property
    def fine_tunes(self) -> bool:
        """Whether the strategy trains backbone weights (``auto`` may)."""
        return self.strategy in FINE_TUNING
