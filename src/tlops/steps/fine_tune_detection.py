"""The fine-tune step for object detection: a detector on the chosen backbone, trained frozen, partial or full.

Selection chose the backbone from the crops of the labelled boxes (:mod:`tlops.steps.box_crops`); the probe fitted
there is a crop classifier, not a part of the detector, so only its backbone name is taken. The detector
(:func:`tlops.models.detector.build_detector`) puts a feature pyramid and FasterRCNN's or FCOS's heads on the
backbone; :func:`tlops.train.detection_finetune.train_detector` trains it and keeps the epoch with the best
validation mAP50.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from tlops.data.loading import localize
from tlops.data.prepared import OBJECT_DETECTION
from tlops.errors import TlopsError
from tlops.models.extraction import weights_checksum
from tlops.settings import SettingError
from tlops.steps.outputs import LEARNING_CURVES_FILE, ModelConfig, ProbeSummary, Training, load_prepared
from tlops.steps.runtime import Runtime
from tlops.train.config import TrainConfig
from tlops.train.finetune import SINGLE_PROCESS, Distributed
from tlops.train.resume import CheckpointStore
from tlops.train.strategies import STRATEGIES

logger = logging.getLogger(__name__)

FROZEN_BELOW_BOXES = 10
"""``auto`` keeps the backbone frozen when the rarest class has fewer training boxes than this (too few to move a
backbone without overfitting it); otherwise it trains the top blocks (``partial``), as detection toolkits do."""
_TRAINER_NAMES = {"frozen": "frozen", "partial": "partial", "lp-ft": "full"}
CLASSIFICATION_ONLY = {"mixup": 0.0, "cutmix": 0.0, "swa_epochs": 0}
"""Training settings a detector does not take, and the value that leaves each off."""


def check_detection_settings(config: TrainConfig) -> None:
    """Refuse the image-classification-only training settings (mixup, cutmix, SWA) set on a detection run.

    Raises:
        SettingError: naming the setting.
    """
    for name, off in CLASSIFICATION_ONLY.items():
        if getattr(config, name) != off:
            raise SettingError(
                (f"train.{name}",), "{0} applies to image classification only: leave it at " + f"{off:g} for detection"
            )


def fine_tune_detection(
    data_dir: Path,
    probe_dir: Path,
    output_dir: Path,
    config: TrainConfig,
    runtime: Runtime,
    *,
    checkpoint_uri: str = "",
    distributed: Distributed = SINGLE_PROCESS,
) -> Training | None:
    """Train the detector on the selected backbone and write it with its config and training record.

    Args:
        data_dir: Output of the prepare-data step (a detection manifest).
        probe_dir: The probe/ folder of extract-features: its summary names the backbone selection chose.
        output_dir: Where the detector (``detector.safetensors``, ``detector.json``, ``model_config.json``),
            ``training.json`` and ``learning_curves.png`` go.
        config: The strategy and the detection settings (``detector``, ``detection_*``, ``lr``, ...).
        runtime: Device, workers, S3 client and caches.
        checkpoint_uri: Folder or ``s3://`` prefix of the per-epoch checkpoint a restarted step resumes from.
        distributed: Rank and world size under torchrun (detection trains in one process).

    Returns:
        The training record.

    Raises:
        TlopsError: for a strategy detection does not take, several processes, or a checkpoint of another run.
    """
    from tlops.models.detector import backbone_blocks, build_detector
    from tlops.models.detector_checkpoint import DetectorConfig, save_detector
    from tlops.train.detection_finetune import DetectionTrainConfig, train_detector

    STRATEGIES.get(config.strategy).check_task(OBJECT_DETECTION)
    check_detection_settings(config)
    if distributed.world_size > 1:
        raise TlopsError(
            f"object detection trains in one process, not {distributed.world_size}: set --processes-per-node 1"
        )
    probe_summary = ProbeSummary.read(probe_dir)
    manifest, prepared = load_prepared(data_dir)
    manifest = localize(manifest, runtime.cache_dir / "images", runtime.s3)
    classes = prepared.classes
    strategy, reasons = decide_detection_strategy(config, manifest)
    image_size = detector_image_size(config.detection_image_size, manifest)
    if image_size < config.detection_image_size:
        logger.info(
            "detector input %d pixels: the training images' longest side (--detection-image-size %d is the most)",
            image_size,
            config.detection_image_size,
        )
    model = build_detector(
        probe_summary.backbone,
        len(classes),
        architecture=config.detector,
        image_size=image_size,
        s3=runtime.s3,
        cache_dir=runtime.cache_dir,
        detector_weights=config.detector_weights or None,
    )
    pretrained_checksum = weights_checksum(model.backbone.body)
    train_config = DetectionTrainConfig(
        epochs=config.detection_epochs,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup=config.warmup_fraction,
        batch_size=config.detection_batch_size,
        trainable_blocks=config.unfreeze_blocks,
        max_side=image_size,
        seed=config.seed,
        clip_grad_norm=config.clip_grad_norm or 0.0,
    )
    train_loader, val_loader = _loaders(manifest, classes, train_config, runtime)
    history = train_detector(
        model,
        train_loader,
        val_loader,
        train_config,
        runtime.device,
        strategy=_TRAINER_NAMES[strategy],
        blocks=backbone_blocks(model),
        checkpoint_dir=checkpoint_uri or None,
        resume=bool(checkpoint_uri),
        evaluate=_validation_metrics(classes, manifest),
        s3=runtime.s3,
        settings=asdict(config),
    )
    if history.resumed_from is not None:
        reasons.append(f"resumed from the checkpoint of epoch {history.resumed_from}")
    model_config = ModelConfig(
        backbone=probe_summary.backbone,
        classes=classes,
        data_config={"input_size": image_size, "detector": config.detector},
        strategy=strategy,
        weights_sha256=pretrained_checksum,
        task=OBJECT_DETECTION,
    )
    save_detector(model, output_dir, DetectorConfig.of(model, config.detector, probe_summary.backbone, classes))
    model_config.write(output_dir)
    training = _training_record(history, config, strategy, reasons)
    training.write(output_dir)
    from tlops.evaluation.detection_plots import detection_curves_figure
    from tlops.evaluation.plots import save_png

    save_png(detection_curves_figure(history.epochs), output_dir / LEARNING_CURVES_FILE)
    if checkpoint_uri:
        CheckpointStore(checkpoint_uri, runtime.s3).remove()
    return training


def detector_image_size(limit: int, manifest: pd.DataFrame) -> int:
    """The side the detector resizes images to: the training images' longest side, at most ``limit``.

    Small images are not blown up to ``limit`` (compute grows with its square; a 160-pixel dataset at 512 costs
    ten times as much). Rounded up to a multiple of 32, the pyramid's coarsest stride, and at least 64.
    """
    train = manifest[manifest["split"] == "train"]
    longest = int(max(train["width"].max(), train["height"].max())) if len(train) else limit
    return max(64, min(limit, -(-longest // 32) * 32))


def decide_detection_strategy(config: TrainConfig, manifest: pd.DataFrame) -> tuple[str, list[str]]:
    """The strategy to train (``auto`` decides from the training boxes per class), and why.

    Returns:
        The registered strategy name (``frozen``, ``partial`` or ``lp-ft``) and the reasons, one line each.
    """
    from tlops.data.detection.manifest import parse_boxes

    boxes: dict[str, int] = {}
    for text in manifest.loc[manifest["split"] == "train", "boxes"]:
        for label, _ in parse_boxes(text):
            boxes[label] = boxes.get(label, 0) + 1
    rarest, count = min(boxes.items(), key=lambda item: item[1]) if boxes else ("", 0)
    if config.strategy != "auto":
        return config.strategy, ["as requested"]
    if count < FROZEN_BELOW_BOXES:
        why = (
            f"class {rarest!r} has {count} training boxes, under {FROZEN_BELOW_BOXES}: too few to fine-tune "
            "the backbone without overfitting it; the feature pyramid and the heads train"
        )
        return "frozen", [why]
    why = (
        f"the rarest class {rarest!r} has {count} training boxes: the top {config.unfreeze_blocks} "
        "backbone blocks train with the feature pyramid and the heads (lp-ft trains every block)"
    )
    return "partial", [why]


def _loaders(manifest: pd.DataFrame, classes: list[str], config: Any, runtime: Runtime) -> tuple[Any, Any]:
    """The training loader (flips, shuffled) and the validation loader of the manifest."""
    from torch.utils.data import DataLoader

    from tlops.train.detection_data import DetectionDataset, collate_detections

    def loader(split: str, train: bool) -> DataLoader:
        rows = manifest[manifest["split"] == split]
        dataset = DetectionDataset(rows, classes, config.max_side, train=train)
        return DataLoader(
            dataset,
            batch_size=config.batch_size,
            shuffle=train,
            num_workers=runtime.workers,
            collate_fn=collate_detections,
            pin_memory=runtime.pin_memory,
        )

    return loader("train", True), loader("val", False)


def _validation_metrics(classes: list[str], manifest: pd.DataFrame) -> Any:
    """The callback that scores the detector on the validation split (COCO mAP, mAP50, ...)."""
    from tlops.evaluation.detection_metrics import detection_metrics, manifest_ground_truth, predict_detections

    truth = manifest_ground_truth(manifest[manifest["split"] == "val"].reset_index(drop=True), classes)

    def evaluate(model: Any, loader: Any, device: Any) -> dict[str, float]:
        return detection_metrics(truth, predict_detections(model, loader, device), classes).metrics

    return evaluate


def _training_record(history: Any, config: TrainConfig, strategy: str, reasons: list[str]) -> Training:
    """``training.json``: the strategy, why, and each epoch's losses and validation mAP."""
    for reason in reasons:
        logger.info("strategy %s: %s", strategy, reason)
    epochs = [_epoch_row(asdict(epoch)) for epoch in history.epochs]
    best = next((e for e in epochs if e["epoch"] == history.best_epoch), epochs[-1] if epochs else {})
    speeds = [e["images_per_second"] for e in epochs if e.get("images_per_second")]
    return Training(
        strategy=strategy,
        requested_strategy=config.strategy,
        reasons=reasons,
        best_epoch=history.best_epoch,
        val_accuracy=float(best.get("val_map50") or 0.0),
        probe_val_accuracy=0.0,
        history=epochs,
        config=asdict(config),
        evidence={"trained_blocks": history.trained_blocks, "metric": "val mAP50"},
        resumed_from=history.resumed_from,
        images_per_second=round(sum(speeds) / len(speeds), 2) if speeds else None,
    )


def _epoch_row(epoch: dict[str, Any]) -> dict[str, Any]:
    """An epoch as ``training.json`` and MLflow's curves take it: validation metrics as ``val_<name>``, no NaN."""
    validation = epoch.pop("val", {}) or {}
    row = epoch | {f"val_{name}": value for name, value in validation.items()}
    return {key: (None if isinstance(value, float) and value != value else value) for key, value in row.items()}
