"""Fine-tuning settings: :class:`TrainConfig` (no torch import, for the CLI).

The strategies themselves are registered objects in :mod:`tlops.train.strategies`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tlops.models.names import DETECTORS
from tlops.settings import SettingError, check_ranges, internal, setting
from tlops.train.strategies import IMAGE_CLASSIFICATION, STRATEGIES, SURGICAL_BLOCKS, Strategy

# The aliases --strategy accepts besides the registered names (full = lp-ft).
STRATEGY_CHOICES: tuple[str, ...] = (*STRATEGIES.names(), *STRATEGIES.aliases())
# What auto may try on images (auto is an image strategy).
FINE_TUNING_STRATEGIES: tuple[str, ...] = tuple(
    name for name, entry in STRATEGIES if entry.trains_backbone and IMAGE_CLASSIFICATION in entry.tasks
)


@dataclass(frozen=True)
class TrainConfig:
    """How the classifier is trained from the probe head (the defaults are measured: see bench/README.md).

    Each field's help text is its documentation (``tlops run --help`` shows it).
    """

    strategy: str = setting(
        "auto",
        "transfer strategy: " + "; ".join(f"{name}: {entry.summary}" for name, entry in STRATEGIES)
        + " (full is read as lp-ft)",
        choices=STRATEGY_CHOICES,
        parameter=True,
    )  # fmt: skip
    epochs: int = setting(3, "fine-tuning epochs (also auto's budget)", minimum=1, parameter=True)
    batch_size: int = setting(32, "images per optimizer step over all processes (the global batch)", minimum=1)
    lr: float = setting(
        1e-4,
        "peak AdamW learning rate of the head and the top block (low: the head starts trained)",
        minimum=0,
        open_min=True,
        aliases=("learning-rate",),
    )
    weight_decay: float = setting(0.01, "AdamW weight decay (never on norms and biases)", minimum=0)
    layer_decay: float = setting(
        1.0,
        "layer-wise learning-rate decay: block i from the top trains at lr * decay**i; 1 turns it off (measured "
        "best against 0.75 and 0.5: bench/README.md)",
        minimum=0,
        maximum=1,
        open_min=True,
    )
    label_smoothing: float = setting(0.1, "cross-entropy label smoothing", minimum=0, maximum=1, open_max=True)
    freeze_batchnorm: bool = setting(True, "keep BatchNorm statistics frozen while fine-tuning (small data)")
    warmup_fraction: float = setting(
        0.1, "share of the steps with linear warm-up before the cosine decay", minimum=0, maximum=1, open_max=True
    )
    unfreeze_blocks: int = setting(
        2, "partial: train the top N blocks of the backbone's stages; surgical: train N blocks", minimum=1
    )
    surgical_blocks: str = setting(
        "first",
        "surgical: first (input-level shift: colour, blur, sensor), middle (feature-level) or last (output-level) "
        "blocks",
        choices=SURGICAL_BLOCKS,
    )
    mlp_hidden: int = setting(512, "mlp-probe: hidden width", minimum=1)
    mlp_dropout: float = setting(0.2, "mlp-probe: dropout before the output layer", minimum=0, maximum=1, open_max=True)
    swa_epochs: int = setting(0, "average the weights of the last N epochs (SWA; 0: off)", minimum=0)
    crop_scale: float = setting(0.6, "smallest area share RandomResizedCrop keeps", minimum=0, maximum=1, open_min=True)
    hflip: bool = setting(False, "random horizontal flips (only when a mirrored image keeps its class)")
    trivial_augment: bool = setting(False, "TrivialAugmentWide on training images")
    mixup: float = setting(0.0, "MixUp alpha (0: off)", minimum=0)
    cutmix: float = setting(0.0, "CutMix alpha (0: off)", minimum=0)
    grad_accumulation: int = setting(
        1, "micro-batches per optimizer step, to reach the batch size on a small GPU", minimum=1
    )
    clip_grad_norm: float = setting(1.0, "clip the gradient norm to this (0: off)", minimum=0)
    torch_compile: bool = setting(False, "torch.compile the model for fine-tuning (pays off on GPUs)")
    auto_probe_accuracy: float = setting(
        0.97, "auto keeps a probe when its estimated accuracy reaches this (above 1: never)", minimum=0
    )
    auto_min_images_per_class: int = setting(
        100,
        "auto tries fine-tuning only from this many training images in the smallest class (below it, fine-tuning "
        "lost to the best probe in every cell of the transfer benchmark: bench/README.md)",
        minimum=0,
    )
    auto_fine_tune: str = setting(
        "lp-ft",
        "the strategy auto tries when fine-tuning may pay off (kept only if it beats the probe on validation)",
        choices=FINE_TUNING_STRATEGIES,
    )
    cross_validate_below: int = setting(
        500,
        "choose the probe and its regularisation by repeated k-fold cross-validation on train+val, and refit it on "
        "train+val, when the validation split has fewer images than this (0: always on the validation split)",
        minimum=0,
    )
    class_weighted: bool = setting(
        False,
        "weight each class's loss inversely to its frequency (probes and fine-tuning), for imbalanced data",
        parameter=True,
    )
    lora_rank: int = setting(8, "lora: rank of the adapters on each attention query and value", minimum=1)
    lora_alpha: float = setting(16.0, "lora: the adapters' update is scaled by alpha / rank", minimum=0, open_min=True)
    lora_lr: float = setting(
        2e-3,
        "lora: peak learning rate of the adapters and the head (the adapters start at zero and learn little at the "
        "fine-tuning --lr in a few epochs: 0.23 against 0.77 validation accuracy after 2 epochs at 1e-4 and 2e-3)",
        minimum=0,
        open_min=True,
    )
    lora_dropout: float = setting(0.1, "lora: dropout on the adapters' input", minimum=0, maximum=1, open_max=True)
    max_tokens: int = setting(
        256, "text: tokens per example, longer texts are cut (the tokenizer's own limit caps it)", minimum=2
    )
    detector: str = setting(
        "fasterrcnn",
        "object detection: the detector on the backbone's feature pyramid: fasterrcnn (two-stage, anchors) or fcos "
        "(one-stage, anchor-free, half the parameters)",
        choices=DETECTORS,
    )
    detection_image_size: int = setting(
        512,
        "object detection: the detector's input side: images are scaled to it, or to the training images' longest "
        "side when that is smaller (small images are not blown up)",
        minimum=32,
    )
    detection_epochs: int = setting(
        12, "object detection: training epochs (the feature pyramid and heads start untrained)", minimum=1
    )
    detection_batch_size: int = setting(8, "object detection: images per optimizer step", minimum=1)
    detector_weights: str = setting(
        "",
        "object detection: a trained torchvision detector's checkpoint (local path or s3://; e.g. COCO "
        "fasterrcnn_resnet50_fpn's, with --backbones torchvision:resnet50) loaded over the detector, its "
        "class-specific tensors skipped ('': the backbone's pretrained weights only)",
    )
    seed: int = internal(0)

    def __post_init__(self) -> None:
        """Reject settings that cannot train (``full`` is read as ``lp-ft``)."""
        check_ranges(self)
        object.__setattr__(self, "strategy", STRATEGIES.canonical(self.strategy))
        if self.swa_epochs > self.epochs:
            raise SettingError(
                ("swa_epochs", "epochs"), "{0} must be between 0 and {1} " + f"({self.epochs}), got {self.swa_epochs}"
            )
        if self.batch_size % self.grad_accumulation:
            raise SettingError(
                ("batch_size", "grad_accumulation"),
                "{0} " + f"{self.batch_size} is not a multiple of " + "{1} " + f"{self.grad_accumulation}",
            )

    @property
    def strategy_entry(self) -> Strategy:
        """The registered :class:`~tlops.train.strategies.Strategy` of :attr:`strategy`."""
        return STRATEGIES.get(self.strategy)
