"""The evaluate step for object detection: COCO metrics and plots on the test split, then the gate on mAP50.

The detector's detections on the test images (in their original pixels) are scored by pycocotools: mAP@[.5:.95],
AP50, AP75, AP by object size, AR@100 and AP per class (:func:`tlops.evaluation.detection_metrics.detection_metrics`).
The champion is run as it is served (``mlflow.pyfunc`` on the test images' bytes, no score threshold) and the
two are compared image by image (:mod:`tlops.promotion.detection_gate`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlops.data.loading import localize
from tlops.errors import TlopsError
from tlops.promotion.config import RegistryConfig
from tlops.promotion.gate import GateConfig
from tlops.promotion.tracking import check_tracking_server
from tlops.steps.outputs import (
    DETECTION_EXAMPLES_FILE,
    PRECISION_RECALL_FILE,
    Comparison,
    Evaluation,
    load_model,
    load_prepared,
)
from tlops.steps.runtime import Runtime

logger = logging.getLogger(__name__)

EXAMPLE_IMAGES = 6
SERVED_IMAGES_PER_CALL = 16


def evaluate_detection(
    data_dir: Path,
    model_dir: Path,
    output_dir: Path,
    runtime: Runtime,
    *,
    tracking_uri: str,
    model_name: str = RegistryConfig.model_name,
    gate: GateConfig | None = None,
) -> tuple[Evaluation, Comparison]:
    """Evaluate a trained detector on the test split, then run the promotion gate against the champion.

    Writes ``evaluation.json`` (``test_map``, ``test_map50``, ... and per-class AP in ``report``),
    ``precision_recall.png``, ``detection_examples.png`` and the gate's ``comparison.json`` into ``output_dir``.

    Raises:
        TlopsError: when an input folder is not the expected step output, the tracking server does not answer, or
            the model was trained on other classes.
    """
    from tlops.evaluation.detection_metrics import detection_metrics, manifest_ground_truth, predict_detections
    from tlops.evaluation.detection_plots import detection_examples_figure, pr_curves_figure
    from tlops.evaluation.plots import save_png

    manifest, prepared = load_prepared(data_dir)
    model, config = load_model(model_dir)
    check_tracking_server(tracking_uri)
    classes = prepared.classes
    if config.classes != classes:
        raise TlopsError("the model's classes differ from the dataset's; evaluate on the data it was trained on")
    manifest = localize(manifest, runtime.cache_dir / "images", runtime.s3)
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    truth = manifest_ground_truth(test, classes)
    predictions = predict_detections(
        model, _loader(test, classes, config.data_config["input_size"], runtime), runtime.device
    )
    result = detection_metrics(truth, predictions, classes)
    metrics = {f"test_{name}": float(value) for name, value in result.metrics.items()}
    metrics["test_images"] = float(len(test))
    output_dir.mkdir(parents=True, exist_ok=True)
    save_png(pr_curves_figure(result), output_dir / PRECISION_RECALL_FILE)
    shown = test.head(EXAMPLE_IMAGES)
    pictures = [_picture(path) for path in shown["local_path"]]
    examples = detection_examples_figure(pictures, truth[: len(shown)], predictions[: len(shown)], classes)
    save_png(examples, output_dir / DETECTION_EXAMPLES_FILE)
    evaluation = Evaluation(
        metrics=metrics,
        report={"per_class_ap": result.per_class_ap, "per_class_ap50": result.per_class_ap50},
        confusion=[],
        classes=classes,
        backbone=config.backbone,
        strategy=config.strategy,
    )
    evaluation.write(output_dir)
    logger.info(
        "test: mAP50 %.4f, mAP@[.5:.95] %.4f on %d images",
        result.metrics.get("map50", float("nan")),
        result.metrics.get("map", float("nan")),
        len(test),
    )
    comparison = compare_detections_with_champion(
        test, classes, truth, predictions, tracking_uri, model_name, gate or GateConfig()
    )
    comparison.write(output_dir)
    return evaluation, comparison


def _loader(rows: pd.DataFrame, classes: list[str], max_side: int, runtime: Runtime) -> Any:
    from torch.utils.data import DataLoader

    from tlops.train.detection_data import DetectionDataset, collate_detections

    dataset = DetectionDataset(rows, classes, max_side)
    return DataLoader(dataset, batch_size=4, num_workers=runtime.workers, collate_fn=collate_detections)


def _picture(path: str) -> Any:
    from tlops.data.images import decode_image

    return decode_image(Path(path).read_bytes()).image


def compare_detections_with_champion(
    test: pd.DataFrame,
    classes: list[str],
    truth: list[dict[str, Any]],
    predictions: list[dict[str, Any]],
    tracking_uri: str,
    model_name: str,
    gate: GateConfig,
) -> Comparison:
    """Run the champion (as served) on the test images and compare it with the challenger on mAP50.

    A champion of other classes, or one that cannot be loaded or run, is not replaced automatically.
    """
    from tlops.promotion.detection_gate import compare_detections
    from tlops.steps.champion import cannot_run, champion_version, log_comparison, other_classes

    context = {"tracking_uri": tracking_uri, "model_name": model_name, "config": asdict(gate), "metric": "map50"}
    version = champion_version(tracking_uri, model_name)
    if version is None:
        first = Comparison(promote=True, champion_version=None, reasons=["no champion yet: the first becomes it"])
        return log_comparison(replace(first, **context))
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    uri = f"models:/{model_name}/{version}"
    try:
        info = mlflow.models.get_model_info(uri)
        if (info.metadata or {}).get("classes") != classes:
            return log_comparison(Comparison(False, version, [other_classes(version)], **context))
        champion = _served_detections(uri, test, classes)
    except Exception as error:  # deleted artifacts, an unreachable store, a model tlops cannot run
        return log_comparison(Comparison(False, version, [cannot_run(version, error)], **context))
    result = compare_detections(truth, predictions, champion, classes, gate)
    return log_comparison(
        Comparison(champion_version=version, tracking_uri=tracking_uri, model_name=model_name, **result)
    )


def _served_detections(uri: str, test: pd.DataFrame, classes: list[str]) -> list[dict[str, Any]]:
    """The served champion's detections on the test images (every score: the gate ranks them as COCO does)."""
    import mlflow

    served = mlflow.pyfunc.load_model(uri)
    index = {name: i for i, name in enumerate(classes)}
    paths = list(test["local_path"])
    detections = []
    for start in range(0, len(paths), SERVED_IMAGES_PER_CALL):
        chunk = paths[start : start + SERVED_IMAGES_PER_CALL]
        frame = pd.DataFrame({"image": [Path(path).read_bytes() for path in chunk]})
        answer = served.predict(frame, params={"score_threshold": 0.0, "max_detections": 100})
        failed = answer["error"].notna()
        if failed.any():
            raise ValueError(f"{int(failed.sum())} test images failed: {answer['error'][failed].iloc[0]}")
        for boxes, labels, scores in zip(answer["boxes"], answer["labels"], answer["scores"], strict=True):
            detections.append(
                {
                    "boxes": np.asarray(list(boxes), dtype=np.float64).reshape(-1, 4),
                    "labels": np.asarray([index[label] for label in labels], dtype=np.int64),
                    "scores": np.asarray(list(scores), dtype=np.float64),
                }
            )
    return detections
