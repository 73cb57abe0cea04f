"""The promotion gate's side of the evaluate step: the registered champion on the same test images."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tlops.data.loading import make_loader, split_dataset
from tlops.data.preprocessing import DataConfig, eval_transform
from tlops.evaluation.metrics import predict
from tlops.promotion.gate import GateConfig, compare
from tlops.promotion.registry import CHAMPION
from tlops.steps.outputs import Comparison
from tlops.steps.runtime import Runtime

logger = logging.getLogger(__name__)


def compare_with_champion(
    manifest: pd.DataFrame,
    classes: list[str],
    probabilities: np.ndarray,
    targets: np.ndarray,
    tracking_uri: str,
    model_name: str,
    runtime: Runtime,
    gate: GateConfig | None = None,
) -> Comparison:
    """Evaluate the current champion on the test split and run the promotion gate against the challenger.

    Args:
        manifest: The localized manifest of the prepared data.
        classes: Its classes.
        probabilities: The challenger's class probabilities on the test split, in manifest order.
        targets: The true class ids of those images.
        tracking_uri: The MLflow registry.
        model_name: The registered model whose ``champion`` is compared against.
        runtime: Device, workers and caches.
        gate: Thresholds of the gate.

    Returns:
        The verdict: ``promote``, ``champion_version`` (``None`` when there is no champion yet), numbers, reasons,
        and the registry it compared in.
    """
    registry = {"tracking_uri": tracking_uri, "model_name": model_name}
    version = _champion_version(tracking_uri, model_name)
    if version is None:
        first = Comparison(promote=True, champion_version=None, reasons=["no champion yet: the first becomes it"])
        return _log(replace(first, **registry))
    import mlflow
    import mlflow.pytorch

    mlflow.set_tracking_uri(tracking_uri)
    uri = f"models:/{model_name}/{version}"
    metadata = mlflow.models.get_model_info(uri).metadata or {}
    if metadata.get("classes") != classes:
        reason = "the champion was trained on other classes: not comparable; promote by hand (tlops promote)"
        return _log(Comparison(promote=False, champion_version=version, reasons=[reason], **registry))
    champion = mlflow.pytorch.load_model(uri)
    data_config = DataConfig.from_dict(metadata["data_config"])
    # The exported champion runs on the CPU (see predict): workers, but no pinned memory.
    test_set = split_dataset(manifest, "test", classes, eval_transform(data_config))
    loader = make_loader(test_set, runtime.batch_size, workers=runtime.workers)
    champion_probabilities, champion_targets = predict(champion, loader, runtime.device)
    if not np.array_equal(champion_targets, targets):
        raise RuntimeError("the champion was evaluated on other images than the challenger")
    result = compare(
        probabilities.argmax(1) == targets, champion_probabilities.argmax(1) == targets, targets, classes, gate
    )
    return _log(Comparison(champion_version=version, **asdict(result), **registry))


def _champion_version(tracking_uri: str, model_name: str) -> int | None:
    """The champion's version, ``None`` without one (a local sqlite store that does not exist is not created)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        return None
    try:
        return int(MlflowClient(tracking_uri).get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def _log(comparison: Comparison) -> Comparison:
    for reason in comparison.reasons:
        logger.info("champion gate: %s", reason)
    logger.info("champion gate: %s", "promote" if comparison.promote else "keep the champion")
    return comparison
