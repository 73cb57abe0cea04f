"""The defaults of every pipeline and step option, in one place.

The CLI's argparse defaults, the ``@dsl.pipeline`` signature and the step functions read them from
:data:`DEFAULTS`. Settings that belong to a lower layer's dataclass are written there once and only referenced
here: fine-tuning in :class:`~tlops.train.finetune.TrainConfig`, the split in
:class:`~tlops.data.splits.SplitConfig`, the registry in :class:`~tlops.promotion.registry.RegistryConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tlops.data.config import SplitConfig
from tlops.errors import TlopsError
from tlops.promotion.config import RegistryConfig
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
        strategy: Transfer strategy: ``auto``, ``linear-probe`` or ``full``.
        epochs: Fine-tuning epochs.
        batch_size: Fine-tuning batch size.
        learning_rate: Fine-tuning peak learning rate.
        class_weighted: Weight each class's loss inversely to its frequency.
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
    """

    backbones: tuple[str, ...] = (DEFAULT_BACKBONE,)
    image_size: int = 0
    seed: int = SplitConfig.seed
    strategy: str = TrainConfig.strategy
    epochs: int = TrainConfig.epochs
    batch_size: int = TrainConfig.batch_size
    learning_rate: float = TrainConfig.lr
    class_weighted: bool = TrainConfig.class_weighted
    val_fraction: float = SplitConfig.val_fraction
    test_fraction: float = SplitConfig.test_fraction
    experiment: str = RegistryConfig.experiment
    model_name: str = RegistryConfig.model_name
    feature_cache: str = ""
    selection_metric: str = "probe"
    max_params: int = 0
    max_latency_ms: float = 0.0
    scoring_images_per_class: int = 0


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
