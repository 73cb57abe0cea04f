"""The evaluate step: metrics and plots on the test split, then the promotion gate against the champion."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tlops.data.loading import make_loader, split_dataset
from tlops.data.preprocessing import DataConfig, eval_transform
from tlops.errors import TlopsError
from tlops.evaluation.metrics import compute_metrics, predict
from tlops.models.checkpoint import load_classifier
from tlops.promotion.gate import COMPARISON_FILE, GateConfig, compare
from tlops.promotion.tracking import check_tracking_server
from tlops.steps.common import localized_manifest
from tlops.steps.runtime import Runtime

EVALUATION_FILE = "evaluation.json"
PREDICTIONS_FILE = "predictions.safetensors"


def evaluate(data_dir: Path, model_dir: Path, output_dir: Path, runtime: Runtime) -> dict:
    """Evaluate a trained classifier on the test split.

    Writes ``evaluation.json`` (metrics, per-class report, confusion matrix), ``confusion_matrix.png`` and
    ``reliability_diagram.png`` into ``output_dir``.

    Returns:
        The evaluation as written to ``evaluation.json``.
    """
    from tlops.evaluation.plots import confusion_matrix_figure, reliability_figure, save_png

    manifest, classes = localized_manifest(data_dir, runtime)
    model, config = load_classifier(model_dir)
    if config["classes"] != classes:
        raise TlopsError("the model's classes differ from the dataset's; evaluate on the data it was trained on")
    data_config = DataConfig.from_dict(config["data_config"])
    loader = make_loader(
        split_dataset(manifest, "test", classes, eval_transform(data_config)),
        runtime.batch_size,
        workers=runtime.workers,
    )
    probabilities, targets = predict(model, loader, runtime.device)
    result = compute_metrics(probabilities, targets, classes)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_png(confusion_matrix_figure(result.confusion, classes), output_dir / "confusion_matrix.png")
    save_png(reliability_figure(probabilities, targets), output_dir / "reliability_diagram.png")
    save_file(
        {"probabilities": torch.from_numpy(probabilities).contiguous(), "targets": torch.from_numpy(targets)},
        str(output_dir / PREDICTIONS_FILE),
    )
    evaluation = {
        "metrics": result.metrics,
        "report": result.report,
        "confusion": result.confusion,
        "classes": classes,
        "backbone": config["backbone"],
        "strategy": config.get("strategy"),
    }
    (output_dir / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=2))
    return evaluation


def compare_with_champion(
    data_dir: Path,
    evaluation_dir: Path,
    tracking_uri: str,
    model_name: str,
    runtime: Runtime,
    gate: GateConfig | None = None,
) -> dict:
    """Evaluate the current champion on this test split and run the promotion gate against the challenger.

    Writes ``comparison.json`` into ``evaluation_dir``: ``promote`` (whether the challenger may become champion),
    ``champion_version`` (``None`` when there is no champion yet) and the gate's numbers and reasons.

    Raises:
        TlopsError: when the tracking server does not answer.
    """
    import mlflow
    import mlflow.pytorch
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    check_tracking_server(tracking_uri)
    client = MlflowClient(tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        version = None
    if version is None:
        comparison = {"promote": True, "champion_version": None, "reasons": ["no champion yet: the first becomes it"]}
        return _write(evaluation_dir, comparison)
    mlflow.set_tracking_uri(tracking_uri)
    uri = f"models:/{model_name}/{version.version}"
    metadata = mlflow.models.get_model_info(uri).metadata or {}
    manifest, classes = localized_manifest(data_dir, runtime)
    if metadata.get("classes") != classes:
        comparison = {
            "promote": False,
            "champion_version": int(version.version),
            "reasons": ["the champion was trained on other classes: not comparable; promote by hand (tlops promote)"],
        }
        return _write(evaluation_dir, comparison)
    champion = mlflow.pytorch.load_model(uri)
    data_config = DataConfig.from_dict(metadata["data_config"])
    loader = make_loader(split_dataset(manifest, "test", classes, eval_transform(data_config)), runtime.batch_size)
    champion_probabilities, targets = predict(champion, loader, runtime.device)
    challenger = load_file(str(Path(evaluation_dir) / PREDICTIONS_FILE))
    if not np.array_equal(challenger["targets"].numpy(), targets):
        raise RuntimeError("the champion was evaluated on other images than the challenger")
    result = compare(
        challenger["probabilities"].numpy().argmax(1) == targets,
        champion_probabilities.argmax(1) == targets,
        targets,
        classes,
        gate,
    )
    comparison = asdict(result) | {"champion_version": int(version.version)}
    return _write(evaluation_dir, comparison)


def _write(evaluation_dir: Path, comparison: dict) -> dict:
    for reason in comparison["reasons"]:
        print(f"champion gate: {reason}")
    print(f"champion gate: {'promote' if comparison['promote'] else 'keep the champion'}")
    (Path(evaluation_dir) / COMPARISON_FILE).write_text(json.dumps(comparison, indent=2))
    return comparison
