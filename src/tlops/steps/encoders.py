"""What a task's candidates are to the steps: load one by name, and its features of a prepared dataset.

Images load a backbone (:func:`tlops.models.backbones.load_backbone`) and run it over decoded images; texts load an
encoder (:func:`tlops.models.text_encoders.load_text_encoder`) and embed the manifest's texts. Both write the same
content-addressed feature cache, so every later step reads features the same way. A detection dataset is scored
on the crops of its labelled boxes (:mod:`tlops.steps.box_crops`), which are images with classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlops.data.prepared import OBJECT_DETECTION, TEXT_CLASSIFICATION
from tlops.models.feature_cache import FeatureCache
from tlops.steps.features import FeatureSet
from tlops.steps.outputs import load_prepared
from tlops.steps.runtime import Runtime

TEXT_TASK = TEXT_CLASSIFICATION


def is_text(task: str) -> bool:
    """Whether prepared data of ``task`` holds texts (in the manifest) rather than images."""
    return task == TEXT_TASK


def is_detection(task: str) -> bool:
    """Whether prepared data of ``task`` holds images with boxes (one manifest row per image, its boxes as JSON)."""
    return task == OBJECT_DETECTION


def prepared_manifest(data_dir: Path, runtime: Runtime) -> tuple[pd.DataFrame, list[str], str]:
    """The manifest ready for the task's encoder, its classes and the task.

    Images are fetched into the cache; texts are as they are; a detection dataset gives the crops of its boxes
    (:func:`tlops.steps.box_crops.box_crop_manifest`), labelled by their class.
    """
    from tlops.steps.common import localized_manifest

    manifest, prepared = load_prepared(data_dir)
    if is_text(prepared.task):
        return manifest, prepared.classes, prepared.task
    manifest, classes = localized_manifest(data_dir, runtime)
    if is_detection(prepared.task):
        from tlops.steps.box_crops import CROPS_DIR, box_crop_manifest

        manifest = box_crop_manifest(manifest, runtime.cache_dir / CROPS_DIR)
    return manifest, classes, prepared.task


def load_encoder(task: str, name: str, runtime: Runtime, *, image_size: int = 0) -> Any:
    """The backbone (images) or text encoder (texts) named ``name``, loaded without the network."""
    if is_text(task):
        from tlops.models.text_encoders import load_text_encoder

        return load_text_encoder(name, s3=runtime.s3, cache_dir=runtime.cache_dir)
    from tlops.models.backbones import load_backbone

    return load_backbone(name, image_size=image_size or None, s3=runtime.s3, cache_dir=runtime.cache_dir)


def encoder_features(
    task: str, encoder: Any, manifest: pd.DataFrame, classes: list[str], runtime: Runtime, cache: FeatureCache
) -> FeatureSet:
    """Features of every split, from the cache or one pass of the encoder (written to the cache)."""
    if is_text(task):
        from tlops.steps.text_features import text_dataset_features

        return text_dataset_features(encoder, manifest, classes, runtime, cache)
    from tlops.steps.features import dataset_features

    return dataset_features(encoder, manifest, classes, runtime, cache)


def input_size(encoder: Any) -> int:
    """The image size a backbone takes (0 for a text encoder: its length limit is in its preprocessing)."""
    data_config = getattr(encoder, "data_config", None)
    return int(data_config.input_size) if data_config is not None else 0


def targets_of(manifest: pd.DataFrame, split: str, classes: list[str]) -> np.ndarray:
    """Class ids ``(N,)`` int64 of one split's rows, in manifest order."""
    index = {label: i for i, label in enumerate(classes)}
    return np.asarray([index[label] for label in manifest.loc[manifest["split"] == split, "label"]], dtype=np.int64)


def texts_of(manifest: pd.DataFrame, split: str) -> list[str]:
    """One split's texts, in manifest order."""
    return [str(text) for text in manifest.loc[manifest["split"] == split, "text"]]
