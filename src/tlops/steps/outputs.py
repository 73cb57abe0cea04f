"""Every file a step writes: the names, a typed record per JSON file, and the readers and writers of the rest.

Each JSON record carries a ``schema_version`` and is checked on read: given a folder that is not the expected
step output, or one written with another schema, a reader raises a :class:`~tlops.errors.TlopsError` naming the
folder and the command to run. The prepare-data step's files are written by :mod:`tlops.data.prepare` (the data
layer cannot import this one); they are re-exported here, so steps read every output through this module.

The records import neither torch nor pandas, so the command line checks its input folders before it loads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.data.prepared import MANIFEST_FILE, OBJECT_DETECTION, REPORT_FILE, TEXT_CLASSIFICATION, PreparedData
from tlops.data.prepared import SUMMARY_FILE as PREPARE_SUMMARY_FILE
from tlops.errors import TlopsError
from tlops.io.records import JsonRecord
from tlops.models.names import TFIDF_BASELINE

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch
    from torch import nn

    from tlops.data.preprocessing import DataConfig

__all__ = [
    "AUDIT_FILE",
    "CALIBRATION_SET_FILE",
    "COMPARISON_FILE",
    "CONFUSION_MATRIX_FILE",
    "DETECTION_EXAMPLES_FILE",
    "EVALUATION_FILE",
    "EXPORT_FILE",
    "FEATURES_FILE",
    "HEAD_FILE",
    "LEARNING_CURVES_FILE",
    "LOGGED_FILES",
    "MANIFEST_FILE",
    "MODEL_CONFIG_FILE",
    "PLAN_FILE",
    "PRECISION_RECALL_FILE",
    "PREDICTIONS_FILE",
    "PREPARE_SUMMARY_FILE",
    "PROBE_SUMMARY_FILE",
    "RELIABILITY_DIAGRAM_FILE",
    "REPORT_FILE",
    "RUN_SUMMARY_FILE",
    "SCORE_FILE",
    "SELECTION_FILE",
    "SELECTION_TABLE_ARTIFACT",
    "SELECTION_TABLE_FILE",
    "SHARD_FILE",
    "TRAINING_FILE",
    "WEIGHTS_FILE",
    "BackboneScore",
    "Comparison",
    "Evaluation",
    "ModelConfig",
    "PreparedData",
    "ProbeSummary",
    "RunSummary",
    "Selection",
    "Training",
    "load_model",
    "load_prepared",
    "read_features",
    "read_head",
    "save_model",
    "write_features",
    "write_predictions",
    "write_probe",
]

PLAN_FILE = "extraction_plan.json"  # plan-extraction: the shards of the images without cached features
SHARD_FILE = "extraction_shard.json"  # extract-shard: what one shard pod extracted
SCORE_FILE = "score.json"  # score-backbone
SELECTION_FILE = "selection.json"  # select-backbone
SELECTION_TABLE_FILE = "selection.md"
SELECTION_TABLE_ARTIFACT = "report/backbone_selection.json"  # the ranking as an MLflow table
FEATURES_FILE = "features.safetensors"  # extract-features: its features/ folder
HEAD_FILE = "head.safetensors"  # extract-features: its probe/ folder
PROBE_SUMMARY_FILE = "probe_summary.json"
WEIGHTS_FILE = "model.safetensors"  # fine-tune
MODEL_CONFIG_FILE = "model_config.json"
TRAINING_FILE = "training.json"
LEARNING_CURVES_FILE = "learning_curves.png"
TFIDF_DIR = "tfidf"  # the text baseline's classifier: in extract-features' probe/ and in a fine-tune output
CALIBRATION_SET_FILE = "calibration_set.safetensors"  # out-of-fold logits when the head saw the validation split
EVALUATION_FILE = "evaluation.json"  # evaluate
PREDICTIONS_FILE = "predictions.safetensors"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
RELIABILITY_DIAGRAM_FILE = "reliability_diagram.png"
PRECISION_RECALL_FILE = "precision_recall.png"  # object detection: per-class precision-recall at IoU .5
DETECTION_EXAMPLES_FILE = "detection_examples.png"  # object detection: test images with true and predicted boxes
COMPARISON_FILE = "comparison.json"
EXPORT_FILE = "export.json"  # register with --export: the export's outcome
AUDIT_FILE = "audit.json"  # audit: the flagged examples and counts
RUN_SUMMARY_FILE = "run_summary.json"  # register, and tlops run
# The files the register step logs with the MLflow run (the report under data/, the rest under report/).
LOGGED_FILES = (
    MANIFEST_FILE,
    PREPARE_SUMMARY_FILE,
    REPORT_FILE,
    SELECTION_FILE,
    SELECTION_TABLE_FILE,
    PROBE_SUMMARY_FILE,
    MODEL_CONFIG_FILE,
    TRAINING_FILE,
    LEARNING_CURVES_FILE,
    EVALUATION_FILE,
    COMPARISON_FILE,
    CONFUSION_MATRIX_FILE,
    RELIABILITY_DIAGRAM_FILE,
    PRECISION_RECALL_FILE,
    DETECTION_EXAMPLES_FILE,
)


# --- select-backbone ---------------------------------------------------------------------------------------------


@dataclass
class BackboneScore(JsonRecord):
    """How well one backbone's frozen features fit the training split, and what the backbone costs.

    Attributes:
        name: The backbone (``pixels`` for the no-transfer baseline).
        probe_accuracy: Cross-validated linear-probe accuracy (regularisation chosen inside the folds).
        probe_std_error: Its standard error over the folds.
        knn_accuracy: Cross-validated cosine kNN accuracy (k chosen inside the folds).
        knn_std_error: Its standard error over the folds.
        knn_k: The k chosen most often.
        logme: LogME evidence per sample (exact, with the (D - k) log alpha term).
        params: Parameters of the backbone.
        flops: Floating-point operations per image at its input size.
        latency_ms: Measured latency of one image.
        device: The device the latency was measured on.
        num_features: Width of the features.
        input_size: Input size of the images.
        images: Training images the scores used.
        folds: Cross-validation folds.
        scoring_seconds: Time to compute the scores from the features.
        feature_seconds: Time to get the features (0 extraction on a cache hit: only the read).
        extraction_seconds: Time of the pass that computed the features (this run's or an earlier one's).
        cache_hit: Whether the features came from the cache.
        cache_entry: The feature-cache entry.
        probe_fold_accuracies: The probe's accuracy on each fold; every candidate of a run is scored on the same
            images and folds, so two candidates compare fold by fold.
        task: The task of the scored data (object detection scores the crops of its boxes, and never ships the
            baseline: a detector needs a backbone).
    """

    name: str
    probe_accuracy: float
    probe_std_error: float
    knn_accuracy: float
    knn_std_error: float
    knn_k: int
    logme: float
    params: int
    flops: int
    latency_ms: float
    device: str
    num_features: int
    input_size: int
    images: int
    folds: int
    scoring_seconds: float
    feature_seconds: float
    extraction_seconds: float
    cache_hit: bool
    cache_entry: str
    probe_fold_accuracies: list[float] = field(default_factory=list)
    task: str = field(default="", kw_only=True)
    schema_version: int = field(default=2, kw_only=True)

    FILE = SCORE_FILE
    STEP = "score-backbone"


@dataclass
class Selection(JsonRecord):
    """The backbone ranking and the choice.

    Attributes:
        chosen: Name of the chosen backbone.
        ranking: One row per candidate, best first: the :class:`BackboneScore` fields plus ``rank`` and
            ``status`` (``chosen``, ``ranked``, or why it was excluded).
        reasons: Why the chosen backbone won, and whether transfer beats raw pixels.
        metric: The score that ranked them (``probe``, ``knn`` or ``logme``).
        baseline: The no-transfer baseline's row (raw 32x32 pixels), or ``None``.
        transfer_helps: Whether the chosen backbone's probe accuracy beats the baseline's beyond noise (``False``:
            the baseline's beats it beyond noise; ``None``: no baseline, or no clear difference).
    """

    chosen: str
    ranking: list[dict[str, Any]]
    reasons: list[str]
    metric: str = "probe"
    baseline: dict[str, Any] | None = None
    transfer_helps: bool | None = None
    schema_version: int = field(default=2, kw_only=True)

    FILE = SELECTION_FILE
    STEP = "select-backbone"

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The ranking, then the baseline's row."""
        return [*self.ranking, *([self.baseline] if self.baseline else [])]


# --- extract-features --------------------------------------------------------------------------------------------


@dataclass
class ProbeSummary(JsonRecord):
    """The linear probe fitted on frozen features (beside ``head.safetensors`` in the probe/ folder).

    Attributes:
        backbone: The frozen backbone.
        classes: The classes of the dataset the head was fitted on, in output order.
        C: Inverse regularization strength chosen on validation.
        val_accuracy: Accuracy (balanced accuracy when class-weighted) on the validation features.
        train_accuracy: Accuracy on the training features.
        image_size: The backbone's input size.
        num_features: Width of the features.
        class_weighted: Whether the classes were weighted inversely to their frequency.
        cache_hit: Whether the features came from the feature cache (no backbone ran).
        feature_seconds: Time spent getting the features (reading the cache, or the backbone's pass).
        cache_entry: The feature-cache entry holding them.
    """

    backbone: str
    classes: list[str]
    C: float
    val_accuracy: float
    train_accuracy: float
    image_size: int
    num_features: int
    class_weighted: bool = False
    cache_hit: bool = False
    feature_seconds: float = 0.0
    cache_entry: str = ""

    FILE = PROBE_SUMMARY_FILE
    STEP = "extract-features"
    HINT = "pass the probe/ folder inside the --output of tlops extract-features"


def load_prepared(folder: Path) -> tuple[pd.DataFrame, PreparedData]:
    """The manifest (absolute image URIs) and summary of a prepare-data output."""
    from tlops.data.prepare import load_prepared as load

    return load(folder)


def write_features(folder: Path, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Write the cached features and targets of every split into ``folder``."""
    from tlops.train.probe import save_features

    Path(folder).mkdir(parents=True, exist_ok=True)
    save_features(Path(folder) / FEATURES_FILE, splits)


def read_features(folder: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The features and targets per split that :func:`write_features` wrote."""
    from tlops.train.probe import load_features

    path = Path(folder) / FEATURES_FILE
    if not path.is_file():
        raise TlopsError(f"{folder} is not an extract-features output (no {FEATURES_FILE}): pass its features/ folder")
    return load_features(path)


def write_probe(folder: Path, head: nn.Linear, summary: ProbeSummary) -> None:
    """Write the probe's head and summary into ``folder`` (the summary last: it marks a complete output)."""
    from tlops.train.probe import save_head

    Path(folder).mkdir(parents=True, exist_ok=True)
    save_head(Path(folder) / HEAD_FILE, head)
    summary.write(folder)


def read_head(folder: Path) -> nn.Linear:
    """The probe's head that :func:`write_probe` wrote."""
    from tlops.train.probe import load_head

    path = ProbeSummary.check_folder(folder).with_name(HEAD_FILE)
    if not path.is_file():
        raise TlopsError(f"{folder} is not an extract-features output (no {HEAD_FILE}): {ProbeSummary.HINT}")
    return load_head(path)


# --- fine-tune ---------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig(JsonRecord):
    """What rebuilds the trained classifier from ``model.safetensors``.

    Attributes:
        backbone: Backbone name.
        classes: Class names; a class's index is its output.
        data_config: The preprocessing of the weights (``DataConfig`` as a dict).
        strategy: The transfer strategy that produced the weights.
        head_hidden: Hidden width of the MLP head (``mlp-probe``); 0 for a linear head.
        weights_sha256: Checksum of the pretrained backbone weights training started from (lineage).
        task: The task of the model (``""``: image classification, as before tasks were recorded).
    """

    backbone: str
    classes: list[str]
    data_config: dict[str, Any]
    strategy: str
    head_hidden: int = 0
    weights_sha256: str = ""
    task: str = ""

    FILE = MODEL_CONFIG_FILE
    STEP = "fine-tune"

    def __post_init__(self) -> None:
        """Hold the data config as JSON does (lists, not tuples), so a record equals the one read back."""
        self.data_config = {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()}

    @property
    def preprocessing(self) -> DataConfig:
        """The data config as the dataclass the transforms take."""
        from tlops.data.preprocessing import DataConfig

        return DataConfig.from_dict(self.data_config)


@dataclass
class Training(JsonRecord):
    """How the fine-tune step trained the classifier.

    Attributes:
        strategy: The strategy applied (``linear-probe`` or ``full``).
        requested_strategy: The strategy asked for (``auto`` too).
        reasons: Why the strategy was applied.
        best_epoch: The epoch whose weights were kept (0: the probe).
        val_accuracy: Validation accuracy of the kept weights.
        probe_val_accuracy: Validation accuracy of the probe.
        history: Loss and accuracy per epoch.
        config: The ``TrainConfig`` as a dict.
        evidence: What ``auto`` decided from (images per class, probe, MLP probe and kNN accuracy, baseline).
        resumed_from: The epoch whose checkpoint the step resumed from (``None``: it started afresh).
        images_per_second: Mean training throughput over the fine-tuning epochs (``None``: nothing fine-tuned).
        excluded_label_errors: Training examples left out as suspected label errors
            (``--exclude-suspected-label-errors``; ``None``: none were left out).
    """

    strategy: str
    requested_strategy: str
    reasons: list[str]
    best_epoch: int
    val_accuracy: float
    probe_val_accuracy: float
    history: list[dict[str, Any]]
    config: dict[str, Any]
    evidence: dict[str, Any] | None = None
    resumed_from: int | None = None
    images_per_second: float | None = None
    excluded_label_errors: int | None = None

    FILE = TRAINING_FILE
    STEP = "fine-tune"


def save_model(folder: Path, model: nn.Module, config: ModelConfig) -> None:
    """Write the classifier's weights and the config that rebuilds it (the config last)."""
    from safetensors.torch import save_file

    from tlops.models.checkpoint import classifier_state

    Path(folder).mkdir(parents=True, exist_ok=True)
    save_file(classifier_state(model), str(Path(folder) / WEIGHTS_FILE))
    config.write(folder)


def load_model(folder: Path) -> tuple[nn.Module, ModelConfig]:
    """Rebuild the classifier that :func:`save_model` wrote (no weights are downloaded).

    Raises:
        TlopsError: when ``folder`` is not a fine-tune output.
    """
    from safetensors.torch import load_file

    from tlops.models.checkpoint import rebuild_classifier

    config = ModelConfig.read(folder)
    if config.task == TEXT_CLASSIFICATION:
        return _load_text_model(folder, config), config
    if config.task == OBJECT_DETECTION:
        from tlops.models.detector_checkpoint import load_detector

        return load_detector(Path(folder))[0], config
    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise TlopsError(f"{folder} is not a fine-tune output (no {WEIGHTS_FILE}): run tlops fine-tune first")
    model = rebuild_classifier(
        config.backbone, config.preprocessing, len(config.classes), load_file(str(weights)), config.head_hidden
    )
    return model, config


def _load_text_model(folder: Path, config: ModelConfig) -> Any:
    """The text model a fine-tune step saved: the TF-IDF classifier, or the encoder with its head."""
    from safetensors.torch import load_file

    if config.backbone == TFIDF_BASELINE:
        from tlops.models.tfidf import TfidfClassifier

        return TfidfClassifier.load(Path(folder) / TFIDF_DIR)
    from tlops.models.text_model import load_encoder_text_model

    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise TlopsError(f"{folder} is not a fine-tune output (no {WEIGHTS_FILE}): run tlops fine-tune first")
    return load_encoder_text_model(config.backbone, load_file(str(weights)), len(config.classes), config.head_hidden)


# --- evaluate ----------------------------------------------------------------------------------------------------


@dataclass
class Evaluation(JsonRecord):
    """The challenger's metrics on the test split.

    Attributes:
        metrics: ``test_*`` metrics (accuracy, balanced accuracy, macro-F1, top-5, log loss, ECE, images).
        report: Per-class precision, recall, F1 and support.
        confusion: Confusion matrix, rows the true classes.
        classes: Class names.
        backbone: The model's backbone.
        strategy: The model's transfer strategy.
        calibration: Temperature scaling fitted on the validation split: ``temperature``, and the test
            split's ``ece``, ``log_loss`` and ``brier`` ``before`` and ``after`` it.
    """

    metrics: dict[str, float]
    report: dict[str, Any]
    confusion: list[list[int]]
    classes: list[str]
    backbone: str
    strategy: str
    calibration: dict[str, Any] = field(default_factory=dict)

    FILE = EVALUATION_FILE
    STEP = "evaluate"


@dataclass
class Comparison(JsonRecord):
    """The promotion gate's verdict: the challenger against the champion on the same test images.

    Attributes:
        promote: Whether the challenger may become the champion.
        champion_version: The champion the gate compared against; ``None`` when there was none.
        reasons: The numbers and reasons, one line each.
        challenger_accuracy: Test accuracy of the challenger (the rest are ``None`` without a comparison).
        champion_accuracy: Test accuracy of the champion.
        difference: Challenger minus champion accuracy.
        ci_low: Lower bound of the paired-bootstrap interval of the difference.
        ci_high: Upper bound of that interval.
        mcnemar_p: McNemar's exact p-value on the discordant pairs.
        challenger_only_correct: Images only the challenger gets right.
        champion_only_correct: Images only the champion gets right.
        worst_class: The class closest to (or furthest past) its allowed drop.
        worst_class_regression: Its recall drop, as a share of its test images.
        tracking_uri: The registry the gate looked in.
        model_name: The registered model whose champion it compared against.
        metric: The score compared (``accuracy`` or ``macro-f1``).
        challenger_score: The challenger's score.
        champion_score: The champion's score.
        worst_class_images_lost: Images of the worst class lost net.
        worst_class_images_allowed: Images that class may lose.
        challenger_ece: Expected calibration error of the challenger (calibrated).
        champion_ece: That of the champion as it is served.
        checks: Each check's outcome (``better``, ``significant``, ``classes``, ``calibration``).
        config: The gate's thresholds (:class:`~tlops.promotion.gate.GateConfig` as a dict).
    """

    promote: bool
    champion_version: int | None
    reasons: list[str]
    challenger_accuracy: float | None = None
    champion_accuracy: float | None = None
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    mcnemar_p: float | None = None
    challenger_only_correct: int | None = None
    champion_only_correct: int | None = None
    worst_class: str | None = None
    worst_class_regression: float | None = None
    tracking_uri: str | None = None
    model_name: str | None = None
    metric: str | None = None
    challenger_score: float | None = None
    champion_score: float | None = None
    worst_class_images_lost: int | None = None
    worst_class_images_allowed: int | None = None
    challenger_ece: float | None = None
    champion_ece: float | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    FILE = COMPARISON_FILE
    STEP = "evaluate"


def write_predictions(folder: Path, probabilities: np.ndarray, targets: np.ndarray) -> None:
    """Write the challenger's class probabilities and the true class ids of the test images."""
    import torch
    from safetensors.torch import save_file

    Path(folder).mkdir(parents=True, exist_ok=True)
    tensors = {"probabilities": torch.from_numpy(probabilities).contiguous(), "targets": torch.from_numpy(targets)}
    save_file(tensors, str(Path(folder) / PREDICTIONS_FILE))


def write_calibration_set(folder: Path, logits: np.ndarray, targets: np.ndarray) -> None:
    """Write held-out logits and class ids that calibrate the model in place of the validation split's.

    The fine-tune step writes them when the shipped head was refitted on train+val: its validation logits are then
    in-sample, and the out-of-fold logits of the cross-validation that chose it are the held-out ones.
    """
    import numpy
    import torch
    from safetensors.torch import save_file

    Path(folder).mkdir(parents=True, exist_ok=True)
    tensors = {"logits": torch.from_numpy(numpy.ascontiguousarray(logits)), "targets": torch.from_numpy(targets)}
    save_file(tensors, str(Path(folder) / CALIBRATION_SET_FILE))


def read_calibration_set(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The logits and class ids :func:`write_calibration_set` wrote, or ``None`` when the folder has none."""
    from safetensors.numpy import load_file

    path = Path(folder) / CALIBRATION_SET_FILE
    if not path.is_file():
        return None
    tensors = load_file(str(path))
    return tensors["logits"], tensors["targets"]


# --- register ----------------------------------------------------------------------------------------------------


@dataclass
class RunSummary(JsonRecord):
    """What a run produced: data, backbone, strategy, scores, and where the model is registered.

    Attributes:
        dataset: Source, layout, digest, classes, images per split, quarantined and duplicate counts.
        backbone: The backbone.
        strategy: The transfer strategy applied.
        strategy_reasons: Why.
        metrics: Test metrics and the validation accuracy.
        tracking_uri: The MLflow tracking URI.
        experiment: The MLflow experiment.
        run_id: The MLflow run.
        registered_model: The registered model name.
        version: The new model version.
        model_uri: ``models:/NAME/VERSION``.
        logged_model_uri: The logged model's URI.
        aliases: The aliases the new version holds.
        gate: The gate's ``promote``, ``champion_version``, ``reasons`` and ``thresholds``; ``None`` without a
            comparison.
        champion: The champion after registration: ``version`` (``None`` when there is none) and ``reason``, why
            it is that version (the gate's verdict, or that the champion moved after the gate ran).
        selection: The backbone ranking (candidates and the raw-pixel baseline), the reasons, and what the
            feature cache saved; ``None`` when no selection was given.
        calibration: The temperature the served model applies, why, and the test metrics before and after.
        tensor_model_uri: The same network as a ``pytorch`` flavour model taking preprocessed tensors.
        export: The export's outcome (``--export``): format, verdict, sizes and latencies, and where it is
            registered when accepted; ``None`` without an export.
        audit: The audit's counts, the training examples left out (``excluded``) and its one summary ``line``;
            ``None`` without an audit.
    """

    dataset: dict[str, Any]
    backbone: str
    strategy: str
    strategy_reasons: list[str]
    metrics: dict[str, float]
    tracking_uri: str
    experiment: str
    run_id: str
    registered_model: str
    version: int
    model_uri: str
    logged_model_uri: str
    aliases: list[str]
    gate: dict[str, Any] | None
    champion: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    tensor_model_uri: str = ""
    export: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None

    FILE = RUN_SUMMARY_FILE
    STEP = "register"
