"""One entry per pipeline step: its folders, the settings it reads, and the one call of its step function.

The CLI's step commands (``tlops prepare-data``, ``tlops fine-tune``, ...) are generated from :data:`STEPS`, and
each KFP component calls :meth:`StepEntry.run` with its artifacts' paths: both edges call the same function with
the same mapping of the run config onto it, written once here. A step's settings are the run-config paths it
reads (``train.*`` for a section), which give the command's flags and the component's setting inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.errors import TlopsError
from tlops.registry import Registry
from tlops.settings import SettingError
from tlops.steps.config import RunConfig, parameter_name
from tlops.tasks import detect_task

if TYPE_CHECKING:
    from tlops.io.storage import S3Client
    from tlops.steps.runtime import Runtime


@dataclass(frozen=True)
class Folder:
    """An input folder of a step (another step's output).

    Attributes:
        name: The option and component input (``dataset`` -> ``--dataset``).
        help: What it is.
        required: Whether the step needs it (an optional one changes what the step can do).
        s3: Whether the command accepts an ``s3://`` prefix for it (downloaded first).
    """

    name: str
    help: str
    required: bool = True
    s3: bool = False


@dataclass(frozen=True)
class Argument:
    """A value a step takes that is not a setting of the run (which candidate, which dataset, which server).

    Attributes:
        name: The option (``backbone`` -> ``--backbone``).
        help: What it is.
        default: Its default (``None``: required).
    """

    name: str
    help: str
    default: str | None = None


@dataclass
class StepCall:
    """What one run of a step gets from its edge (the CLI or a KFP component).

    Attributes:
        folders: Input folder name -> path (``None`` when an optional one is not given).
        output: The step's output folder (``None`` for register without ``--output``).
        config: The run's settings.
        arguments: Argument name -> value.
        make_runtime: Builds the device, workers, caches and S3 client (imports torch: only steps that need it call
            it).
        make_s3: Builds an S3 client (for the data step, which needs no torch).
        lineage: Where the run happens (KFP run id, image commit), for register.
        outputs: Output folders of a step with several (a KFP component's artifacts); the default is a subfolder
            of ``output`` per name.
        cache_dir: The runtime cache folder (``$TLOPS_CACHE_DIR``): prepare-data reuses the dataset the
            preflight of ``tlops run`` prepared there.
    """

    folders: dict[str, Path | None]
    output: Path | None
    config: RunConfig
    arguments: dict[str, Any] = field(default_factory=dict)
    make_runtime: Callable[[], Runtime] | None = None
    make_s3: Callable[[], S3Client] | None = None
    lineage: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    cache_dir: Path | None = None

    def output_folder(self, name: str) -> Path:
        """The output folder ``name`` of a step with several: given, or ``output/name``."""
        if name in self.outputs:
            return self.outputs[name]
        assert self.output is not None
        return self.output / name

    def runtime(self) -> Runtime:
        """The runtime, built by the edge's factory."""
        assert self.make_runtime is not None, "the edge gives a runtime factory"
        return self.make_runtime()


@dataclass(frozen=True)
class StepEntry:
    """A pipeline step as both edges see it.

    Attributes:
        name: The command and component name (``fine-tune``).
        help: One line for ``tlops --help``.
        settings: Run-config paths the step reads (``section.*`` for a whole section).
        folders: Its input folders.
        arguments: Its other inputs.
        output_help: What its ``--output`` folder gets.
        call: Calls the step function; returns its result.
        describe: The result as JSON-ready data (what the command prints).
    """

    name: str
    help: str
    settings: tuple[str, ...]
    folders: tuple[Folder, ...]
    arguments: tuple[Argument, ...]
    output_help: str
    call: Callable[[StepCall], Any]
    describe: Callable[[Any], Any]

    def run(self, call: StepCall) -> Any:
        """Run the step: the one call both edges make."""
        return self.call(call)


STEPS: Registry[StepEntry] = Registry("step", "tlops COMMAND")

DATASET = Folder("dataset", "the prepare-data output folder", s3=True)
SCORING_SETTINGS = (
    "seed",
    "selection.image_size",
    "selection.scoring_images_per_class",
    "storage.feature_cache",
    "train.class_weighted",
)


def _scoring(config: RunConfig) -> dict[str, Any]:
    """What scoring a candidate reads from the run config."""
    return {
        "image_size": config.selection.image_size,
        "feature_cache": config.storage.feature_cache,
        "scoring_images_per_class": config.selection.scoring_images_per_class,
        "class_weighted": config.train.class_weighted,
        "seed": config.seed,
    }


def _backbone(call: StepCall) -> str:
    """The one backbone a step runs: given, else the first of the run config's candidates (``""``: the task's)."""
    return call.arguments.get("backbone") or next(iter(call.config.selection.backbones), "")


def _prepare(call: StepCall) -> Any:
    from tlops.data.prepare import PreparedCache

    assert call.make_s3 is not None and call.output is not None
    cache = PreparedCache.in_cache_dir(call.cache_dir) if call.cache_dir is not None else None
    source = call.arguments["data"]
    s3 = call.make_s3() if source.startswith("s3://") else None
    task = detect_task(call.config.task, source, s3)
    return task.prepare(source, call.output, call.config.split, s3, cache, call.arguments.get("fingerprint"))


def _score(call: StepCall) -> Any:
    from tlops.steps.score_backbone import score_backbone

    assert call.output is not None
    dataset = call.folders["dataset"]
    return score_backbone(dataset, _backbone(call), call.output, call.runtime(), **_scoring(call.config))


def _select(call: StepCall) -> Any:
    from tlops.steps.select_backbone import select_backbone

    assert call.output is not None
    selection = call.config.selection
    return select_backbone(
        call.folders["dataset"],
        list(selection.backbones),
        call.output,
        call.runtime(),
        **_scoring(call.config),
        metric=selection.metric,
        max_params=selection.max_params,
        max_latency_ms=selection.max_latency_ms,
        ship_baseline=selection.ship_baseline,
        strategy=call.config.train.strategy,
    )


def _extract(call: StepCall) -> Any:
    from tlops.steps.extract_features import extract_and_probe

    scoring = _scoring(call.config)
    scoring.pop("scoring_images_per_class")
    return extract_and_probe(
        call.folders["dataset"],
        _backbone(call),
        call.output_folder("features"),
        call.output_folder("probe"),
        call.runtime(),
        **scoring,
    )


def _plan(call: StepCall) -> Any:
    from tlops.steps.extraction_plan import plan_extraction

    assert call.output is not None
    config = call.config
    return plan_extraction(
        call.folders["dataset"],
        list(config.selection.backbones),
        call.output,
        call.runtime(),
        image_size=config.selection.image_size,
        feature_cache=config.storage.feature_cache,
        shard_size=config.resources.extraction_shard_size,
    )


def _extract_shard(call: StepCall) -> Any:
    from tlops.steps.extraction_plan import extract_shard

    assert call.output is not None
    try:
        shard = int(call.arguments.get("shard") or 0)
    except ValueError:
        raise TlopsError(f"--shard must be a whole number, got {call.arguments['shard']!r}") from None
    return extract_shard(
        call.folders["dataset"],
        call.folders["plan"],
        _backbone(call),
        shard,
        call.output,
        call.runtime(),
        image_size=call.config.selection.image_size,
        feature_cache=call.config.storage.feature_cache,
    )


def _fine_tune(call: StepCall) -> Any:
    from tlops.steps.fine_tune import fine_tune_on_processes

    assert call.output is not None
    config = call.config.with_checkpoints_in(str(call.output))  # a re-run resumes from the output's checkpoint
    probe = call.folders["probe"]
    features = call.folders.get("features")
    if features is None and probe is not None and (Path(probe).parent / "features").is_dir():
        features = Path(probe).parent / "features"  # extract-features' output folder holds both
    return fine_tune_on_processes(
        call.folders["dataset"],
        probe,
        call.output,
        config,
        call.runtime(),
        features_dir=features,
        selection_dir=call.folders.get("selection"),
        audit_dir=call.folders.get("audit"),
    )


def _evaluate(call: StepCall) -> Any:
    from tlops.steps.evaluate import evaluate

    assert call.output is not None
    return evaluate(
        call.folders["dataset"],
        call.folders["model"],
        call.output,
        call.runtime(),
        tracking_uri=call.arguments["tracking_uri"],
        model_name=call.config.tracking.model_name,
        gate=call.config.gate,
    )


def _register(call: StepCall) -> Any:
    from tlops.steps.register import register

    tracking = replace(call.config.tracking, tracking_uri=call.arguments["tracking_uri"])
    return register(
        call.folders["dataset"],
        call.folders["model"],
        call.folders["evaluation"],
        tracking,
        output_dir=call.output,
        selection_dir=call.folders.get("selection"),
        audit_dir=call.folders.get("audit"),
        lineage=call.lineage,
        run_config=call.config.to_mapping(),
        export=call.config.export,
        runtime=call.runtime() if call.config.export.format != "none" else None,
    )


def _audit(call: StepCall) -> Any:
    from tlops.steps.audit import audit_dataset

    assert call.output is not None
    dataset, data = call.folders.get("dataset"), call.arguments.get("data")
    if (dataset is None) == (not data):
        raise TlopsError("tlops audit takes one of --data (a dataset to prepare first) or --dataset (a prepare-data "
                         "output)")  # fmt: skip
    if dataset is None:
        dataset = call.output / "data"
        _prepare(replace(call, output=dataset))
    return audit_dataset(
        dataset,
        call.output,
        call.runtime(),
        backbone_name=_backbone(call),
        features_dir=call.folders.get("features"),
        audit=call.config.audit,
        seed=call.config.seed,
        image_size=call.config.selection.image_size,
        feature_cache=call.config.storage.feature_cache,
    )


def _describe_prepared(result: Any) -> dict[str, Any]:
    return {
        "digest": result.digest,
        "classes": result.classes,
        "images": result.num_images,
        "quarantined": len(result.quarantined),
    }


AUDIT_SETTINGS = (
    "task",
    "seed",
    "split.*",
    "selection.image_size",
    "storage.feature_cache",
    "audit.method",
    "audit.duplicate_threshold",
    "audit.outlier_fraction",
)
TRACKING = Argument("tracking_uri", "MLflow tracking URI")
BACKBONE = Argument("backbone", "the backbone (empty: the task's own)", default="")

STEPS.add(
    "prepare-data",
    StepEntry(
        "prepare-data",
        "validate, split and write the manifest of a dataset",
        ("task", "seed", "split.*"),
        (),
        (Argument("data", "folder, s3://bucket/prefix, .zip/.tar(.gz) archive or .csv manifest"),),
        "folder for the manifest and report",
        _prepare,
        _describe_prepared,
    ),
)
STEPS.add(
    "score-backbone",
    StepEntry(
        "score-backbone",
        "extract one candidate's features (cached) and score them: probe, kNN, LogME, cost",
        SCORING_SETTINGS,
        (DATASET,),
        (
            Argument(
                "backbone", "the candidate, or the no-transfer baseline (pixels, tfidf); empty: the task's own", ""
            ),
        ),
        "folder for the score record",
        _score,
        lambda result: result.to_dict(),
    ),
)
STEPS.add(
    "select-backbone",
    StepEntry(
        "select-backbone",
        "score every candidate and the raw-pixel baseline on a prepared dataset, print the table, choose one",
        (*SCORING_SETTINGS, "selection.*", "train.strategy"),
        (DATASET,),
        (),
        "folder for the ranking table (selection.md), its record and each candidate's score (scores/)",
        _select,
        lambda result: result.ranking,
    ),
)
STEPS.add(
    "extract-features",
    StepEntry(
        "extract-features",
        "cache backbone features and fit the linear probe",
        ("seed", "selection.image_size", "storage.feature_cache", "train.class_weighted"),
        (DATASET,),
        (BACKBONE,),
        "gets features/ and probe/ subdirectories",
        _extract,
        lambda result: result.to_dict(),
    ),
)
STEPS.add(
    "plan-extraction",
    StepEntry(
        "plan-extraction",
        "look each candidate's per-image features up in the feature cache; cut the missing images into shards",
        ("selection.backbones", "selection.image_size", "storage.feature_cache", "resources.extraction_shard_size"),
        (DATASET,),
        (),
        "folder for the plan (extraction_plan.json)",
        _plan,
        lambda result: {"items": result.items(), "seconds": result.seconds},
    ),
)
STEPS.add(
    "extract-shard",
    StepEntry(
        "extract-shard",
        "extract one shard of the plan into the feature cache (one pod per shard on Kubeflow)",
        ("selection.image_size", "storage.feature_cache"),
        (DATASET, Folder("plan", "the plan-extraction output folder", s3=True)),
        (BACKBONE, Argument("shard", "the shard's number in the backbone's plan", "0")),
        "folder for the shard's record (extraction_shard.json; its features go to the feature cache)",
        _extract_shard,
        lambda result: result,
    ),
)
STEPS.add(
    "audit",
    StepEntry(
        "audit",
        "find likely label errors, near-duplicates and outliers from a backbone's cached features",
        AUDIT_SETTINGS,
        (
            Folder("dataset", "the prepare-data output folder (or give --data)", required=False, s3=True),
            Folder(
                "features",
                "the features/ folder of extract-features (default: from the feature cache)",
                required=False,
                s3=True,
            ),
        ),
        (Argument("data", "a dataset to prepare first: folder, s3://bucket/prefix, archive or table", ""), BACKBONE),
        "folder for audit.md, audit.json and the contact sheet of flagged images (label_issues.png)",
        _audit,
        lambda record: record.summary() | {"top_label_issues": record.label_issues[:5]},
    ),
)
STEPS.add(
    "fine-tune",
    StepEntry(
        "fine-tune",
        "train the classifier from the probe with a strategy",
        (
            "seed",
            "train.*",
            "storage.checkpoint_uri",
            "resources.processes_per_node",
            "audit.exclude_suspected_label_errors",
        ),
        (
            DATASET,
            Folder("probe", "the probe/ folder of extract-features", s3=True),
            Folder(
                "features",
                "the features/ folder of extract-features (mlp-probe needs it; default: beside --probe when present)",
                required=False,
                s3=True,
            ),
            Folder("selection", "the select-backbone output, whose table auto reads", required=False, s3=True),
            Folder(
                "audit",
                "the audit output (tlops audit), whose flagged training examples "
                "--exclude-suspected-label-errors leaves out",
                required=False,
                s3=True,
            ),
        ),
        (),
        "folder or s3:// prefix for the model and its training record",
        _fine_tune,
        lambda result: {k: v for k, v in result.to_dict().items() if k != "history"},
    ),
)
STEPS.add(
    "evaluate",
    StepEntry(
        "evaluate",
        "evaluate a trained model on the test split, then run the promotion gate against the champion",
        ("tracking.model_name", "gate.*"),
        (DATASET, Folder("model", "the fine-tune output folder")),
        (TRACKING,),
        "folder for metrics, plots, the gate",
        _evaluate,
        lambda result: result.evaluation.metrics,
    ),
)
STEPS.add(
    "register",
    StepEntry(
        "register",
        "log and register an evaluated model in MLflow, moving champion as the gate decided; export it if asked",
        ("tracking.*", "export.*"),
        (
            DATASET,
            Folder("model", "the fine-tune output folder"),
            Folder("evaluation", "the evaluate output folder"),
            Folder("selection", "the select-backbone output folder, logged with the run", required=False),
            Folder("audit", "the audit output folder, logged with the run and counted in the summary", required=False),
        ),
        (TRACKING,),
        "folder for the run summary (default: only printed)",
        _register,
        lambda result: result.to_dict(),
    ),
)


def call_step(
    name: str,
    config: RunConfig,
    environ: Mapping[str, str],
    *,
    folders: dict[str, Path | None] | None = None,
    output: Path | None = None,
    arguments: dict[str, Any] | None = None,
    outputs: dict[str, Path] | None = None,
    lineage: dict[str, str] | None = None,
) -> Any:
    """Run step ``name`` with ``config``, its runtime, S3 client, cache folder and archive limits from ``environ``.

    What both edges call: the CLI's step commands and (through :func:`run_step`) the KFP components.

    Args:
        name: The step (:data:`STEPS`).
        config: The run's settings.
        environ: The environment (device, workers, caches, S3 endpoint, archive limits).
        folders: Input folders (artifacts' paths on Kubeflow).
        output: The output folder.
        arguments: The step's other inputs (backbone, data URI, tracking URI).
        outputs: The output folders of a step with several.
        lineage: Where the run happens, for register.

    Returns:
        The step function's result.

    Raises:
        SettingError: for a setting the step finds wrong (each edge names it its way).
        TlopsError: as the step does.
    """
    from tlops.data.archives import ArchiveLimits
    from tlops.io.paths import cache_dir_from_environment

    if name == "prepare-data":
        config = replace(config, split=replace(config.split, archive_limits=ArchiveLimits.from_environment(environ)))

    def make_runtime() -> Runtime:
        from tlops.steps.runtime import runtime_from_environment

        return runtime_from_environment(environ)

    def make_s3() -> S3Client:
        from tlops.io.storage import make_s3_client

        return make_s3_client()

    call = StepCall(
        folders=folders or {},
        output=output,
        config=config,
        arguments=arguments or {},
        make_runtime=make_runtime,
        make_s3=make_s3,
        lineage=lineage or {},
        outputs=outputs or {},
        cache_dir=cache_dir_from_environment(environ),
    )
    return STEPS.get(name).run(call)


def run_step(
    name: str,
    parameters: Mapping[str, Any],
    environ: Mapping[str, str],
    **inputs: Any,
) -> Any:
    """Run step ``name`` as a KFP component does: :func:`call_step` with the settings read from its inputs.

    Args:
        name: The step (:data:`STEPS`).
        parameters: The component's inputs (its ``locals()``): the setting inputs among them are read
            (:func:`~tlops.steps.config.from_parameters`, naming a bad one as Kubeflow does).
        environ: The pod's environment.
        **inputs: ``folders``, ``output``, ``arguments``, ``outputs``, ``lineage`` as :func:`call_step` takes them.

    Returns:
        The step function's result.
    """
    from tlops.steps.config import from_parameters

    try:
        return call_step(name, from_parameters(dict(parameters)), environ, **inputs)
    except SettingError as error:  # a setting, named as Kubeflow users name it
        raise TlopsError("parameter " + error.render(parameter_name)) from None
