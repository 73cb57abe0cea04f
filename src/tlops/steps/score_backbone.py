"""The score-backbone step: one candidate's transferability scores on the training split, and its cost."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from tlops.evaluation.transferability import knn_accuracy, logme, probe_accuracy
from tlops.models.names import BASELINES, TFIDF_BASELINE
from tlops.models.threads import single_blas_thread
from tlops.settings import SettingError
from tlops.steps.config import RunConfig, SelectionConfig, StorageConfig
from tlops.steps.encoders import encoder_features, input_size, load_encoder, prepared_manifest, targets_of, texts_of
from tlops.steps.features import open_feature_cache
from tlops.steps.outputs import BackboneScore, PreparedData
from tlops.steps.runtime import Runtime
from tlops.tasks import task_of
from tlops.train.config import TrainConfig

logger = logging.getLogger(__name__)

DEFAULT_FOLDS = 5


def score_backbone(
    data_dir: Path,
    backbone_name: str,
    output_dir: Path,
    runtime: Runtime,
    *,
    image_size: int = SelectionConfig.image_size,
    feature_cache: str = StorageConfig.feature_cache,
    scoring_images_per_class: int = SelectionConfig.scoring_images_per_class,
    class_weighted: bool = TrainConfig.class_weighted,
    folds: int = DEFAULT_FOLDS,
    seed: int = RunConfig.seed,
) -> BackboneScore:
    """Features of every split (cached, so the extract step reuses them), then scores on the training split.

    Scores: cross-validated linear-probe accuracy, cross-validated cosine kNN accuracy and LogME; cost: parameters,
    FLOPs per image and measured latency on the runtime's device. Writes ``score.json`` into ``output_dir``.

    Args:
        data_dir: Output of the prepare-data step.
        backbone_name: The candidate, or ``pixels`` for the no-transfer baseline.
        output_dir: Where ``score.json`` is written.
        runtime: Device, S3 client, workers and caches.
        image_size: Input size; 0 for the backbone's own (the baseline always uses 32).
        feature_cache: Folder or ``s3://`` prefix of the feature cache (``""``: the runtime's cache folder).
        scoring_images_per_class: Training images per class the scores use (0: all).
        class_weighted: Score the probe by balanced accuracy with class-balanced weights.
        folds: Cross-validation folds (fewer when a class is smaller).
        seed: Seed of the sample and the folds.

    Raises:
        TlopsError: for an unknown backbone, a folder that is not a prepare-data output, more scoring images
            per class than the training split has, or a feature cache that cannot be written.
    """
    prepared = PreparedData.read(data_dir)
    task = task_of(prepared.task)
    backbone_name = backbone_name or task.default_backbones[0]
    if backbone_name != task.baseline:
        task.check_backbone(backbone_name)
    _check_scoring_images(prepared, scoring_images_per_class)
    if backbone_name == TFIDF_BASELINE:
        return _score_tfidf(data_dir, output_dir, runtime, scoring_images_per_class, class_weighted, folds, seed)
    cache = open_feature_cache(feature_cache, runtime)
    manifest, classes, _ = prepared_manifest(data_dir, runtime)
    backbone = load_encoder(prepared.task, backbone_name, runtime, image_size=image_size)
    features = encoder_features(prepared.task, backbone, manifest, classes, runtime, cache)
    x, y = (tensor.numpy() for tensor in features.splits["train"])
    if scoring_images_per_class:
        rows = _sample_per_class(y, scoring_images_per_class, seed)
        x, y = x[rows], y[rows]
    start = time.perf_counter()
    with single_blas_thread():
        probe = probe_accuracy(x, y, folds=folds, seed=seed, class_weighted=class_weighted)
        knn = knn_accuracy(x, y, folds=folds, seed=seed)
        evidence = logme(x, y)
    score = BackboneScore(
        name=backbone_name,
        probe_accuracy=probe.mean,
        probe_std_error=probe.std_error,
        knn_accuracy=knn.mean,
        knn_std_error=knn.std_error,
        knn_k=int(knn.chosen),
        logme=float(evidence),
        params=int(features.cost.get("params", 0)),
        flops=int(features.cost.get("flops", 0)),
        latency_ms=float(features.cost.get("latency_ms", 0.0)),
        device=str(features.cost.get("device", runtime.device)),
        num_features=int(x.shape[1]),
        input_size=input_size(backbone),
        images=len(y),
        folds=probe.folds,
        scoring_seconds=round(time.perf_counter() - start, 2),
        feature_seconds=round(features.seconds, 2),
        extraction_seconds=round(features.extraction_seconds, 2),
        cache_hit=features.cache_hit,
        cache_entry=features.entry,
        probe_fold_accuracies=list(probe.fold_scores),
        task=prepared.task,
    )
    score.write(output_dir)
    logger.info(
        "%s: probe %.3f ± %.3f, kNN %.3f (k=%d), LogME %.3f on %d training %s (%s, scored in %.1f s)",
        backbone_name,
        score.probe_accuracy,
        score.probe_std_error,
        score.knn_accuracy,
        score.knn_k,
        score.logme,
        score.images,
        BASELINES[task.baseline].unit,
        "features from the cache" if score.cache_hit else f"features extracted in {score.feature_seconds:.1f} s",
        score.scoring_seconds,
    )
    return score


def _score_tfidf(
    data_dir: Path,
    output_dir: Path,
    runtime: Runtime,
    scoring_images_per_class: int,
    class_weighted: bool,
    folds: int,
    seed: int,
) -> BackboneScore:
    """The text baseline's score: TF-IDF + logistic regression on the same folds as the encoders' probes.

    It has no features to cache, no kNN and no LogME (0 in the record): it is compared by its probe accuracy.
    """
    from tlops.evaluation.tfidf_probe import tfidf_probe_accuracy

    manifest, classes, _ = prepared_manifest(data_dir, runtime)
    texts, y = texts_of(manifest, "train"), targets_of(manifest, "train", classes)
    if scoring_images_per_class:
        rows = _sample_per_class(y, scoring_images_per_class, seed)
        texts, y = [texts[i] for i in rows], y[rows]
    start = time.perf_counter()
    with single_blas_thread():
        probe = tfidf_probe_accuracy(texts, y, folds=folds, seed=seed, class_weighted=class_weighted)
    seconds = round(time.perf_counter() - start, 2)
    score = BackboneScore(
        name=TFIDF_BASELINE,
        probe_accuracy=probe.mean,
        probe_std_error=probe.std_error,
        knn_accuracy=0.0,
        knn_std_error=0.0,
        knn_k=0,
        logme=0.0,
        params=0,
        flops=0,
        latency_ms=0.0,
        device="cpu",
        num_features=0,
        input_size=0,
        images=len(y),
        folds=probe.folds,
        scoring_seconds=seconds,
        feature_seconds=0.0,
        extraction_seconds=0.0,
        cache_hit=False,
        cache_entry="",
        probe_fold_accuracies=list(probe.fold_scores),
    )
    score.write(output_dir)
    logger.info("tfidf: probe %.3f ± %.3f on %d training texts (%.1f s)", probe.mean, probe.std_error, len(y), seconds)
    return score


def _check_scoring_images(prepared: PreparedData, per_class: int) -> None:
    """Refuse a scoring sample larger than the smallest class of the training split."""
    path = ("selection.scoring_images_per_class",)
    if per_class < 0:
        raise SettingError(path, "{0} " + f"{per_class} is negative: give a count, or 0 for all images")
    train = prepared.counts.get("train", {})
    if per_class and train:
        smallest, count = min(train.items(), key=lambda item: item[1])
        if per_class > count:
            raise SettingError(
                path,
                "{0} " + f"{per_class} asks for more images than the training split has: class {smallest!r} has "
                f"{count}; use {count} or fewer, or 0 for all images",
            )


def _sample_per_class(targets: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Row indices of ``per_class`` seeded random rows of each class, in their original order."""
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(np.flatnonzero(targets == label))[:per_class] for label in np.unique(targets)]
    return np.sort(np.concatenate(rows))
