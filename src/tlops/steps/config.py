"""The run config: every user setting of a tlops run, one tree of frozen dataclasses.

Each section is defined once, in the layer that uses it: the split in :class:`~tlops.data.config.SplitConfig`,
training in :class:`~tlops.train.config.TrainConfig`, the gate in :class:`~tlops.promotion.gate.GateConfig`, the
registry names in :class:`~tlops.promotion.config.RegistryConfig`; the sections only the steps read are here.
:class:`RunConfig` composes them. The edges derive everything from it: the CLI's flags (``tlops.cli.settings``),
``--config FILE.yaml`` and ``OUTPUT/config.yaml``, the pipeline's parameters and the components' inputs
(``tlops.pipeline.parameters``), and the torchrun worker's one JSON argument.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, replace
from typing import Any

from tlops.data.config import SplitConfig
from tlops.errors import TlopsError
from tlops.evaluation.audit import LABEL_ISSUE_METHODS
from tlops.promotion.config import RegistryConfig
from tlops.promotion.gate import GateConfig
from tlops.settings import (
    SettingError,
    Spec,
    check_ranges,
    default_of,
    from_mapping,
    section,
    setting,
    spec_of,
    to_mapping,
    walk,
)
from tlops.tasks import DETECT_TASK, TASKS
from tlops.train.config import TrainConfig

DEFAULT_BACKBONE = "efficientnet_lite0"
SELECTION_METRICS = ("probe", "knn", "logme")
EXPORT_FORMATS = ("none", "onnx", "int8")
QUANTIZATION_MODES = ("static", "dynamic")


@dataclass(frozen=True)
class SelectionConfig:
    """Which backbones are candidates and how they are ranked."""

    backbones: tuple[str, ...] = setting(
        (),
        "candidate backbones (encoders for text), comma-separated; more than one are ranked. Images: "
        "efficientnet_lite0/1/2 (bundled), timm:NAME, torchvision:NAME, hub:OWNER/REPO:ENTRY, NAME@s3://weights. "
        "Text: minilm (bundled all-MiniLM-L6-v2), a Hugging Face model folder or s3:// prefix, hf:NAME from the "
        "local Hugging Face cache. Empty: the task's own (efficientnet_lite0 for images, minilm for text)",
        parameter=True,
    )
    image_size: int = setting(
        0, "input size in pixels; 0: each backbone's own (kfp.local cannot take a None default)", minimum=0,
        parameter=True,
    )  # fmt: skip
    metric: str = setting(
        "probe",
        "score that ranks the candidates: probe (cross-validated linear-probe accuracy), knn (cross-validated "
        "cosine kNN accuracy) or logme; near-ties (within one standard error) go to the cheaper backbone",
        choices=SELECTION_METRICS,
        flag="selection-metric",
    )
    max_params: int = setting(0, "budget: largest backbone in parameters, e.g. 10000000 (0: no limit)", minimum=0)
    max_latency_ms: float = setting(
        0.0, "budget: slowest latency per image, measured on the run's device (0: no limit)", minimum=0
    )
    scoring_images_per_class: int = setting(
        0, "training images per class the selection scores use (0: all of them)", minimum=0
    )
    ship_baseline: bool = setting(
        True,
        "ship the no-transfer baseline (a linear head on the image downsampled to 32x32) when its cross-validated "
        "probe accuracy is above every backbone's (not with a strategy that fine-tunes a backbone)",
    )

    def __post_init__(self) -> None:
        """Check the ranges; the backbone names are checked where they are used (some need the network)."""
        check_ranges(self)


@dataclass(frozen=True)
class StorageConfig:
    """Where a run keeps what outlives a step."""

    feature_cache: str = setting(
        "",
        "where backbone features are cached, keyed by dataset digest, backbone, weights and preprocessing: a folder "
        "or s3://bucket/prefix (empty: features/ in $TLOPS_CACHE_DIR or ~/.cache/tlops; on a cluster give an s3:// "
        "prefix so that pods share it)",
        parameter=True,
    )
    checkpoint_uri: str = setting(
        "",
        "folder or s3:// prefix of the per-epoch checkpoint a restarted fine-tune resumes from (empty: "
        "OUTPUT/checkpoints for tlops run and fine-tune; none on Kubeflow unless given)",
        parameter=True,
    )


@dataclass(frozen=True)
class AuditConfig:
    """The data-quality audit (``tlops audit``): label errors, near-duplicates and outliers from cached features."""

    method: str = setting(
        "prune_by_noise_rate",
        "tlops audit: how confident learning flags label errors: prune_by_noise_rate (per given and true class, the "
        "calibrated confident joint's count of examples with the largest margin) or confident_joint (its "
        "off-diagonal examples)",
        choices=LABEL_ISSUE_METHODS,
        flag="audit-method",
    )
    duplicate_threshold: float = setting(
        0.98, "tlops audit: cosine similarity of features at or above which two examples are near-duplicates",
        minimum=0, maximum=1, open_min=True, flag="audit-duplicate-threshold",
    )  # fmt: skip
    outlier_fraction: float = setting(
        0.01, "tlops audit: share of examples flagged as outliers (largest mean cosine distance to their 10 nearest "
        "neighbours)", minimum=0, maximum=1, flag="audit-outlier-fraction",
    )  # fmt: skip
    exclude_suspected_label_errors: bool = setting(
        False,
        "train without the training examples the audit flags as likely label errors (the pipeline audits the "
        "chosen backbone's features after extract-features; validation and test examples are never dropped)",
        flag="exclude-suspected-label-errors",
        parameter=True,
    )

    def __post_init__(self) -> None:
        """Check the ranges."""
        check_ranges(self)


@dataclass(frozen=True)
class ExportConfig:
    """Whether the registered image classifier is also exported for serving, and how much accuracy it may lose."""

    format: str = setting(
        "none",
        "also export the registered image classifier: onnx (fp32 ONNX graph) or int8 (quantised with onnxruntime); "
        "registered as <model-name>-onnx or <model-name>-int8 only when its paired test-accuracy loss is within "
        "--export-margin (none: no export)",
        choices=EXPORT_FORMATS,
        flag="export",
    )
    margin: float = setting(
        0.01,
        "largest test-accuracy loss the export may have: refused when the 95% paired-bootstrap interval of "
        "(exported - fp32) accuracy reaches below -margin, e.g. 0.01 for one point",
        minimum=0,
        maximum=1,
    )
    quantization: str = setting(
        "static",
        "int8 quantisation: static (QDQ, per-channel, activations calibrated on training images) or dynamic "
        "(weights only, no calibration)",
        choices=QUANTIZATION_MODES,
    )
    calibration_images: int = setting(
        256, "training images static int8 quantisation calibrates on (never test images)", minimum=1
    )

    def __post_init__(self) -> None:
        """Check the ranges."""
        check_ranges(self)


@dataclass(frozen=True)
class ResourcesConfig:
    """Where the GPU steps run on Kubernetes (kfp.local ignores these), and how many processes train."""

    processes_per_node: int = setting(
        1,
        "fine-tuning processes in the fine-tune pod (DistributedDataParallel under torchrun, one per GPU)",
        minimum=1,
        parameter=True,
    )
    extraction_shard_size: int = setting(
        10000,
        "images per feature-extraction pod on Kubeflow: the images without cached features are cut into shards of "
        "this many, extracted in parallel pods that write the feature cache (small data: one shard)",
        minimum=1,
        parameter=True,
    )
    gpu_accelerator_type: str = setting(
        "nvidia.com/gpu", "accelerator resource the GPU steps ask for (the nodes' extended resource)", parameter=True
    )
    gpu_count: int = setting(1, "accelerators each GPU step asks for", minimum=0, parameter=True)
    gpu_node_selector: dict[str, str] = setting(
        {},
        "node labels the GPU steps' pods must match, as JSON, e.g. '{\"cloud.google.com/gke-accelerator\": "
        '"nvidia-l4"}\' (empty: any node with the accelerator)',
        parameter=True,
    )
    gpu_tolerations: list[dict[str, str]] = setting(
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "Kubernetes tolerations of the GPU steps' pods as a JSON list (default: tolerate the nvidia.com/gpu taint "
        "GPU node pools usually carry)",
        parameter=True,
    )
    gpu_cpu_request: str = setting("4", "CPU request of each GPU step", parameter=True)
    gpu_cpu_limit: str = setting("8", "CPU limit of each GPU step (its data loaders' workers run on these)",
                                 parameter=True)  # fmt: skip
    gpu_memory_request: str = setting("16G", "memory request of each GPU step", parameter=True)
    gpu_memory_limit: str = setting(
        "32G", "memory limit of each GPU step (the /dev/shm mount counts against it)", parameter=True
    )

    def __post_init__(self) -> None:
        """Check the ranges."""
        check_ranges(self)


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run. ``seed`` is copied into the sections that draw random numbers.

    Build one with :meth:`from_mapping` (a ``--config`` file, a JSON document, KFP parameters) or as a
    dataclass; :meth:`to_mapping` gives the plain data a config file holds.
    """

    task: str = setting(
        DETECT_TASK,
        "what the model does with its input: auto (recognised from the data); "
        + "; ".join(f"{name}: {task.summary}" for name, task in TASKS),
        choices=(DETECT_TASK, *TASKS.names()),
        parameter=True,
    )
    seed: int = setting(0, "seed of the split, sampling and training", parameter=True)
    split: SplitConfig = section(SplitConfig)
    selection: SelectionConfig = section(SelectionConfig)
    train: TrainConfig = section(TrainConfig)
    gate: GateConfig = section(GateConfig)
    tracking: RegistryConfig = section(RegistryConfig)
    storage: StorageConfig = section(StorageConfig)
    audit: AuditConfig = section(AuditConfig)
    export: ExportConfig = section(ExportConfig)
    resources: ResourcesConfig = section(ResourcesConfig)

    def __post_init__(self) -> None:
        """Check the task; copy the run's seed into the sections that use it."""
        check_ranges(self)
        object.__setattr__(self, "split", replace(self.split, seed=self.seed))
        object.__setattr__(self, "train", replace(self.train, seed=self.seed))

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any]) -> RunConfig:
        """A run config from nested plain data (missing settings default).

        Raises:
            SettingError: naming an unknown setting or a value of the wrong type or range by its path.
        """
        return from_mapping(cls, mapping)

    def with_checkpoints_in(self, folder: str) -> RunConfig:
        """This config with ``storage.checkpoint_uri`` set to ``folder/checkpoints`` unless one was given.

        A fine-tune step killed and started again with the same command resumes from there.
        """
        if self.storage.checkpoint_uri:
            return self
        uri = f"{str(folder).rstrip('/')}/checkpoints"
        return replace(self, storage=replace(self.storage, checkpoint_uri=uri))

    def to_mapping(self) -> dict[str, Any]:
        """The settings as nested plain data (what ``OUTPUT/config.yaml`` holds)."""
        return to_mapping(self)

    def to_json(self) -> str:
        """The whole config as one JSON document (the torchrun worker's argument)."""
        return json.dumps(self.to_mapping(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """The inverse of :meth:`to_json`.

        Raises:
            TlopsError: when the text is not a JSON object of settings.
        """
        try:
            return cls.from_mapping(json.loads(text))
        except json.JSONDecodeError as error:
            raise TlopsError(f"the run config is not JSON ({error.msg})") from None


# --- How the edges name each setting ---------------------------------------------------------------------------

FLAG_PREFIXES = {"gate": "gate-", "export": "export-"}
"""Sections whose CLI flags carry a prefix (``--gate-margin``)."""
SETTINGS_SUFFIX = "_settings"
"""A section's rarely changed settings travel in one dict parameter, ``<section>_settings``, on Kubeflow."""


@dataclass(frozen=True)
class Leaf:
    """One setting of the run config and the names the edges give it.

    Attributes:
        path: Dotted path in the run config (``gate.margin``).
        field: The dataclass field (default, metadata).
        type: The resolved annotation.
        spec: What the field declares (:class:`~tlops.settings.Spec`).
    """

    path: str
    field: dataclasses.Field
    type: Any
    spec: Spec

    @property
    def section(self) -> str:
        """The section's name (``""`` for a top-level setting such as ``seed``)."""
        return self.path.rpartition(".")[0]

    @property
    def name(self) -> str:
        """The field's name."""
        return self.path.rpartition(".")[2]

    @property
    def default(self) -> Any:
        """The default value (tuples as lists, as the edges show them)."""
        value = default_of(self.field)
        return list(value) if isinstance(value, tuple) else value

    @property
    def flag(self) -> str:
        """The CLI flag (``--lr``, ``--gate-margin``)."""
        return "--" + (self.spec.flag or FLAG_PREFIXES.get(self.section, "") + self.name.replace("_", "-"))

    @property
    def parameter(self) -> str:
        """The pipeline parameter holding it: its own name, or its section's dict parameter."""
        return self.name if self.spec.parameter or not self.section else self.section + SETTINGS_SUFFIX

    @property
    def parameter_label(self) -> str:
        """How Kubeflow users name it: ``epochs``, or ``gate_settings.margin`` inside a dict parameter."""
        return self.parameter if self.parameter == self.name else f"{self.parameter}.{self.name}"


def leaves() -> list[Leaf]:
    """Every user setting of :class:`RunConfig`, in declaration order (flags and parameter names unique)."""
    result = [Leaf(path, item, kind, spec_of(item)) for path, item, kind, _ in walk(RunConfig)]
    for attribute in ("flag", "parameter_label"):
        names = [getattr(leaf, attribute) for leaf in result]
        assert len(names) == len(set(names)), f"duplicate {attribute}: {sorted(names)}"
    return result


def cli_name(path: str) -> str:
    """How the command line names the setting at ``path`` (its flag; a path that is no setting as it is)."""
    return next((item.flag for item in leaves() if item.path == path), path)


def parameter_name(path: str) -> str:
    """How Kubeflow names the setting at ``path`` (a parameter, or ``<section>_settings.<name>``)."""
    return next((item.parameter_label for item in leaves() if item.path == path), path)


def to_parameters(config: RunConfig) -> dict[str, Any]:
    """The pipeline parameters (and component inputs) that carry ``config``: named ones and one dict per section."""
    mapping = config.to_mapping()
    parameters: dict[str, Any] = {}
    for item in leaves():
        value = mapping
        for part in item.path.split("."):
            value = value[part]
        if item.parameter == item.name:
            parameters[item.name] = value
        else:
            parameters.setdefault(item.parameter, {})[item.name] = value
    return parameters


def parameter_defaults() -> dict[str, Any]:
    """Each pipeline parameter's default (the run config's defaults, as :func:`to_parameters` lays them out)."""
    return to_parameters(RunConfig())


def from_parameters(parameters: dict[str, Any]) -> RunConfig:
    """The run config from pipeline parameters or component inputs (any subset; ``None`` or missing: the default).

    Raises:
        TlopsError: for an unknown key in a dict parameter or a value out of range, naming it as Kubeflow does
            (``epochs``, ``gate_settings.margin``).
    """
    by_parameter: dict[str, list[Leaf]] = {}
    for item in leaves():
        by_parameter.setdefault(item.parameter, []).append(item)
    mapping: dict[str, Any] = {}
    try:
        for name, value in parameters.items():
            if value is None or name not in by_parameter:
                continue
            if name.endswith(SETTINGS_SUFFIX) and name != by_parameter[name][0].name:
                section = name.removesuffix(SETTINGS_SUFFIX)
                if not isinstance(value, dict):
                    raise TlopsError(f"parameter {name} must be a dict of settings, got {value!r}")
                known = {item.name for item in by_parameter[name]}
                for key in value:
                    if key not in known:
                        close = difflib.get_close_matches(str(key), sorted(known), n=3)
                        hint = f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(sorted(known))}"
                        raise TlopsError(f"parameter {name}: unknown setting {key!r}; {hint}")
                mapping.setdefault(section, {}).update(value)
            else:
                item = by_parameter[name][0]
                target = mapping
                for part in item.path.split(".")[:-1]:
                    target = target.setdefault(part, {})
                target[item.name] = value
        return RunConfig.from_mapping(mapping)
    except SettingError as error:
        raise TlopsError("parameter " + error.render(parameter_name)) from None
