"""The promotion gate's side of the evaluate step: the registered champion, as it is served, on the same images.

The champion is loaded from the registry exactly as a serving platform loads it (``mlflow.pyfunc``) and given the
test images' file bytes, so the comparison covers its decoding, preprocessing and calibration too. Versions
registered before tlops served raw images (a ``pytorch`` flavour tensor model) are run on preprocessed tensors.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tlops.data.loading import make_loader, split_dataset
from tlops.data.preprocessing import DataConfig, eval_transform
from tlops.evaluation.metrics import predict
from tlops.promotion.aliases import CHAMPION
from tlops.promotion.gate import GateConfig, compare
from tlops.serving.model import IMAGE_COLUMN
from tlops.serving.text_model import TEXT_COLUMN
from tlops.steps.outputs import Comparison
from tlops.steps.runtime import Runtime

logger = logging.getLogger(__name__)

SERVED_IMAGES_PER_CALL = 64


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
        probabilities: The challenger's calibrated class probabilities on the test split, in manifest order.
        targets: The true class ids of those images.
        tracking_uri: The MLflow registry.
        model_name: The registered model whose ``champion`` is compared against.
        runtime: Device, workers and caches.
        gate: Thresholds of the gate.

    Returns:
        The verdict: ``promote``, ``champion_version`` (``None`` when there is no champion yet), numbers, reasons,
        the thresholds, and the registry it compared in. A champion that cannot be compared (other classes,
        artifacts that cannot be loaded) is not replaced automatically; the reason says what to do.
    """
    gate = gate or GateConfig()
    context = {"tracking_uri": tracking_uri, "model_name": model_name, "config": asdict(gate), "metric": gate.metric}
    version = champion_version(tracking_uri, model_name)
    if version is None:
        first = Comparison(promote=True, champion_version=None, reasons=["no champion yet: the first becomes it"])
        return log_comparison(replace(first, **context))
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    uri = f"models:/{model_name}/{version}"
    try:
        info = mlflow.models.get_model_info(uri)
        metadata = info.metadata or {}
        if metadata.get("classes") != classes:
            return log_comparison(
                Comparison(promote=False, champion_version=version, reasons=[other_classes(version)], **context)
            )
        champion_probabilities = _champion_probabilities(uri, info, manifest, classes, runtime)
    except Exception as error:  # deleted artifacts, an unreachable store, a model tlops cannot run
        return log_comparison(
            Comparison(promote=False, champion_version=version, reasons=[cannot_run(version, error)], **context)
        )
    result = compare(probabilities, champion_probabilities, targets, classes, gate)
    fields = asdict(result) | {"tracking_uri": tracking_uri, "model_name": model_name}
    return log_comparison(Comparison(champion_version=version, **fields))


def other_classes(version: int) -> str:
    """Why a champion trained on other classes is not compared (nor replaced automatically)."""
    return (
        f"the champion (version {version}) was trained on other classes: not comparable, so not replaced "
        "automatically; promote by hand (tlops promote --version N)"
    )


def cannot_run(version: int, error: Exception) -> str:
    """Why a champion that cannot be loaded or run is not compared (nor replaced automatically)."""
    return (
        f"the champion (version {version}) cannot be loaded or run ({type(error).__name__}: "
        f"{str(error).splitlines()[0][:200] if str(error) else 'no message'}): not comparable, so not replaced "
        "automatically; repair it, or promote by hand (tlops promote --version N)"
    )


def _champion_probabilities(uri: str, info, manifest: pd.DataFrame, classes: list[str], runtime: Runtime) -> np.ndarray:
    """The champion's class probabilities on the test split, in manifest order."""
    import mlflow

    test = manifest[manifest["split"] == "test"]
    if "python_function" in info.flavors and "pytorch" not in info.flavors:
        served = mlflow.pyfunc.load_model(uri)
        rows = []
        texts = "text" in test.columns  # prepared texts: the served text model takes them as they are
        items = list(test["text"] if texts else test["local_path"])
        for start in range(0, len(items), SERVED_IMAGES_PER_CALL):
            chunk = items[start : start + SERVED_IMAGES_PER_CALL]
            column = {TEXT_COLUMN: chunk} if texts else {IMAGE_COLUMN: [Path(path).read_bytes() for path in chunk]}
            rows.append(served.predict(pd.DataFrame(column)))
        predictions = pd.concat(rows, ignore_index=True)
        failed = predictions["error"].notna()
        if failed.any():
            kind = "texts" if texts else "images"
            raise ValueError(f"{int(failed.sum())} test {kind} failed: {predictions['error'][failed].iloc[0]}")
        return np.array([[row[name] for name in classes] for row in predictions["probabilities"]])
    import mlflow.pytorch

    champion = mlflow.pytorch.load_model(uri)
    data_config = DataConfig.from_dict(info.metadata["data_config"])
    # The exported champion runs on the CPU (see predict): workers, but no pinned memory.
    test_set = split_dataset(manifest, "test", classes, eval_transform(data_config))
    loader = make_loader(test_set, runtime.batch_size, workers=runtime.workers)
    return predict(champion, loader, runtime.device)[0]


def champion_version(tracking_uri: str, model_name: str) -> int | None:
    """The champion's version, ``None`` without one (a local sqlite store that does not exist is not created)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        return None
    try:
        return int(MlflowClient(tracking_uri).get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def log_comparison(comparison: Comparison) -> Comparison:
    """Log the gate's reasons and verdict; return the comparison."""
    for reason in comparison.reasons:
        logger.info("champion gate: %s", reason)
    logger.info("champion gate: %s", "promote" if comparison.promote else "keep the champion")
    return comparison
