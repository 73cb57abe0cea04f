"""The pipeline steps as plain functions over directories: what the KFP components, the CLI and tests call.

Each step reads the artifacts of earlier steps from directories, writes its own into ``output_dir`` and
returns a summary. Dependencies (device, S3 client, caches) come in through :class:`~tlops.runtime.Runtime`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from tlops.backbones import Backbone, DataConfig, build_classifier, feature_extractor, load_backbone
from tlops.data import load_prepared
from tlops.datasets import eval_transform, localize, make_loader, split_dataset, train_transform
from tlops.errors import TlopsError
from tlops.features import (
    FEATURES_FILE,
    PROBE_SUMMARY_FILE,
    GlobalScaler,
    extract_features,
    fit_linear_head,
    load_head,
    save_features,
    save_probe,
)
from tlops.model_io import load_classifier, read_model_config, save_classifier
from tlops.runtime import Runtime
from tlops.training import TrainConfig, balanced_class_weights, decide_strategy, fine_tune_all_layers

SELECTION_FILE = "selection.json"
TRAINING_FILE = "training.json"
EVALUATION_FILE = "evaluation.json"
PREDICTIONS_FILE = "predictions.safetensors"


def localized_manifest(data_dir: Path, runtime: Runtime) -> tuple[pd.DataFrame, list[str]]:
    manifest, prepared = load_prepared(data_dir)
    return localize(manifest, runtime.cache_dir / "images", runtime.s3), prepared.classes


def _features(backbone: Backbone, manifest: pd.DataFrame, split: str, classes: list[str], runtime: Runtime):
    dataset = split_dataset(manifest, split, classes, eval_transform(backbone.data_config))
    loader = make_loader(dataset, runtime.batch_size, workers=runtime.workers)
    return extract_features(
        feature_extractor(backbone), loader, runtime.device, desc=f"{backbone.name} {split} features"
    )


@dataclass
class Selection:
    """The backbone ranking and the choice.

    Attributes:
        chosen: Name of the chosen backbone.
        ranking: One entry per candidate, best first: name, cv_accuracy, images, seconds.
        reasons: Why the chosen backbone won.
    """

    chosen: str
    ranking: list[dict]
    reasons: list[str]


def select_backbone(
    data_dir: Path,
    candidates: list[str],
    output_dir: Path,
    runtime: Runtime,
    *,
    image_size: int | None = None,
    max_images_per_class: int = 40,
    folds: int = 5,
    seed: int = 0,
) -> Selection:
    """Rank candidate backbones by cross-validated linear-probe accuracy on (a sample of) the training split.

    Args:
        data_dir: Output of the prepare-data step.
        candidates: Backbone names.
        output_dir: Where ``selection.json`` is written.
        runtime: Device, S3 client and caches.
        image_size: Input size override for all candidates.
        max_images_per_class: Training images per class used for scoring (the budget).
        folds: Cross-validation folds (fewer when a class is smaller).
        seed: Seed of the sample and folds.

    Raises:
        TlopsError: when no candidate is given.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    candidates = list(dict.fromkeys(candidates))
    if not candidates:
        raise TlopsError("no candidate backbones given; pass at least one, e.g. --backbones efficientnet_lite0")
    if len(candidates) == 1:
        selection = Selection(candidates[0], [{"name": candidates[0]}], ["only one candidate: nothing to compare"])
    else:
        manifest, classes = localized_manifest(data_dir, runtime)
        train = manifest[manifest["split"] == "train"]
        sample = train.sample(frac=1.0, random_state=seed).groupby("label").head(max_images_per_class)
        k = max(2, min(folds, int(sample["label"].value_counts().min())))
        ranking = []
        for name in candidates:
            start = time.perf_counter()
            backbone = load_backbone(name, image_size=image_size, s3=runtime.s3, cache_dir=runtime.cache_dir)
            features, targets = _features(backbone, sample, "train", classes, runtime)
            probe = make_pipeline(GlobalScaler(), LogisticRegression(C=0.1, max_iter=2000, random_state=seed))
            scores = cross_val_score(
                probe, features.numpy(), targets.numpy(), cv=StratifiedKFold(k, shuffle=True, random_state=seed)
            )
            ranking.append(
                {
                    "name": name,
                    "cv_accuracy": float(np.mean(scores)),
                    "cv_std": float(np.std(scores)),
                    "num_features": backbone.num_features,
                    "images": len(sample),
                    "seconds": round(time.perf_counter() - start, 2),
                }
            )
        ranking.sort(key=lambda r: (-r["cv_accuracy"], r["seconds"]))
        best, runner_up = ranking[0], ranking[1]
        selection = Selection(
            best["name"],
            ranking,
            [
                f"{best['name']} has the best {k}-fold linear-probe accuracy {best['cv_accuracy']:.3f} "
                f"(± {best['cv_std']:.3f}) on {best['images']} training images; next: {runner_up['name']} "
                f"{runner_up['cv_accuracy']:.3f}"
            ],
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / SELECTION_FILE).write_text(json.dumps(asdict(selection), indent=2))
    for reason in selection.reasons:
        print(f"backbone selection: {reason}")
    return selection


def extract_and_probe(
    data_dir: Path,
    backbone_name: str,
    features_dir: Path,
    probe_dir: Path,
    runtime: Runtime,
    *,
    image_size: int | None = None,
    seed: int = 0,
    class_weighted: bool = False,
) -> dict:
    """Run the frozen backbone once over every split, cache the features, fit the linear head on them.

    Writes ``features.safetensors`` into ``features_dir``, and ``head.safetensors`` and ``probe_summary.json``
    into ``probe_dir``.

    Returns:
        The probe summary (chosen C, train and val accuracy, backbone, input size).
    """
    manifest, classes = localized_manifest(data_dir, runtime)
    backbone = load_backbone(backbone_name, image_size=image_size, s3=runtime.s3, cache_dir=runtime.cache_dir)
    splits = {split: _features(backbone, manifest, split, classes, runtime) for split in ("train", "val", "test")}
    features_dir.mkdir(parents=True, exist_ok=True)
    save_features(features_dir / FEATURES_FILE, splits)
    probe = fit_linear_head(splits["train"], splits["val"], len(classes), seed=seed, class_weighted=class_weighted)
    extra = {
        "image_size": backbone.data_config.input_size,
        "num_features": backbone.num_features,
        "class_weighted": class_weighted,
    }
    save_probe(probe_dir, probe, backbone_name, extra)
    print(f"linear probe on {backbone_name}: val accuracy {probe.val_accuracy:.4f} (C={probe.C})")
    return read_json(probe_dir, PROBE_SUMMARY_FILE)


def fine_tune(data_dir: Path, probe_dir: Path, output_dir: Path, config: TrainConfig, runtime: Runtime) -> dict:
    """Produce the final classifier with the chosen transfer strategy, starting from the probe head.

    Writes the model (``model.safetensors``, ``model_config.json``), ``training.json`` and, when layers were
    fine-tuned, ``learning_curves.png`` into ``output_dir``.

    Returns:
        The training summary: strategy, reasons, history, best epoch, val accuracy.
    """
    from tlops.plots import learning_curves_figure, save_png

    probe_summary = json.loads((Path(probe_dir) / PROBE_SUMMARY_FILE).read_text())
    manifest, classes = localized_manifest(data_dir, runtime)
    backbone = load_backbone(
        probe_summary["backbone"], image_size=probe_summary["image_size"], s3=runtime.s3, cache_dir=runtime.cache_dir
    )
    model = build_classifier(backbone, len(classes), head=load_head(probe_dir))
    train_counts = manifest[manifest["split"] == "train"]["label"].value_counts().to_dict()
    strategy, reasons = decide_strategy(config, probe_summary["val_accuracy"], train_counts)
    for reason in reasons:
        print(f"strategy {strategy}: {reason}")

    history, best_epoch = [], 0
    if strategy == "full":
        train_set = split_dataset(manifest, "train", classes, train_transform(backbone.data_config, config.hflip))
        class_weights = balanced_class_weights(train_set.targets, len(classes)) if config.class_weighted else None
        train_loader = make_loader(
            train_set,
            config.batch_size,
            shuffle=True,
            workers=config.workers,
            seed=config.seed,
        )
        val_loader = make_loader(
            split_dataset(manifest, "val", classes, eval_transform(backbone.data_config)),
            runtime.batch_size,
            workers=config.workers,
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
        save_png(learning_curves_figure(records), output_dir / "learning_curves.png")
    else:
        history = [
            {
                "epoch": 0,
                "train_loss": None,
                "train_accuracy": probe_summary["train_accuracy"],
                "val_loss": None,
                "val_accuracy": probe_summary["val_accuracy"],
            }
        ]
    val_accuracy = next(r["val_accuracy"] for r in history if r["epoch"] == best_epoch)
    summary = {
        "strategy": strategy,
        "requested_strategy": config.strategy,
        "reasons": reasons,
        "best_epoch": best_epoch,
        "val_accuracy": val_accuracy,
        "probe_val_accuracy": probe_summary["val_accuracy"],
        "history": history,
        "config": asdict(config),
    }
    save_classifier(
        model,
        output_dir,
        backbone=backbone.name,
        classes=classes,
        data_config=backbone.data_config,
        extra={"strategy": strategy},
    )
    (output_dir / TRAINING_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def evaluate(data_dir: Path, model_dir: Path, output_dir: Path, runtime: Runtime) -> dict:
    """Evaluate a trained classifier on the test split.

    Writes ``evaluation.json`` (metrics, per-class report, confusion matrix), ``confusion_matrix.png`` and
    ``reliability_diagram.png`` into ``output_dir``.

    Returns:
        The evaluation as written to ``evaluation.json``.
    """
    from tlops.evaluation import compute_metrics, predict
    from tlops.plots import confusion_matrix_figure, reliability_figure, save_png

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


def read_json(directory: Path, name: str) -> dict:
    """Read a step's JSON output."""
    return json.loads((Path(directory) / name).read_text())


__all__ = ["evaluate", "extract_and_probe", "fine_tune", "read_json", "read_model_config", "select_backbone"]
