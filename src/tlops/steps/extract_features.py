"""The extract-features step: run the frozen backbone once over every split, cache features, fit the probe."""

from __future__ import annotations

import json
from pathlib import Path

from tlops.models.backbones import load_backbone
from tlops.steps.common import backbone_features, localized_manifest
from tlops.steps.runtime import Runtime
from tlops.train.probe import FEATURES_FILE, PROBE_SUMMARY_FILE, fit_linear_head, save_features, save_probe


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
    splits = {
        split: backbone_features(backbone, manifest, split, classes, runtime) for split in ("train", "val", "test")
    }
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
    return json.loads((probe_dir / PROBE_SUMMARY_FILE).read_text())
