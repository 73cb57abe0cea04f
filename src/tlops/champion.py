"""The evaluate step's comparison with the registered champion, on the same test images."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from tlops.backbones import DataConfig
from tlops.datasets import eval_transform, make_loader, split_dataset
from tlops.evaluation import predict
from tlops.gate import COMPARISON_FILE, GateConfig, compare
from tlops.runtime import Runtime
from tlops.steps import PREDICTIONS_FILE, localized_manifest
from tlops.tracking import check_tracking_server


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
