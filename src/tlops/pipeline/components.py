"""KFP components: each calls one core step function and maps the results onto typed artifacts.

No ``from __future__ import annotations`` here: KFP reads the annotations at decoration time. The function
bodies are shipped into the container as source, so every import sits inside them. Each body configures
logging first (:func:`tlops.io.logs.configure_logging`), so the steps' log lines reach the pod's log.

Each body calls its step through :func:`tlops.steps.entries.run_step`, the entry the CLI's step command calls too,
handing it its inputs (``dict(locals())``, first thing) and mapping the result onto its output artifacts.
Settings: a component's setting inputs are the pipeline parameters of the run config
(:func:`tlops.steps.config.to_parameters`) its step reads, each optional with the run config's default
(:func:`with_setting_defaults` writes the defaults into the component spec, so a user of components/*.yaml
restates none of them); ``run_step`` rebuilds the settings from them, checking each and naming a bad one as
Kubeflow users do (``gate_settings.margin``).
"""

from typing import NamedTuple, Optional

from kfp import dsl
from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
    PipelineTaskFinalStatus,
)
from kfp.dsl.base_component import BaseComponent

from tlops.pipeline.image import CPU_IMAGE, GPU_IMAGE
from tlops.steps.config import parameter_defaults


def with_setting_defaults(component: BaseComponent) -> BaseComponent:
    """Write the run config's default of each setting input into the component's spec (the YAML's defaults).

    A ``backbone`` input (one candidate) defaults to the first of the default ``backbones`` (empty: the task's own).
    """
    defaults = parameter_defaults()
    defaults["backbone"] = next(iter(defaults["backbones"]), "")
    for name, spec in (component.component_spec.inputs or {}).items():
        if name in defaults:
            spec.default = defaults[name]
    return component


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare_data(
    data_uri: str,
    dataset: Output[Dataset],
    report: Output[Markdown],
    source_fingerprint: str = "",
    task: Optional[str] = None,
    seed: Optional[int] = None,
    split_settings: Optional[dict] = None,
    backbones: Optional[list] = None,
) -> NamedTuple("Prepared", [("candidates", list), ("task", str)]):
    """Validate every example of a dataset (images or texts: folder, s3://, archive, table); split it, write it.

    ``source_fingerprint`` (from fingerprint-data) keys the step's cache, so that a cached prepared dataset is
    reused only while the files behind ``data_uri`` are unchanged, and the prepared-dataset cache in the runtime
    cache dir: an entry that ``tlops run``'s preflight wrote is copied, no image decoded again. Returns the
    candidates to score (``backbones``, or the recognised task's own when empty) and the task.
    """
    inputs = dict(locals())
    import os
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from tlops.io.logs import configure_logging
    from tlops.steps.entries import run_step
    from tlops.steps.outputs import REPORT_FILE
    from tlops.tasks import task_of

    configure_logging()
    folder = Path(dataset.path)
    arguments = {"data": data_uri, "fingerprint": source_fingerprint or None}
    prepared = run_step("prepare-data", inputs, os.environ, output=folder, arguments=arguments)
    dataset.metadata.update({"digest": prepared.digest, "classes": prepared.classes, **prepared.num_images})
    dataset.metadata["source_fingerprint"] = source_fingerprint
    shutil.copyfile(folder / REPORT_FILE, report.path)
    recognised = task_of(prepared.task)
    candidates = list(backbones or []) or list(recognised.default_backbones)
    return namedtuple("Prepared", ["candidates", "task"])(candidates, recognised.name)


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def score_backbone(
    dataset: Input[Dataset],
    score: Output[Artifact],
    backbone: Optional[str] = None,
    seed: Optional[int] = None,
    image_size: Optional[int] = None,
    feature_cache: Optional[str] = None,
    class_weighted: Optional[bool] = None,
    selection_settings: Optional[dict] = None,
):
    """Extract one candidate's features into the feature cache; score them (probe, kNN, LogME) and the cost."""
    inputs = dict(locals())
    import os
    from pathlib import Path

    from tlops.io.logs import configure_logging
    from tlops.steps.entries import run_step

    configure_logging()
    result = run_step(
        "score-backbone", inputs, os.environ, folders={"dataset": Path(dataset.path)}, output=Path(score.path),
        arguments={"backbone": backbone},
    )  # fmt: skip
    score.metadata.update(result.to_dict())


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def score_baseline(
    dataset: Input[Dataset],
    score: Output[Artifact],
    seed: Optional[int] = None,
    feature_cache: Optional[str] = None,
    class_weighted: Optional[bool] = None,
    selection_settings: Optional[dict] = None,
):
    """Score the task's no-transfer baseline (raw 32x32 pixels; char n-gram TF-IDF for text) on the CPU image."""
    inputs = dict(locals())
    import os
    from pathlib import Path

    from tlops.data.prepared import PreparedData
    from tlops.io.logs import configure_logging
    from tlops.steps.entries import run_step
    from tlops.tasks import task_of

    configure_logging()
    baseline = task_of(PreparedData.read(Path(dataset.path)).task).baseline
    result = run_step(
        "score-backbone", inputs, os.environ, folders={"dataset": Path(dataset.path)}, output=Path(score.path),
        arguments={"backbone": baseline},
    )  # fmt: skip
    score.metadata.update(result.to_dict())


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def select_backbone(
    scores: Input[list[Artifact]],
    selection: Output[Artifact],
    table: Output[Markdown],
    baseline: Optional[Input[Artifact]] = None,
    strategy: Optional[str] = None,
    selection_settings: Optional[dict] = None,
) -> str:
    """Rank the scored candidates against the raw-pixel baseline within the budgets; return the chosen name."""
    inputs = dict(locals())
    import shutil
    from pathlib import Path

    from tlops.errors import TlopsError
    from tlops.io.logs import configure_logging
    from tlops.settings import SettingError
    from tlops.steps.config import from_parameters, parameter_name
    from tlops.steps.outputs import SELECTION_TABLE_FILE
    from tlops.steps.select_backbone import choose_backbone

    configure_logging()
    config = from_parameters(inputs)
    settings = config.selection
    try:
        result = choose_backbone(
            [Path(item.path) for item in scores],
            Path(selection.path),
            baseline_dir=Path(baseline.path) if baseline is not None else None,
            metric=settings.metric,
            max_params=settings.max_params,
            max_latency_ms=settings.max_latency_ms,
            ship_baseline=settings.ship_baseline,
            strategy=config.train.strategy,
        )
    except SettingError as error:  # a budget no candidate fits: named as the pipeline's parameter
        raise TlopsError("parameter " + error.render(parameter_name)) from None
    selection.metadata.update({"chosen": result.chosen, "reasons": result.reasons})
    shutil.copyfile(Path(selection.path) / SELECTION_TABLE_FILE, table.path)
    return result.chosen


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def extract_features(
    dataset: Input[Dataset],
    features: Output[Dataset],
    probe: Output[Model],
    backbone: Optional[str] = None,
    seed: Optional[int] = None,
    image_size: Optional[int] = None,
    feature_cache: Optional[str] = None,
    class_weighted: Optional[bool] = None,
):
    """Read the chosen backbone's features from the feature cache (one pass on a miss); fit a linear head."""
    inputs = dict(locals())
    import os
    from pathlib import Path

    from tlops.io.logs import configure_logging
    from tlops.steps.entries import run_step

    configure_logging()
    summary = run_step(
        "extract-features", inputs, os.environ, folders={"dataset": Path(dataset.path)},
        arguments={"backbone": backbone}, outputs={"features": Path(features.path), "probe": Path(probe.path)},
    )  # fmt: skip
    probe.metadata.update(summary.to_dict())


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def plan_extraction(
    dataset: Input[Dataset],
    plan: Output[Artifact],
    backbones: Optional[list] = None,
    image_size: Optional[int] = None,
    feature_cache: Optional[str] = None,
    extraction_shard_size: Optional[int] = None,
) -> list:
    """Look each candidate's per-image features up in the feature cache; return the shards of the missing images."""
    inputs = dict(locals())
    import os
    from pathlib import Path

    from tlops.io.logs import configure_logging
    from tlops.steps.entries import run_step

    configure_logging()
    result = run_step("plan-extraction", inputs, os.environ, folders={"dataset": Path(dataset.path)},
                      output=Path(plan.path))  # fmt: skip
    plan.metadata.update({"shards": len(result.items()), "seconds": result.seconds})
    return result.items()


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def extract_shard(
    dataset: Input[Dataset],
    plan: Input[Artifact],
    record: Output[Artifact],
    shard: Optional[dict] = None,
    image_size: Optional[int] = None,
    feature_cache: Optional[str] = None,
):
    """Extract one shard of the plan (``{"backbone", "shard", "images"}``) into the feature cache as packs."""
    inputs = dict(locals())
    import os
    from pathlib import Path

    from tlops.io.logs import configure_logging
    from tlops.steps.entries import run_step

    configure_logging()
    shard = shard or {"backbone": "", "shard": 0}  # one item of plan-extraction's list (default: the first shard)
    result = run_step(
        "extract-shard", inputs, os.environ, folders={"dataset": Path(dataset.path), "plan": Path(plan.path)},
        output=Path(record.path), arguments={"backbone": shard["backbone"], "shard": str(int(shard["shard"]))},
    )  # fmt: skip
    record.metadata.update(result)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def audit(
    audit: Output[Artifact],
    report: Output[Markdown],
    dataset: Optional[Input[Dataset]] = None,
    features: Optional[Input[Dataset]] = None,
    data_uri: str = "",
    backbone: Optional[str] = None,
    task: Optional[str] = None,
    seed: Optional[int] = None,
    split_settings: Optional[dict] = None,
    image_size: Optional[int] = None,
    feature_cache: Optional[str] = None,
    audit_settings: Optional[dict] = None,
):
    """Find likely label errors (confident learning), near-duplicates and outliers from cached features.

    Reads a prepare-data output (``dataset``) or prepares ``data_uri`` first; ``features`` (extract-features') saves
    reading the feature cache. ``report`` shows the ranked tables in the KFP UI; ``audit`` holds them with the
    contact sheet of flagged images.
    """
    inputs = dict(locals())
    import os
    import shutil
    from pathlib import Path

    from tlops.io.logs import configure_logging
    from tlops.steps.audit_report import AUDIT_REPORT_FILE
    from tlops.steps.entries import run_step

    configure_logging()
    folders = {
        "dataset": Path(dataset.path) if dataset else None,
        "features": Path(features.path) if features else None,
    }
    record = run_step(
        "audit", inputs, os.environ, folders=folders, output=Path(audit.path),
        arguments={"backbone": backbone, "data": data_uri},
    )  # fmt: skip
    audit.metadata.update(record.summary())
    shutil.copyfile(Path(audit.path) / AUDIT_REPORT_FILE, report.path)


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def fine_tune(
    dataset: Input[Dataset],
    probe: Input[Model],
    model: Output[Model],
    learning_curves: Output[HTML],
    features: Optional[Input[Dataset]] = None,
    selection: Optional[Input[Artifact]] = None,
    seed: Optional[int] = None,
    strategy: Optional[str] = None,
    epochs: Optional[int] = None,
    class_weighted: Optional[bool] = None,
    train_settings: Optional[dict] = None,
    checkpoint_uri: Optional[str] = None,
    processes_per_node: Optional[int] = None,
    audit: Optional[Input[Artifact]] = None,
    exclude_suspected_label_errors: Optional[bool] = None,
) -> str:
    """Produce the classifier with the chosen transfer strategy (auto: decided and validated); return the strategy.

    ``features`` (mlp-probe and auto use them) and ``selection`` (auto reads its table) are optional; with
    ``exclude_suspected_label_errors`` the training examples ``audit`` flags are left out. With
    ``processes_per_node`` > 1 the step runs under torchrun (DistributedDataParallel, one process per GPU), every
    process getting the whole config; ``checkpoint_uri`` (an ``s3://`` prefix) lets a retried pod resume.
    """
    inputs = dict(locals())
    import html
    import os
    from pathlib import Path

    from tlops.evaluation.plots import html_page
    from tlops.io.logs import configure_logging
    from tlops.steps.entries import run_step

    configure_logging()
    folders = {"dataset": Path(dataset.path), "probe": Path(probe.path)}
    given = (("features", features), ("selection", selection), ("audit", audit))
    folders |= {name: Path(artifact.path) for name, artifact in given if artifact is not None}
    training = run_step("fine-tune", inputs, os.environ, folders=folders, output=Path(model.path))
    kept = ("strategy", "reasons", "best_epoch", "val_accuracy", "excluded_label_errors")
    model.metadata.update({k: getattr(training, k) for k in kept})
    curves = sorted(Path(model.path).glob("*.png"))
    Path(learning_curves.path).write_text(
        html_page("Training", curves, "<p>" + "<br>".join(map(html.escape, training.reasons)) + "</p>")
    )
    return training.strategy


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    dataset: Input[Dataset],
    model: Input[Model],
    tracking_uri: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    plots: Output[HTML],
    gate_report: Output[Markdown],
    model_name: Optional[str] = None,
    gate_settings: Optional[dict] = None,
):
    """Evaluate on the test split (calibrated), then compare with the registered champion on the same images."""
    inputs = dict(locals())
    import os
    from pathlib import Path

    from tlops.evaluation.plots import html_page
    from tlops.io.logs import configure_logging
    from tlops.steps.entries import run_step
    from tlops.steps.gate_report import gate_report as report

    configure_logging()
    result, comparison = run_step(
        "evaluate", inputs, os.environ, folders={"dataset": Path(dataset.path), "model": Path(model.path)},
        output=Path(evaluation.path), arguments={"tracking_uri": tracking_uri},
    )  # fmt: skip
    evaluation.metadata.update({"promote": comparison.promote, "gate": comparison.reasons})
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    if result.confusion:  # a detector has none: its plots are precision-recall curves and examples
        confusion.log_confusion_matrix(result.classes, result.confusion)
    Path(plots.path).write_text(html_page("Evaluation", sorted(Path(evaluation.path).glob("*.png"))))
    Path(gate_report.path).write_text(report(comparison))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register(
    dataset: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Artifact],
    tracking_uri: str,
    registration: Output[Artifact],
    selection: Optional[Input[Artifact]] = None,
    audit: Optional[Input[Artifact]] = None,
    kfp_run_id: str = "",
    kfp_run_name: str = "",
    kfp_pipeline_name: str = "",
    task: Optional[str] = None,
    seed: Optional[int] = None,
    split_settings: Optional[dict] = None,
    backbones: Optional[list] = None,
    image_size: Optional[int] = None,
    selection_settings: Optional[dict] = None,
    strategy: Optional[str] = None,
    epochs: Optional[int] = None,
    train_settings: Optional[dict] = None,
    class_weighted: Optional[bool] = None,
    gate_settings: Optional[dict] = None,
    experiment: Optional[str] = None,
    model_name: Optional[str] = None,
    feature_cache: Optional[str] = None,
    checkpoint_uri: Optional[str] = None,
    audit_settings: Optional[dict] = None,
    exclude_suspected_label_errors: Optional[bool] = None,
    processes_per_node: Optional[int] = None,
    extraction_shard_size: Optional[int] = None,
    export_settings: Optional[dict] = None,
) -> NamedTuple("Registered", [("version", int), ("model_uri", str)]):
    """Log the run to MLflow, register the model version as challenger (champion when the gate's verdict holds).

    Every setting of the run is an input (each optional, with its default), so the run's whole config is logged
    with it (``config/config.yaml``: ``tlops run --config`` repeats the run). ``audit`` (optional) is logged with
    its counts.
    """
    inputs = dict(locals())
    import os
    from collections import namedtuple
    from pathlib import Path

    from tlops.io.logs import configure_logging
    from tlops.steps.entries import run_step

    configure_logging()
    folders = {"dataset": Path(dataset.path), "model": Path(model.path), "evaluation": Path(evaluation.path)}
    folders["selection"] = Path(selection.path) if selection is not None else None
    folders["audit"] = Path(audit.path) if audit is not None else None
    lineage = {"kfp_run_id": kfp_run_id, "kfp_run_name": kfp_run_name, "kfp_pipeline_name": kfp_pipeline_name}
    lineage["git_commit"] = os.environ.get("TLOPS_GIT_COMMIT", "")  # baked into the images at build time
    summary = run_step(
        "register", inputs, os.environ, folders=folders, output=Path(registration.path),
        arguments={"tracking_uri": tracking_uri}, lineage=lineage,
    )  # fmt: skip
    registration.metadata.update(
        {"version": summary.version, "model_uri": summary.model_uri, "aliases": summary.aliases}
        | {"champion": summary.champion}
    )
    return namedtuple("Registered", ["version", "model_uri"])(summary.version, summary.model_uri)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def fingerprint_data(data_uri: str) -> str:
    """List the dataset source and return its fingerprint (files, sizes, ETags or modification times); never cached."""
    from tlops.data.fingerprint import source_fingerprint
    from tlops.io.logs import configure_logging
    from tlops.io.storage import make_s3_client

    configure_logging()
    return source_fingerprint(data_uri, make_s3_client() if data_uri.startswith("s3://") else None)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def record_pipeline_status(
    status: PipelineTaskFinalStatus,
    tracking_uri: str,
    experiment: Optional[str] = None,
    kfp_run_id: str = "",
    kfp_run_name: str = "",
):
    """Exit handler: when the pipeline did not succeed, mark its MLflow run FAILED (or create one) with its error."""
    from tlops.io.logs import configure_logging

    configure_logging()
    if status.state == "SUCCEEDED":
        return  # before importing MLflow: a successful run's exit handler takes a fraction of a second
    from tlops.promotion.failures import PipelineOutcome
    from tlops.steps.config import from_parameters
    from tlops.steps.pipeline_status import record_pipeline_status as run

    outcome = PipelineOutcome(status.state, kfp_run_id, kfp_run_name, status.error_message or "")
    run(tracking_uri, from_parameters({"experiment": experiment}).tracking.experiment, outcome)


ALL_COMPONENTS = tuple(
    with_setting_defaults(component)
    for component in (
        fingerprint_data,
        prepare_data,
        score_backbone,
        score_baseline,
        select_backbone,
        plan_extraction,
        extract_shard,
        extract_features,
        audit,
        fine_tune,
        evaluate,
        register,
        record_pipeline_status,
    )
)
