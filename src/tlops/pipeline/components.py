"""KFP components: each imports the core step, calls it, and maps the results onto typed artifacts.

No ``from __future__ import annotations`` here: KFP reads the annotations at decoration time. The function
bodies are shipped into the container as source, so every import sits inside them.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from tlops.pipeline.image import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare_data(
    data_uri: str,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    dataset: Output[Dataset],
    report: Output[Markdown],
):
    """Validate every image of a dataset (folder, s3://, archive or CSV manifest), split it, write the manifest."""
    import os
    import shutil
    from pathlib import Path

    from tlops.data.prepare import REPORT_FILE, SplitConfig
    from tlops.data.prepare import prepare_data as run
    from tlops.steps.runtime import runtime_from_environment

    runtime = runtime_from_environment(os.environ)
    prepared = run(data_uri, Path(dataset.path), SplitConfig(val_fraction, test_fraction, seed), runtime.s3)
    dataset.metadata.update({"digest": prepared.digest, "classes": prepared.classes, **prepared.num_images})
    shutil.copyfile(Path(dataset.path) / REPORT_FILE, report.path)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def select_backbone(
    dataset: Input[Dataset], candidates: list, image_size: int, seed: int, selection: Output[Artifact]
) -> str:
    """Rank the candidate backbones by cross-validated linear-probe accuracy; return the best one's name."""
    import os
    from pathlib import Path

    from tlops.steps.runtime import runtime_from_environment
    from tlops.steps.select_backbone import select_backbone as run

    result = run(
        Path(dataset.path),
        candidates,
        Path(selection.path),
        runtime_from_environment(os.environ),
        image_size=image_size or None,
        seed=seed,
    )
    selection.metadata.update({"chosen": result.chosen, "reasons": result.reasons})
    return result.chosen


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def extract_features(
    dataset: Input[Dataset],
    backbone: str,
    image_size: int,
    seed: int,
    class_weighted: bool,
    features: Output[Dataset],
    probe: Output[Model],
):
    """Run the frozen backbone once over all splits, cache the embeddings and fit a linear head on them."""
    import os
    from pathlib import Path

    from tlops.steps.extract_features import extract_and_probe
    from tlops.steps.runtime import runtime_from_environment

    summary = extract_and_probe(
        Path(dataset.path),
        backbone,
        Path(features.path),
        Path(probe.path),
        runtime_from_environment(os.environ),
        image_size=image_size or None,
        seed=seed,
        class_weighted=class_weighted,
    )
    probe.metadata.update(summary)


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def fine_tune(
    dataset: Input[Dataset],
    probe: Input[Model],
    strategy: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    class_weighted: bool,
    model: Output[Model],
    learning_curves: Output[HTML],
) -> str:
    """Produce the classifier with the chosen strategy (linear-probe, full LP-FT, or auto); return the strategy."""
    import html
    import os
    from pathlib import Path

    from tlops.evaluation.plots import html_page
    from tlops.steps.fine_tune import fine_tune as run
    from tlops.steps.runtime import runtime_from_environment
    from tlops.train.finetune import TrainConfig

    config = TrainConfig(
        strategy=strategy,
        epochs=epochs,
        batch_size=batch_size,
        lr=learning_rate,
        seed=seed,
        class_weighted=class_weighted,
    )
    summary = run(Path(dataset.path), Path(probe.path), Path(model.path), config, runtime_from_environment(os.environ))
    model.metadata.update({k: summary[k] for k in ("strategy", "reasons", "best_epoch", "val_accuracy")})
    curves = sorted(Path(model.path).glob("*.png"))
    Path(learning_curves.path).write_text(
        html_page("Training", curves, "<p>" + "<br>".join(map(html.escape, summary["reasons"])) + "</p>")
    )
    return summary["strategy"]


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    dataset: Input[Dataset],
    model: Input[Model],
    tracking_uri: str,
    model_name: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    plots: Output[HTML],
):
    """Evaluate on the test split, then compare with the registered champion on the same images (the gate)."""
    import os
    from pathlib import Path

    from tlops.evaluation.plots import html_page
    from tlops.steps.evaluate import compare_with_champion
    from tlops.steps.evaluate import evaluate as run
    from tlops.steps.runtime import runtime_from_environment

    runtime = runtime_from_environment(os.environ)
    result = run(Path(dataset.path), Path(model.path), Path(evaluation.path), runtime)
    gate = compare_with_champion(Path(dataset.path), Path(evaluation.path), tracking_uri, model_name, runtime)
    evaluation.metadata.update({"promote": gate["promote"], "gate": gate["reasons"]})
    for name, value in result["metrics"].items():
        metrics.log_metric(name, value)
    confusion.log_confusion_matrix(result["classes"], result["confusion"])
    Path(plots.path).write_text(html_page("Evaluation", sorted(Path(evaluation.path).glob("*.png"))))


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
) -> NamedTuple("Registered", [("version", int), ("model_uri", str)]):
    """Log the run to MLflow, register the model version as challenger (champion when it is the first)."""
    import json
    from collections import namedtuple
    from pathlib import Path

    from tlops.promotion.registry import RegistryConfig, register_model
    from tlops.steps.summary import run_summary

    config = RegistryConfig(tracking_uri=tracking_uri, experiment=experiment, model_name=model_name)
    result = register_model(
        Path(dataset.path), Path(model.path), Path(evaluation.path), config, extra_artifact_dirs=[Path(selection.path)]
    )
    summary = run_summary(Path(dataset.path), Path(model.path), Path(evaluation.path), result)
    Path(registration.path).write_text(json.dumps(summary, indent=2))
    registration.metadata.update({"version": result.version, "model_uri": result.model_uri, "aliases": result.aliases})
    return namedtuple("Registered", ["version", "model_uri"])(result.version, result.model_uri)


ALL_COMPONENTS = (prepare_data, select_backbone, extract_features, fine_tune, evaluate, register)
