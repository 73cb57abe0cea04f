"""Probed digits: scikit-learn's handwritten digits prepared, their features extracted and a probe head fitted.

Two sizes: :func:`probe_digits` (10 images a class at 64 px, for the training steps) and :func:`probe_small`
(8 a class at 32 px, with a cache of its own, for the fine-tuning engine's runs).
"""

from __future__ import annotations

from pathlib import Path

from tlops.data.demo import DIGIT_NAMES, write_digits_imagefolder
from tlops.data.prepare import SplitConfig, prepare_data
from tlops.steps.extract_features import extract_and_probe
from tlops.steps.runtime import Runtime

IMAGE_SIZE = 64
PER_CLASS = 10
SMALL_SIZE = 32


def probe_digits(root: Path, runtime: Runtime) -> dict[str, Path]:
    """Digits ImageFolder -> prepared data -> cached features and the probe head (EfficientNet-Lite0 at 64 px)."""
    images = write_digits_imagefolder(root / "images", per_class=PER_CLASS)
    data_dir, features_dir, probe_dir = root / "data", root / "features", root / "probe"
    prepared = prepare_data(str(images), data_dir, SplitConfig(seed=0, workers=2))
    assert prepared.classes == sorted(DIGIT_NAMES)
    summary = extract_and_probe(data_dir, "efficientnet_lite0", features_dir, probe_dir, runtime, image_size=IMAGE_SIZE)
    assert summary.image_size == IMAGE_SIZE and summary.backbone == "efficientnet_lite0"
    return {"root": root, "data": data_dir, "features": features_dir, "probe": probe_dir}


def probe_small(root: Path) -> dict[str, Path]:
    """8 digits a class prepared, probed at 32 px with a feature cache under ``root/cache``: the paths."""
    images = write_digits_imagefolder(root / "images", per_class=8)
    runtime = Runtime(cache_dir=root / "cache", batch_size=32)
    prepare_data(str(images), root / "data", SplitConfig(seed=0, workers=2))
    extract_and_probe(root / "data", "efficientnet_lite0", root / "x" / "features", root / "x" / "probe", runtime,
                      image_size=SMALL_SIZE)  # fmt: skip
    return {"data": root / "data", "probe": root / "x" / "probe", "features": root / "x" / "features",
            "cache": root / "cache"}  # fmt: skip
