"""The extract-features step: run the frozen backbone once over every split, cache features, fit the probe."""

from __future__ import annotations

import logging
from pathlib import Path

from tlops.models.backbones import load_backbone
from tlops.models.names import PIXELS_BASELINE, check_backbone_name
from tlops.steps.common import localized_manifest
from tlops.steps.config import RunConfig, SelectionConfig, StorageConfig
from tlops.steps.features import dataset_features, open_feature_cache
from tlops.steps.outputs import PreparedData, ProbeSummary, write_features, write_probe
from tlops.steps.runtime import Runtime
from tlops.train.config import TrainConfig
from tlops.train.probe import fit_linear_head

logger = logging.getLogger(__name__)


def extract_and_probe(
    data_dir: Path,
    backbone_name: str,
    features_dir: Path,
    probe_dir: Path,
    runtime: Runtime,
    *,
    image_size: int = SelectionConfig.image_size,
    seed: int = RunConfig.seed,
    class_weighted: bool = TrainConfig.class_weighted,
    feature_cache: str = StorageConfig.feature_cache,
) -> ProbeSummary:
    """Features of every split from the feature cache (one backbone pass on a miss), then the linear head on them.

    When select-backbone scored this backbone on the same data, its features are in the cache and no backbone
    runs here.

    Writes ``features.safetensors`` into ``features_dir``, and ``head.safetensors`` and ``probe_summary.json``
    into ``probe_dir``.

    Args:
        data_dir: Output of the prepare-data step.
        backbone_name: The backbone.
        features_dir: Where the features go.
        probe_dir: Where the probe goes.
        runtime: Device, S3 client and caches.
        image_size: Input size; 0 for the backbone's own.
        seed: Seed of the logistic regression.
        class_weighted: Weight each class inversely to its frequency.
        feature_cache: Folder or ``s3://`` prefix of the feature cache (``""``: the runtime's cache folder).

    Returns:
        The probe summary (chosen C, train and val accuracy, backbone, input size).

    Raises:
        TlopsError: when the backbone name is unknown, ``data_dir`` is not a prepare-data output, or the feature
            cache cannot be written.
    """
    if backbone_name != PIXELS_BASELINE:  # select-backbone ships the baseline when it scores best
        check_backbone_name(backbone_name)
    PreparedData.read(data_dir)
    cache = open_feature_cache(feature_cache, runtime)
    manifest, classes = localized_manifest(data_dir, runtime)
    backbone = load_backbone(backbone_name, image_size=image_size or None, s3=runtime.s3, cache_dir=runtime.cache_dir)
    features = dataset_features(backbone, manifest, classes, runtime, cache)
    splits = features.splits
    write_features(features_dir, splits)
    probe = fit_linear_head(splits["train"], splits["val"], len(classes), seed=seed, class_weighted=class_weighted)
    summary = ProbeSummary(
        backbone=backbone_name,
        classes=classes,
        C=probe.C,
        val_accuracy=probe.val_accuracy,
        train_accuracy=probe.train_accuracy,
        image_size=backbone.data_config.input_size,
        num_features=backbone.num_features,
        class_weighted=class_weighted,
        cache_hit=features.cache_hit,
        feature_seconds=round(features.seconds, 2),
        cache_entry=features.entry,
    )
    write_probe(probe_dir, probe.head, summary)
    logger.info("linear probe on %s: val accuracy %.4f (C=%s)", backbone_name, probe.val_accuracy, probe.C)
    return summary
