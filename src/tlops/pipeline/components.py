"""KFP components: each calls one core step function and maps the results onto typed artifacts.

No ``from __future__ import annotations`` here: KFP reads the annotations at decoration time. The function
bodies are shipped into the container as source, so every import sits inside them. Each body configures
logging first (:func:`tlops.io.logs.configure_logging`), so the steps' log lines reach the pod's log.

Settings: a component's setting inputs are the pipeline parameters of the run config
(:func:`tlops.steps.config.to_parameters`) it reads, each optional with the run config's default
(:func:`with_setting_defaults` writes the defaults into the component spec, so a user of components/*.yaml
restates none of them), and each body rebuilds its settings with :func:`tlops.steps.config.from_parameters`
(``from_parameters(locals())``, first thing), which checks them and names a bad one as Kubeflow users do.
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
    """Write the run config's default of each setting input into the component's spec (the YAML's defaults)."""
    defaults = parameter_defaults()
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
    seed: Optional[int] = None,
    split_settings: Optional[dict] = None,
):
    """Validate every image of a dataset (folder, s3://, archive or CSV manifest), split it, write the manifest.

    ``source_fingerprint`` (from fingerprint-data) is not read: as an input it keys the step's cache, so that a
    cached prepared dataset is reused only while the files behind ``data_uri`` are unchanged.
    """
    from tlops.steps.config import from_parameters

    settings = from_parameters(locals())
    import os
    import shutil
    from dataclasses import replace
    from pathlib import Path

    from tlops.data.archives import ArchiveLimits
    from tlops.data.prepare import prepare_data as run
    from tlops.io.logs import configure_logging
    from tlops.steps.outputs import REPORT_FILE
    from tlops.steps.runtime import runtime_from_environment

    configure_logging()
    runtime = runtime_from_environment(os.environ)
    split = replace(settings.split, archive_limits=ArchiveLimits.from_environment(os.environ))
    prepared = run(data_uri, Path(dataset.path), split, runtime.s3)
    dataset.metadata.update({"digest": prepared.digest, "classes": prepared.classes, **prepared.num_images})
    dataset.metadata["source_fingerprint"] = source_fingerprint
    shutil.copyfile(Path(dataset.path) / REPORT_FILE, report.path)


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def score_backbone(
    dataset: Input[Dataset],
    backbone: str,
    score: Output[Artifact],
    seed: Optional[int] = None,
    image_size: Optional[int] = None,
    feature_cache: Optional[str] = None,
    class_weighted: Optional[bool] = None,
    selection_settings: Optional[dict] = None,
):
    """Extract one candidate's features into the feature cache; score them (probe, kNN, LogME) and the cost."""
    from tlops.steps.config import from_parameters

    settings = from_parameters(locals())
    import os
    from pathlib import Path

    from tlops.io.logs import configure_logging
    from tlops.steps.runtime import runtime_from_environment
    from tlops.steps.score_backbone import score_backbone as run

    configure_logging()
    result = run(
        Path(dataset.path),
        backbone,
        Path(score.path),
        runtime_from_environment(os.environ),
        image_size=settings.selection.image_size,
        feature_cache=settings.storage.feature_cache,
        scoring_images_per_class=settings.selection.scoring_images_per_class,
        class_weighted=settings.train.class_weighted,
        seed=settings.seed,
    )
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
    """Score the no-transfer baseline (a linear probe on raw 32x32 pixels) like a candidate, on the CPU image."""
    from tlops.steps.config import from_parameters

    settings = from_parameters(locals())
    import os
    from pathlib import Path

    from tlops.io.logs import configure_logging
    from tlops.models.names import PIXELS_BASELINE
    from tlops.steps.runtime import runtime_from_environment
    from tlops.steps.score_backbone import score_backbone as run

    configure_logging()
    result = run(
        Path(dataset.path),
        PIXELS_BASELINE,
        Path(score.path),
        runtime_from_environment(os.environ),
        feature_cache=settings.storage.feature_cache,
        scoring_images_per_class=settings.selection.scoring_images_per_class,
        class_weighted=settings.train.class_weighted,
        seed=settings.seed,
    )
    score.metadata.update(result.to_dict())


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def select_backbone(
    scores: Input[list[Artifact]],
    selection: Output[Artifact],
    table: Output[Markdown],
    baseline: Optional[Input[Artifact]] = None,
    selection_settings: Optional[dict] = None,
) -> str:
    """Rank the scored candidates against the raw-pixel baseline within the budgets; return the chosen name."""
    from tlops.steps.config import from_parameters

    settings = from_parameters(locals()).selection
    import shutil
    from pathlib import Path

    from tlops.io.logs import configure_logging
    from tlops.steps.outputs import SELECTION_TABLE_FILE
    from tlops.steps.select_backbone import choose_backbone

    configure_logging()
    result = choose_backbone(
        [Path(item.path) for item in scores],
        Path(selection.path),
        baseline_dir=Path(baseline.path) if baseline is not None else None,
        metric=settings.metric,
        max_params=settings.max_params,
        max_latency_ms=settings.max_latency_ms,
    )
    selection.metadata.update({"chosen": result.chosen, "reasons": result.reasons})
    shutil.copyfile(Path(selection.path) / SELECTION_TABLE_FILE, table.path)
    return result.chosen


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def extract_features(
    dataset: Input[Dataset],
    backbone: str,
    features: Output[Dataset],
    probe: Output[Model],
    seed: Optional[int] = None,
    image_size: Optional[int] = None,
    feature_cache: Optional[str] = None,
    class_weighted: Optional[bool] = None,
):
    """Read the chosen backbone's features from the feature cache (one pass on a miss); fit a linear head."""
    from tlops.steps.config import from_parameters

    settings = from_parameters(locals())
    import os
    from pathlib import Path

    from tlops.io.logs import configure_logging
    from tlops.steps.extract_features import extract_and_probe
    from tlops.steps.runtime import runtime_from_environment

    configure_logging()
    summary = extract_and_probe(
        Path(dataset.path),
        backbone,
        Path(features.path),
        Path(probe.path),
        runtime_from_environment(os.environ),
        image_size=settings.selection.image_size,
        seed=settings.seed,
        class_weighted=settings.train.class_weighted,
        feature_cache=settings.storage.feature_cache,
    )
    probe.metadata.update(summary.to_dict())


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
) -> str:
    """Produce the classifier with the chosen transfer strategy (auto: decided and validated); return the strategy.

    ``features`` (mlp-probe and auto use them) and ``selection`` (auto reads its table) are optional. With
    ``processes_per_node`` > 1 the step runs under torchrun (DistributedDataParallel, one process per GPU), every
    process getting the whole config; ``checkpoint_uri`` (an ``s3://`` prefix) lets a retried pod resume.
    """
    from tlops.steps.config import from_parameters

    settings = from_parameters(locals())
    import html
    import os
    from pathlib import Path

    from tlops.evaluation.plots import html_page
    from tlops.io.logs import configure_logging
    from tlops.steps.fine_tune import fine_tune_on_processes as run
    from tlops.steps.runtime import runtime_from_environment

    configure_logging()
    training = run(
        Path(dataset.path),
        Path(probe.path),
        Path(model.path),
        settings,
        runtime_from_environment(os.environ),
        features_dir=Path(features.path) if features is not None else None,
        selection_dir=Path(selection.path) if selection is not None else None,
    )
    model.metadata.update({k: getattr(training, k) for k in ("strategy", "reasons", "best_epoch", "val_accuracy")})
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
    from tlops.steps.config import from_parameters

    settings = from_parameters(locals())
    import os
    from pathlib import Path

    from tlops.evaluation.plots import html_page
    from tlops.io.logs import configure_logging
    from tlops.steps.evaluate import evaluate as run
    from tlops.steps.gate_report import gate_report as report
    from tlops.steps.runtime import runtime_from_environment

    configure_logging()
    runtime = runtime_from_environment(os.environ)
    result, comparison = run(
        Path(dataset.path),
        Path(model.path),
        Path(evaluation.path),
        runtime,
        tracking_uri=tracking_uri,
        model_name=settings.tracking.model_name,
        gate=settings.gate,
    )
    evaluation.metadata.update({"promote": comparison.promote, "gate": comparison.reasons})
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
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
    kfp_run_id: str = "",
    kfp_run_name: str = "",
    kfp_pipeline_name: str = "",
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
    processes_per_node: Optional[int] = None,
) -> NamedTuple("Registered", [("version", int), ("model_uri", str)]):
    """Log the run to MLflow, register the model version as challenger (champion when the gate's verdict holds).

    Every setting of the run is an input (each optional, with its default), so the run's whole config is logged
    with it (``config/config.yaml``: ``tlops run --config`` repeats the run).
    """
    from tlops.steps.config import from_parameters

    settings = from_parameters(locals())
    import os
    from collections import namedtuple
    from dataclasses import replace
    from pathlib import Path

    from tlops.io.logs import configure_logging
    from tlops.steps.register import register as run

    configure_logging()
    summary = run(
        Path(dataset.path),
        Path(model.path),
        Path(evaluation.path),
        replace(settings.tracking, tracking_uri=tracking_uri),
        output_dir=Path(registration.path),
        selection_dir=Path(selection.path) if selection is not None else None,
        run_config=settings.to_mapping(),
        lineage={
            "kfp_run_id": kfp_run_id,
            "kfp_run_name": kfp_run_name,
            "kfp_pipeline_name": kfp_pipeline_name,
            "git_commit": os.environ.get("TLOPS_GIT_COMMIT", ""),  # baked into the images at build time
        },
    )
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
        extract_features,
        fine_tune,
        evaluate,
        register,
        record_pipeline_status,
    )
)
