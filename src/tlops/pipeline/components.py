"""KFP components: each imports the core step, calls it, and maps the results onto typed artifacts.

No ``from __future__ import annotations`` here: KFP reads the annotations at decoration time. The function
bodies are shipped into the container as source, so every import sits inside them. Each body configures
logging first (:func:`tlops.io.logs.configure_logging`), so the steps' log lines reach the pod's log.
"""

from typing import NamedTuple

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

from tlops.pipeline.image import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare_data(
    data_uri: str,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    dataset: Output[Dataset],
    report: Output[Markdown],
    source_fingerprint: str = "",
):
    """Validate every image of a dataset (folder, s3://, archive or CSV manifest), split it, write the manifest.

    ``source_fingerprint`` (from fingerprint-data) keys the step's cache, so that a cached prepared dataset is
    reused only while the files behind ``data_uri`` are unchanged, and the prepared-dataset cache in the runtime
    cache dir: an entry that ``tlops run``'s preflight wrote is copied, no image decoded again.
    """
    import os
    import shutil
    from pathlib import Path

    from tlops.data.archives import ArchiveLimits
    from tlops.data.prepare import PreparedCache, SplitConfig
    from tlops.data.prepare import prepare_data as run
    from tlops.io.logs import configure_logging
    from tlops.steps.outputs import REPORT_FILE
    from tlops.steps.runtime import runtime_from_environment

    configure_logging()
    runtime = runtime_from_environment(os.environ)
    limits = ArchiveLimits.from_environment(os.environ)
    config = SplitConfig(val_fraction, test_fraction, seed, archive_limits=limits)
    cache = PreparedCache.in_cache_dir(runtime.cache_dir)
    prepared = run(data_uri, Path(dataset.path), config, runtime.s3, cache, source_fingerprint or None)
    dataset.metadata.update({"digest": prepared.digest, "classes": prepared.classes, **prepared.num_images})
    dataset.metadata["source_fingerprint"] = source_fingerprint
    shutil.copyfile(Path(dataset.path) / REPORT_FILE, report.path)


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def score_backbone(
    dataset: Input[Dataset],
    backbone: str,
    image_size: int,
    feature_cache: str,
    scoring_images_per_class: int,
    class_weighted: bool,
    seed: int,
    score: Output[Artifact],
):
    """Extract one candidate's features into the feature cache; score them (probe, kNN, LogME) and the cost."""
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
        image_size=image_size,
        feature_cache=feature_cache,
        scoring_images_per_class=scoring_images_per_class,
        class_weighted=class_weighted,
        seed=seed,
    )
    score.metadata.update(result.to_dict())


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def score_baseline(
    dataset: Input[Dataset],
    feature_cache: str,
    scoring_images_per_class: int,
    class_weighted: bool,
    seed: int,
    score: Output[Artifact],
):
    """Score the no-transfer baseline (a linear probe on raw 32x32 pixels) like a candidate, on the CPU image."""
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
        feature_cache=feature_cache,
        scoring_images_per_class=scoring_images_per_class,
        class_weighted=class_weighted,
        seed=seed,
    )
    score.metadata.update(result.to_dict())


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def select_backbone(
    scores: Input[list[Artifact]],
    baseline: Input[Artifact],
    metric: str,
    max_params: int,
    max_latency_ms: float,
    selection: Output[Artifact],
    table: Output[Markdown],
) -> str:
    """Rank the scored candidates against the raw-pixel baseline within the budgets; return the chosen name."""
    import shutil
    from pathlib import Path

    from tlops.io.logs import configure_logging
    from tlops.steps.outputs import SELECTION_TABLE_FILE
    from tlops.steps.select_backbone import choose_backbone

    configure_logging()
    result = choose_backbone(
        [Path(item.path) for item in scores],
        Path(selection.path),
        baseline_dir=Path(baseline.path),
        metric=metric,
        max_params=max_params,
        max_latency_ms=max_latency_ms,
    )
    selection.metadata.update({"chosen": result.chosen, "reasons": result.reasons})
    shutil.copyfile(Path(selection.path) / SELECTION_TABLE_FILE, table.path)
    return result.chosen


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def extract_features(
    dataset: Input[Dataset],
    backbone: str,
    image_size: int,
    seed: int,
    class_weighted: bool,
    feature_cache: str,
    features: Output[Dataset],
    probe: Output[Model],
):
    """Read the chosen backbone's features from the feature cache (one pass on a miss); fit a linear head."""
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
        image_size=image_size,
        seed=seed,
        class_weighted=class_weighted,
        feature_cache=feature_cache,
    )
    probe.metadata.update(summary.to_dict())


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def fine_tune(
    dataset: Input[Dataset],
    probe: Input[Model],
    features: Input[Dataset],
    selection: Input[Artifact],
    strategy: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    class_weighted: bool,
    unfreeze_blocks: int,
    surgical_blocks: str,
    layer_decay: float,
    swa_epochs: int,
    hflip: bool,
    trivial_augment: bool,
    mixup: float,
    cutmix: float,
    grad_accumulation: int,
    torch_compile: bool,
    checkpoint_uri: str,
    processes_per_node: int,
    model: Output[Model],
    learning_curves: Output[HTML],
) -> str:
    """Produce the classifier with the chosen transfer strategy (auto: decided and validated); return the strategy.

    With ``processes_per_node`` > 1 the same ``tlops fine-tune`` entry point runs under torchrun
    (DistributedDataParallel, one process per GPU); ``checkpoint_uri`` (an ``s3://`` prefix) lets a retried pod
    resume from the last epoch.
    """
    import html
    import os
    from pathlib import Path

    from tlops.evaluation.plots import html_page
    from tlops.io.logs import configure_logging
    from tlops.steps.fine_tune import fine_tune_on_processes as run
    from tlops.steps.runtime import runtime_from_environment
    from tlops.train.config import TrainConfig

    configure_logging()
    config = TrainConfig(
        strategy=strategy,
        epochs=epochs,
        batch_size=batch_size,
        lr=learning_rate,
        seed=seed,
        class_weighted=class_weighted,
        unfreeze_blocks=unfreeze_blocks,
        surgical_blocks=surgical_blocks,
        layer_decay=layer_decay,
        swa_epochs=swa_epochs,
        hflip=hflip,
        trivial_augment=trivial_augment,
        mixup=mixup,
        cutmix=cutmix,
        grad_accumulation=grad_accumulation,
        torch_compile=torch_compile,
    )
    training = run(
        processes_per_node,
        Path(dataset.path),
        Path(probe.path),
        Path(model.path),
        config,
        runtime_from_environment(os.environ),
        checkpoint_uri=checkpoint_uri,
        features_dir=Path(features.path),
        selection_dir=Path(selection.path),
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
    model_name: str,
    gate_metric: str,
    gate_margin: float,
    gate_confidence: float,
    gate_alpha: float,
    gate_max_class_drop: float,
    gate_class_drop_images: int,
    gate_max_ece_increase: float,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    plots: Output[HTML],
    gate_report: Output[Markdown],
):
    """Evaluate on the test split (calibrated), then compare with the registered champion on the same images."""
    import os
    from pathlib import Path

    from tlops.evaluation.plots import html_page
    from tlops.io.logs import configure_logging
    from tlops.steps.config import gate_config
    from tlops.steps.evaluate import evaluate as run
    from tlops.steps.gate_report import gate_report as report
    from tlops.steps.runtime import runtime_from_environment

    configure_logging()
    runtime = runtime_from_environment(os.environ)
    gate = gate_config(
        gate_metric=gate_metric,
        gate_margin=gate_margin,
        gate_confidence=gate_confidence,
        gate_alpha=gate_alpha,
        gate_max_class_drop=gate_max_class_drop,
        gate_class_drop_images=gate_class_drop_images,
        gate_max_ece_increase=gate_max_ece_increase,
    )
    result, comparison = run(
        Path(dataset.path),
        Path(model.path),
        Path(evaluation.path),
        runtime,
        tracking_uri=tracking_uri,
        model_name=model_name,
        gate=gate,
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
    selection: Input[Artifact],
    tracking_uri: str,
    experiment: str,
    model_name: str,
    registration: Output[Artifact],
    kfp_run_id: str = "",
    kfp_run_name: str = "",
    kfp_pipeline_name: str = "",
) -> NamedTuple("Registered", [("version", int), ("model_uri", str)]):
    """Log the run to MLflow, register the model version as challenger (champion when the gate's verdict holds)."""
    import os
    from collections import namedtuple
    from pathlib import Path

    from tlops.io.logs import configure_logging
    from tlops.promotion.config import RegistryConfig
    from tlops.steps.register import register as run

    configure_logging()
    config = RegistryConfig(tracking_uri=tracking_uri, experiment=experiment, model_name=model_name)
    summary = run(
        Path(dataset.path),
        Path(model.path),
        Path(evaluation.path),
        config,
        output_dir=Path(registration.path),
        selection_dir=Path(selection.path),
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
    experiment: str,
    kfp_run_id: str = "",
    kfp_run_name: str = "",
):
    """Exit handler: when the pipeline did not succeed, mark its MLflow run FAILED (or create one) with its error."""
    from tlops.io.logs import configure_logging

    configure_logging()
    if status.state == "SUCCEEDED":
        return  # before importing MLflow: a successful run's exit handler takes a fraction of a second
    from tlops.promotion.failures import PipelineOutcome
    from tlops.steps.pipeline_status import record_pipeline_status as run

    outcome = PipelineOutcome(status.state, kfp_run_id, kfp_run_name, status.error_message or "")
    run(tracking_uri, experiment, outcome)


ALL_COMPONENTS = (
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
