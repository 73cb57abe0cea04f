"""Helpers the steps share: the prepared manifest with local image paths, and backbone features of a split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from tlops.data.loading import localize, make_loader, split_dataset
from tlops.data.preprocessing import eval_transform
from tlops.models.backbones import Backbone, feature_extractor
from tlops.steps.outputs import load_prepared
from tlops.steps.runtime import Runtime
from tlops.train.probe import extract_features


def localized_manifest(data_dir: Path, runtime: Runtime) -> tuple[pd.DataFrame, list[str]]:
    """The prepared manifest with a ``local_path`` column (S3 images fetched into the cache), and the classes."""
    manifest, prepared = load_prepared(data_dir)
    return localize(manifest, runtime.cache_dir / "images", runtime.s3), prepared.classes


def backbone_features(
    backbone: Backbone, manifest: pd.DataFrame, split: str, classes: list[str], runtime: Runtime
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and class ids of one split, from the frozen backbone with its weights' preprocessing."""
    dataset = split_dataset(manifest, split, classes, eval_transform(backbone.data_config))
    loader = make_loader(dataset, runtime.batch_size, workers=runtime.workers, pin_memory=runtime.pin_memory)
    return extract_features(
        feature_extractor(backbone), loader, runtime.device, desc=f"{backbone.name} {split} features"
    )
