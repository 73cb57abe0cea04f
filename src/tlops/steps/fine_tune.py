"""The fine-tune step: the final classifier from the probe head with the chosen transfer strategy."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from tlops.data.loading import make_loader, split_dataset
from tlops.data.preprocessing import eval_transform, train_transform
from tlops.errors import TlopsError
from tlops.models.backbones import build_classifier, load_backbone
from tlops.steps.common import localized_manifest
from tlops.steps.outputs import (
    LEARNING_CURVES_FILE,
    ModelConfig,
    PreparedData,
    ProbeSummary,
    Training,
    read_head,
    save_model,
)
from tlops.steps.runtime import Runtime
from tlops.train.finetune import TrainConfig, balanced_class_weights, decide_strategy, fine_tune_all_layers

logger = logging.getLogger(__name__)


def fine_tune(data_dir: Path, probe_dir: Path, output_dir: Path, config: TrainConfig, runtime: Runtime) -> Training:
    """Produce the final classifier with the chosen transfer strategy, starting from the probe head.

    Writes the model (``model.safetensors``, ``model_config.json``), ``training.json`` and, when layers were
    fine-tuned, ``learning_curves.png`` into ``output_dir``.

    Returns:
        The training record: strategy, reasons, history, best epoch, val accuracy.

    Raises:
        TlopsError: when ``data_dir`` is not a prepare-data output, ``probe_dir`` not an extract-features probe,
            or the probe was fitted on other classes.
    """
    from tlops.evaluation.plots import learning_curves_figure, save_png

    prepared = PreparedData.read(data_dir)
    probe_summary = ProbeSummary.read(probe_dir)
    if probe_summary.classes != prepared.classes:
        raise TlopsError(
            f"the probe in {probe_dir} was fitted on other classes than the dataset in {data_dir} has: "
            "run tlops extract-features on this dataset"
        )
    head = read_head(probe_dir)
    manifest, classes = localized_manifest(data_dir, runtime)
    backbone = load_backbone(
        probe_summary.backbone, image_size=probe_summary.image_size, s3=runtime.s3, cache_dir=runtime.cache_dir
    )
    model = build_classifier(backbone, len(classes), head=head)
    train_counts = manifest[manifest["split"] == "train"]["label"].value_counts().to_dict()
    strategy, reasons = decide_strategy(config, probe_summary.val_accuracy, train_counts)
    for reason in reasons:
        logger.info("strategy %s: %s", strategy, reason)

    history, best_epoch = [], 0
    if strategy == "full":
        train_set = split_dataset(manifest, "train", classes, train_transform(backbone.data_config, config.hflip))
        class_weights = balanced_class_weights(train_set.targets, len(classes)) if config.class_weighted else None
        train_loader = make_loader(
            train_set,
            config.batch_size,
            shuffle=True,
            workers=runtime.workers,
            seed=config.seed,
            pin_memory=runtime.pin_memory,
        )
        val_loader = make_loader(
            split_dataset(manifest, "val", classes, eval_transform(backbone.data_config)),
            runtime.batch_size,
            workers=runtime.workers,
            pin_memory=runtime.pin_memory,
        )
        model, records, best_epoch = fine_tune_all_layers(
            model,
            train_loader,
            val_loader,
            config,
            runtime.device,
            keep_probe_if_better=config.strategy == "auto",
            class_weights=class_weights,
        )
        history = [asdict(r) for r in records]
        if best_epoch == 0:
            strategy = "linear-probe"
            reasons.append(
                f"no fine-tuned epoch beat the probe's val accuracy {records[0].val_accuracy:.3f}: kept the probe"
            )
        output_dir.mkdir(parents=True, exist_ok=True)
        save_png(learning_curves_figure(records), output_dir / LEARNING_CURVES_FILE)
    else:
        history = [
            {
                "epoch": 0,
                "train_loss": None,
                "train_accuracy": probe_summary.train_accuracy,
                "val_loss": None,
                "val_accuracy": probe_summary.val_accuracy,
            }
        ]
    val_accuracy = next(r["val_accuracy"] for r in history if r["epoch"] == best_epoch)
    training = Training(
        strategy=strategy,
        requested_strategy=config.strategy,
        reasons=reasons,
        best_epoch=best_epoch,
        val_accuracy=val_accuracy,
        probe_val_accuracy=probe_summary.val_accuracy,
        history=history,
        config=asdict(config),
    )
    model_config = ModelConfig(
        backbone=backbone.name, classes=classes, data_config=asdict(backbone.data_config), strategy=strategy
    )
    save_model(output_dir, model, model_config)
    training.write(output_dir)
    return training
