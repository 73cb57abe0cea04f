"""The defaults of every pipeline and step option, in one place.

The CLI's argparse defaults, the ``@dsl.pipeline`` signature and the step functions read them from
:data:`DEFAULTS`. Settings that belong to a lower layer's dataclass are written there once and only referenced
here: fine-tuning in :class:`~tlops.train.finetune.TrainConfig`, the split in
:class:`~tlops.data.splits.SplitConfig`, the registry in :class:`~tlops.promotion.registry.RegistryConfig`, the
promotion gate in :class:`~tlops.promotion.gate.GateConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tlops.data.config import SplitConfig
from tlops.errors import TlopsError
from tlops.promotion.config import RegistryConfig
from tlops.promotion.gate import GateConfig
from tlops.train.config import TrainConfig

DEFAULT_BACKBONE = "efficientnet_lite0"
SELECTION_METRICS = ("probe", "knn", "logme")


@dataclass(frozen=True)
class Defaults:
    """The default of each pipeline parameter (the names are the ``@dsl.pipeline`` parameter names).

    Attributes:
        backbones: Candidate backbones; more than one are ranked by the select-backbone step.
        image_size: Input size; 0 means each backbone's own (kfp.local cannot take a ``None`` default).
        seed: Seed of the split, the sampling and the training.
        strategy: Transfer strategy (:data:`tlops.train.config.STRATEGIES`).
        epochs: Fine-tuning epochs.
        batch_size: Fine-tuning batch size.
        learning_rate: Fine-tuning peak learning rate.
        class_weighted: Weight each class's loss inversely to its frequency.
        unfreeze_blocks: ``partial``/``surgical``: how many backbone blocks train.
        surgical_blocks: ``surgical``: ``first``, ``middle`` or ``last`` blocks.
        layer_decay: Layer-wise learning-rate decay.
        swa_epochs: Average the weights of the last N epochs (0: off).
        hflip: Random horizontal flips.
        trivial_augment: TrivialAugmentWide.
        mixup: MixUp alpha (0: off).
        cutmix: CutMix alpha (0: off).
        grad_accumulation: Micro-batches per optimizer step.
        torch_compile: ``torch.compile`` the model for fine-tuning.
        checkpoint_uri: Folder or ``s3://`` prefix of the fine-tune checkpoint (``""``: none; ``tlops run`` uses
            ``OUTPUT/checkpoints``).
        processes_per_node: Training processes in the fine-tune pod (DDP under torchrun; one per GPU).
        val_fraction: Share of each class held out for validation.
        test_fraction: Share of each class held out for the test.
        experiment: MLflow experiment.
        model_name: Registered model name.
        feature_cache: Folder or ``s3://`` prefix of the feature cache; ``""`` is the runtime's cache folder
            (on a cluster each pod has its own: give an ``s3://`` prefix to compute features once per key).
        selection_metric: The score that ranks candidates: ``probe`` (cross-validated linear-probe accuracy),
            ``knn`` (cross-validated cosine kNN accuracy) or ``logme``.
        max_params: Largest backbone, in parameters, a candidate may have (0: no limit).
        max_latency_ms: Slowest measured latency per image on the run's device a candidate may have (0: none).
        scoring_images_per_class: Training images per class the scores use (0: all of them).
        gate_metric: The score the promotion gate compares: ``accuracy`` or ``macro-f1``.
        gate_margin: Gain the lower bound of the gate's confidence interval must exceed.
        gate_confidence: Level of the gate's paired bootstrap interval.
        gate_alpha: Significance level of the gate's paired test.
        gate_max_class_drop: Largest net drop of any class's recall, as a share of its test images ...
        gate_class_drop_images: ... but never fewer images than this.
        gate_max_ece_increase: How much worse the challenger's calibration error may be than the champion's.
        gpu_accelerator_type: Accelerator resource the GPU steps ask for (the extended resource name on the nodes).
        gpu_count: Accelerators each GPU step asks for.
        gpu_node_selector: Node labels the GPU steps' pods must match (``{}``: any node with the accelerator).
        gpu_tolerations: Kubernetes tolerations of the GPU steps' pods; the default tolerates the
            ``nvidia.com/gpu`` taint GPU node pools usually carry.
        gpu_cpu_request: CPU request of each GPU step.
        gpu_cpu_limit: CPU limit of each GPU step (its data loaders' workers run on these).
        gpu_memory_request: Memory request of each GPU step.
        gpu_memory_limit: Memory limit of each GPU step (the /dev/shm mount counts against it).
    """

    backbones: tuple[str, ...] = (DEFAULT_BACKBONE,)
    image_size: int = 0
    seed: int = SplitConfig.seed
    strategy: str = TrainConfig.strategy
    epochs: int = TrainConfig.epochs
    batch_size: int = TrainConfig.batch_size
    learning_rate: float = TrainConfig.lr
    class_weighted: bool = TrainConfig.class_weighted
    unfreeze_blocks: int = TrainConfig.unfreeze_blocks
    surgical_blocks: str = TrainConfig.surgical_blocks
    layer_decay: float = TrainConfig.layer_decay
    swa_epochs: int = TrainConfig.swa_epochs
    hflip: bool = TrainConfig.hflip
    trivial_augment: bool = TrainConfig.trivial_augment
    mixup: float = TrainConfig.mixup
    cutmix: float = TrainConfig.cutmix
    grad_accumulation: int = TrainConfig.grad_accumulation
    torch_compile: bool = TrainConfig.torch_compile
    checkpoint_uri: str = ""
    processes_per_node: int = 1
    val_fraction: float = SplitConfig.val_fraction
    test_fraction: float = SplitConfig.test_fraction
    experiment: str = RegistryConfig.experiment
    model_name: str = RegistryConfig.model_name
    feature_cache: str = ""
    selection_metric: str = "probe"
    max_params: int = 0
    max_latency_ms: float = 0.0
    scoring_images_per_class: int = 0
    gate_metric: str = GateConfig.metric
    gate_margin: float = GateConfig.margin
    gate_confidence: float = GateConfig.confidence
    gate_alpha: float = GateConfig.alpha
    gate_max_class_drop: float = GateConfig.max_class_drop
    gate_class_drop_images: int = GateConfig.class_drop_images
    gate_max_ece_increase: float = GateConfig.max_ece_increase
    # GPU node pool
    gpu_accelerator_type: str = "nvidia.com/gpu"
    gpu_count: int = 1
    gpu_node_selector: dict[str, str] = field(default_factory=dict)  # KFP wants a dict default for a dict parameter
    gpu_tolerations: list[dict[str, str]] = field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )
    gpu_cpu_request: str = "4"
    gpu_cpu_limit: str = "8"
    gpu_memory_request: str = "16G"
    gpu_memory_limit: str = "32G"


DEFAULTS = Defaults()


def check_selection_options(metric: str, max_params: int, max_latency_ms: float) -> None:
    """Check the backbone-ranking options before any work.

    Raises:
        TlopsError: for an unknown metric or a negative budget.
    """
    if metric not in SELECTION_METRICS:
        raise TlopsError(f"unknown selection metric {metric!r}: use one of {', '.join(SELECTION_METRICS)}")
    if max_params < 0 or max_latency_ms < 0:
        raise TlopsError("--max-params and --max-latency-ms must be 0 (no limit) or positive")


GATE_OPTIONS = (
    "gate_metric",
    "gate_margin",
    "gate_confidence",
    "gate_alpha",
    "gate_max_class_drop",
    "gate_class_drop_images",
    "gate_max_ece_increase",
)


def gate_config(**options: float | int | str) -> GateConfig:
    """The gate's thresholds from the ``gate_*`` options (CLI, pipeline parameters), checked.

    Raises:
        TlopsError: naming the option out of range and the range.
    """
    try:
        return GateConfig(**{name.removeprefix("gate_"): value for name, value in options.items()})
    except ValueError as error:
        field_name = str(error).split(" ", 1)[0].removeprefix("GateConfig.")
        flag = "--gate-" + field_name.replace("_", "-")
        raise TlopsError(
            f"{flag}: {str(error).split(': ', 1)[-1]} (got {options.get('gate_' + field_name)!r})"
        ) from None
