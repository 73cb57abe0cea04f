"""The export of a registered image classifier, gated on accuracy (run by the register step after registering).

Export the fp32 classifier to ONNX (and quantise it to int8), evaluate it on the same test images, and register it
(:mod:`tlops.promotion.export_registry`) only when the paired bootstrap interval of its accuracy loss stays within
the margin (:mod:`tlops.promotion.export_gate`). Size and CPU latency of torch fp32, ONNX fp32 and int8 are
measured side by side either way. The outcome goes into the run summary, ``export.json`` and the fp32 run.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlops.data.prepared import OBJECT_DETECTION, TEXT_CLASSIFICATION
from tlops.errors import TlopsError
from tlops.steps.outputs import EXPORT_FILE

if TYPE_CHECKING:
    from torch import nn

    from tlops.promotion.registry import Registration
    from tlops.steps.config import ExportConfig
    from tlops.steps.outputs import ModelConfig
    from tlops.steps.runtime import Runtime

logger = logging.getLogger(__name__)


def check_export_task(config: ExportConfig, task: str) -> None:
    """Refuse ``--export`` for a task other than image classification, before the run starts.

    Raises:
        TlopsError: naming the task and what to do.
    """
    if config.format != "none" and task in (TEXT_CLASSIFICATION, OBJECT_DETECTION):
        raise TlopsError(
            f"--export {config.format} exports image classifiers only, not a {task} model; "
            "drop --export (or set it to none)"
        )


def export_and_register(
    data_dir: Path,
    model: nn.Module,
    model_config: ModelConfig,
    temperature: float,
    registration: Registration,
    config: ExportConfig,
    runtime: Runtime,
    *,
    seed: int = 0,
    output_dir: Path | None = None,
) -> dict[str, Any]:
    """Export the registered classifier, gate it on test accuracy, register it when it passes.

    Args:
        data_dir: Output of the prepare-data step.
        model: The fp32 classifier as registered.
        model_config: Its classes and preprocessing.
        temperature: The calibration temperature the served models divide the logits by.
        registration: The fp32 version's registration (run, name, version, champion).
        config: Format, margin and quantisation.
        runtime: Device, workers and caches (the export runs on the CPU).
        seed: Draws the calibration images.
        output_dir: Where ``export.json`` is written, if given.

    Returns:
        The outcome (``format``, ``accepted``, ``reason``, the verdict's numbers, ``sizes_latency`` rows and, when
        accepted, ``registered``), as the run summary holds it.
    """
    from tlops.data.loading import make_loader, split_dataset
    from tlops.data.preprocessing import eval_transform
    from tlops.evaluation.calibration import softmax
    from tlops.evaluation.metrics import predict_logits
    from tlops.promotion.export_gate import export_verdict
    from tlops.promotion.export_registry import log_export_numbers, register_export
    from tlops.serving.export_latency import measure
    from tlops.serving.model import ServingConfig
    from tlops.serving.onnx_export import export_onnx, onnx_logits, onnx_session, quantize_int8
    from tlops.serving.onnx_package import log_onnx_model
    from tlops.steps.encoders import prepared_manifest
    from tlops.steps.runtime import available_cpus

    manifest, classes, task = prepared_manifest(data_dir, runtime)
    check_export_task(config, task)
    data_config = model_config.preprocessing
    transform = eval_transform(data_config)
    test = make_loader(split_dataset(manifest, "test", classes, transform), runtime.batch_size, workers=runtime.workers)
    model = model.eval().to("cpu")
    fp32_logits, targets = predict_logits(model, test, _cpu())
    with tempfile.TemporaryDirectory(prefix="tlops-export-") as scratch:
        graphs = {"onnx": export_onnx(model, data_config.input_size, Path(scratch) / "fp32.onnx")}
        if config.format == "int8":
            calibration = calibration_batches(manifest, classes, transform, config.calibration_images, seed, runtime)
            graphs["int8"] = quantize_int8(
                graphs["onnx"], Path(scratch) / "int8.onnx", config.quantization, calibration
            )
        session = onnx_session(graphs[config.format])
        exported_logits = exported_test_logits(session, test, onnx_logits)
        verdict = export_verdict(
            softmax(exported_logits, temperature), softmax(fp32_logits, temperature), targets, classes, config.margin
        )
        rows = measure(model, graphs, data_config.input_size, threads=min(4, available_cpus()))
        outcome: dict[str, Any] = {
            "format": config.format,
            "quantization": config.quantization if config.format == "int8" else None,
            "accepted": verdict.accepted,
            "reason": verdict.reason,
            "verdict": verdict.to_dict(),
            "max_abs_logit_difference": float(np.abs(exported_logits - fp32_logits).max()),
            "sizes_latency": rows,
            "registered": None,
        }
        numbers = {key: getattr(verdict, key) for key in ("difference", "ci_low", "ci_high", "exported_accuracy")}
        numbers |= {f"{row['format']}.{key}": row[key] for row in rows for key in row if key != "format"}
        log_export_numbers(registration.tracking_uri, registration.run_id, config.format, numbers, verdict.reason)
        if verdict.accepted:
            serving = ServingConfig(classes=classes, data_config=model_config.data_config, temperature=temperature)
            metadata = {"classes": classes, "export": config.format, "source_model_uri": registration.model_uri}
            source = (
                registration.registered_model,
                registration.version,
                registration.champion == registration.version,
            )
            tags = {f"export.{key}": f"{value:.6g}" for key, value in numbers.items()} | {
                "export.reason": verdict.reason
            }
            outcome["registered"] = register_export(
                registration.tracking_uri,
                registration.run_id,
                source,
                config.format,
                lambda name: log_onnx_model(graphs[config.format], serving, name, metadata),
                tags,
            )
            logger.info("export %s accepted: %s", config.format, verdict.reason)
        else:
            logger.warning("export %s refused, nothing of it registered: %s", config.format, verdict.reason)
    if output_dir is not None:
        import json

        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / EXPORT_FILE).write_text(json.dumps(outcome, indent=2) + "\n")
    return outcome


def exported_test_logits(session: Any, loader: Any, run: Any) -> np.ndarray:
    """The exported network's logits over a loader's batches, in the loader's order."""
    return np.concatenate([run(session, images.numpy()) for images, _ in loader])


def calibration_batches(
    manifest: Any, classes: list[str], transform: Any, count: int, seed: int, runtime: Runtime
) -> list[np.ndarray]:
    """Batches of ``count`` preprocessed training images (a seeded sample), for static int8 calibration."""
    import torch

    from tlops.data.loading import make_loader, split_dataset

    train = manifest[manifest["split"] == "train"]
    sample = train.sample(n=min(count, len(train)), random_state=seed)
    dataset = split_dataset(sample, "train", classes, transform)
    loader = make_loader(dataset, runtime.batch_size, workers=runtime.workers)
    with torch.inference_mode():
        return [images.numpy() for images, _ in loader]


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


def run_export(config: ExportConfig, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
    """:func:`export_and_register` when ``config`` asks for an export; a failure refuses the export, not the run.

    The fp32 version is registered before the export starts, so an export that fails (an operator ONNX cannot
    express, a registry error) is reported as refused, with its error, in the summary and the log.
    """
    if config.format == "none":
        return None
    try:
        return export_and_register(*args, config=config, **kwargs)
    except Exception as error:
        reason = f"the {config.format} export failed, nothing of it registered: {error}"
        logger.error("%s", reason, exc_info=not isinstance(error, TlopsError))
        return {"format": config.format, "accepted": False, "reason": reason, "registered": None}
