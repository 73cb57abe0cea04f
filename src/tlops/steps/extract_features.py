"""The extract-features step: run the frozen backbone once over every split, cache features, fit the probe."""

from __future__ import annotations

import logging
from pathlib import Path

from tlops.models.names import TFIDF_BASELINE
from tlops.steps.config import RunConfig, SelectionConfig, StorageConfig
from tlops.steps.encoders import encoder_features, input_size, load_encoder, prepared_manifest, targets_of, texts_of
from tlops.steps.features import open_feature_cache
from tlops.steps.outputs import TFIDF_DIR, PreparedData, ProbeSummary, write_features, write_probe
from tlops.steps.runtime import Runtime
from tlops.tasks import task_of
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
    prepared = PreparedData.read(data_dir)
    task = task_of(prepared.task)
    backbone_name = backbone_name or task.default_backbones[0]
    if backbone_name != task.baseline:  # select-backbone ships the baseline when it scores best
        task.check_backbone(backbone_name)
    if backbone_name == TFIDF_BASELINE:
        return _tfidf_probe(data_dir, features_dir, probe_dir, runtime, seed=seed, class_weighted=class_weighted)
    cache = open_feature_cache(feature_cache, runtime)
    manifest, classes, _ = prepared_manifest(data_dir, runtime)
    backbone = load_encoder(prepared.task, backbone_name, runtime, image_size=image_size)
    features = encoder_features(prepared.task, backbone, manifest, classes, runtime, cache)
    splits = features.splits
    write_features(features_dir, splits)
    probe = fit_linear_head(splits["train"], splits["val"], len(classes), seed=seed, class_weighted=class_weighted)
    summary = ProbeSummary(
        backbone=backbone_name,
        classes=classes,
        C=probe.C,
        val_accuracy=probe.val_accuracy,
        train_accuracy=probe.train_accuracy,
        image_size=input_size(backbone),
        num_features=backbone.num_features,
        class_weighted=class_weighted,
        cache_hit=features.cache_hit,
        feature_seconds=round(features.seconds, 2),
        cache_entry=features.entry,
    )
    write_probe(probe_dir, probe.head, summary)
    logger.info("linear probe on %s: val accuracy %.4f (C=%s)", backbone_name, probe.val_accuracy, probe.C)
    return summary


def _tfidf_probe(
    data_dir: Path, features_dir: Path, probe_dir: Path, runtime: Runtime, *, seed: int, class_weighted: bool
) -> ProbeSummary:
    """The text baseline's "probe": TF-IDF + logistic regression fitted on the training texts, scored on val.

    It has no dense features: ``features_dir`` is left empty and the classifier is saved into ``probe_dir``
    (:meth:`tlops.models.tfidf.TfidfClassifier.save`) beside the summary.
    """
    from tlops.evaluation.metrics import accuracy_of
    from tlops.models.tfidf import DEFAULT_C, TfidfClassifier

    manifest, classes, _ = prepared_manifest(data_dir, runtime)
    train_texts, val_texts = texts_of(manifest, "train"), texts_of(manifest, "val")
    train_y, val_y = targets_of(manifest, "train", classes), targets_of(manifest, "val", classes)
    model = TfidfClassifier().fit(train_texts, train_y, class_weight="balanced" if class_weighted else None)
    features_dir.mkdir(parents=True, exist_ok=True)
    probe_dir.mkdir(parents=True, exist_ok=True)
    model.save(probe_dir / TFIDF_DIR)
    summary = ProbeSummary(
        backbone=TFIDF_BASELINE,
        classes=classes,
        C=DEFAULT_C,
        val_accuracy=accuracy_of(model.logits(val_texts), val_y, class_weighted) if len(val_y) else 0.0,
        train_accuracy=accuracy_of(model.logits(train_texts), train_y, class_weighted),
        image_size=0,
        num_features=len(model.vectorizer.vocabulary_),
        class_weighted=class_weighted,
    )
    summary.write(probe_dir)
    logger.info("tfidf baseline: val accuracy %.4f (C=%s)", summary.val_accuracy, DEFAULT_C)
    return summary
