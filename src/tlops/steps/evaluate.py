"""The evaluate step: metrics and plots on the test split, then the promotion gate against the champion."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

from tlops.data.loading import make_loader, split_dataset
from tlops.data.preprocessing import eval_transform
from tlops.errors import TlopsError
from tlops.evaluation.calibration import calibrate, softmax
from tlops.evaluation.metrics import compute_metrics, predict_logits
from tlops.promotion.config import RegistryConfig
from tlops.promotion.gate import GateConfig
from tlops.promotion.tracking import check_tracking_server
from tlops.steps.champion import compare_with_champion
from tlops.steps.encoders import is_detection, is_text, prepared_manifest, targets_of, texts_of
from tlops.steps.outputs import (
    CONFUSION_MATRIX_FILE,
    RELIABILITY_DIAGRAM_FILE,
    Comparison,
    Evaluation,
    PreparedData,
    load_model,
    read_calibration_set,
    write_predictions,
)
from tlops.steps.runtime import Runtime

logger = logging.getLogger(__name__)


class Evaluated(NamedTuple):
    """What the evaluate step wrote: the challenger's metrics and the gate's verdict."""

    evaluation: Evaluation
    comparison: Comparison


def evaluate(
    data_dir: Path,
    model_dir: Path,
    output_dir: Path,
    runtime: Runtime,
    *,
    tracking_uri: str,
    model_name: str = RegistryConfig.model_name,
    gate: GateConfig | None = None,
) -> Evaluated:
    """Evaluate a trained classifier on the test split, then run the promotion gate against the champion.

    The model's probabilities are calibrated first: one temperature, fitted on the validation split (on the
    out-of-fold logits of the fine-tune step's cross-validation when its head was refitted on train+val, see
    :func:`~tlops.steps.outputs.write_calibration_set`) by minimising the negative log-likelihood and kept only
    when it generalises (:func:`~tlops.evaluation.calibration.checked_temperature`), divides the logits (the
    served model applies the same). Writes
    ``evaluation.json`` (metrics of the calibrated probabilities, calibration before and after, per-class report,
    confusion matrix), ``predictions.safetensors`` (calibrated), ``confusion_matrix.png``,
    ``reliability_diagram.png`` (before and after) and the gate's ``comparison.json`` into ``output_dir``.

    Args:
        data_dir: Output of the prepare-data step.
        model_dir: Output of the fine-tune step.
        output_dir: Where the evaluation goes.
        runtime: Device, workers and caches.
        tracking_uri: The MLflow registry holding the champion.
        model_name: The registered model whose ``champion`` the gate compares against.
        gate: Thresholds of the gate.

    Raises:
        TlopsError: when an input folder is not the expected step output, the tracking server does not answer
            (all checked before anything runs), or the model was trained on other classes.
    """
    from tlops.evaluation.plots import confusion_matrix_figure, reliability_figure, save_png

    if is_detection(PreparedData.read(data_dir).task):
        from tlops.steps.evaluate_detection import evaluate_detection

        return Evaluated(
            *evaluate_detection(
                data_dir, model_dir, output_dir, runtime, tracking_uri=tracking_uri, model_name=model_name, gate=gate
            )
        )
    model, config = load_model(model_dir)
    check_tracking_server(tracking_uri)
    manifest, classes, task = prepared_manifest(data_dir, runtime)
    if config.classes != classes:
        raise TlopsError("the model's classes differ from the dataset's; evaluate on the data it was trained on")
    logits = {}
    for split in ("val", "test"):
        if is_text(task):
            logits[split] = (model.logits(texts_of(manifest, split)), targets_of(manifest, split, classes))
            continue
        loader = make_loader(
            split_dataset(manifest, split, classes, eval_transform(config.preprocessing)),
            runtime.batch_size,
            workers=runtime.workers,
            pin_memory=runtime.pin_memory,
        )
        logits[split] = predict_logits(model, loader, runtime.device)
    (val_logits, val_targets), (test_logits, targets) = logits["val"], logits["test"]
    held_out = read_calibration_set(model_dir)  # out-of-fold logits when the head was refitted on train+val
    source = "validation"
    if held_out is not None:
        (val_logits, val_targets), source = held_out, "out-of-fold train+val"
    calibration = calibrate(val_logits, val_targets, test_logits, targets, len(classes), source)
    logger.info(
        "calibration: %s; test ECE %.4f -> %.4f, log loss %.4f -> %.4f",
        calibration.reason,
        calibration.before["ece"],
        calibration.after["ece"],
        calibration.before["log_loss"],
        calibration.after["log_loss"],
    )
    probabilities = softmax(test_logits, calibration.temperature)  # what the served model returns
    result = compute_metrics(probabilities, targets, classes)
    metrics = result.metrics | {
        "test_brier": calibration.after["brier"],
        "test_ece_uncalibrated": calibration.before["ece"],
        "test_log_loss_uncalibrated": calibration.before["log_loss"],
        "test_brier_uncalibrated": calibration.before["brier"],
        "temperature": calibration.temperature,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    save_png(confusion_matrix_figure(result.confusion, classes), output_dir / CONFUSION_MATRIX_FILE)
    uncalibrated = softmax(test_logits)
    save_png(reliability_figure(uncalibrated, targets, probabilities), output_dir / RELIABILITY_DIAGRAM_FILE)
    write_predictions(output_dir, probabilities, targets)
    evaluation = Evaluation(
        metrics=metrics,
        report=result.report,
        confusion=result.confusion,
        classes=classes,
        backbone=config.backbone,
        strategy=config.strategy,
        calibration=calibration.to_dict(),
    )
    evaluation.write(output_dir)
    comparison = compare_with_champion(
        manifest, classes, probabilities, targets, tracking_uri, model_name, runtime, gate
    )
    comparison.write(output_dir)
    return Evaluated(evaluation, comparison)
