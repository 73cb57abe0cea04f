"""The audit step: likely label errors, near-duplicates and outliers of a prepared dataset, from cached features.

The features are the extract-features step's (``features_dir``) or the chosen backbone's from the feature cache
(one backbone pass on a miss). Confident learning runs on out-of-fold probabilities of a linear probe over
train+val; near-duplicates and outliers over every split (:mod:`tlops.evaluation.audit`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from tlops.errors import TlopsError
from tlops.evaluation.audit.confident import find_label_issues
from tlops.evaluation.audit.out_of_fold import out_of_fold_probabilities
from tlops.evaluation.audit.similarity import knn_outliers, near_duplicates
from tlops.models.names import PIXELS_BASELINE, TFIDF_BASELINE
from tlops.steps.audit_report import THUMBNAILS, AuditRecord, snippet, write_audit
from tlops.steps.config import AuditConfig, RunConfig, SelectionConfig, StorageConfig
from tlops.steps.encoders import encoder_features, is_detection, is_text, load_encoder, prepared_manifest
from tlops.steps.features import SPLITS, open_feature_cache
from tlops.steps.outputs import PreparedData, read_features
from tlops.steps.runtime import Runtime
from tlops.tasks import task_of

logger = logging.getLogger(__name__)

NEEDS = "the audit needs image or text classification data with a feature backbone"
MAX_DUPLICATES_LISTED = 200


def check_auditable(task: str, backbone: str) -> None:
    """Refuse what the audit cannot read: detection data, and the TF-IDF or raw-pixel baselines (no backbone).

    Raises:
        TlopsError: naming the problem and the fix.
    """
    if is_detection(task):
        raise TlopsError(f"{NEEDS}; this is {task} data: audit an image-classification dataset instead")
    if backbone in (TFIDF_BASELINE, PIXELS_BASELINE):
        raise TlopsError(f"{NEEDS}, not the {backbone} baseline: pass --backbone with an image backbone or encoder")


def audit_dataset(
    data_dir: Path,
    output: Path,
    runtime: Runtime,
    *,
    backbone_name: str = "",
    features_dir: Path | None = None,
    audit: AuditConfig | None = None,
    seed: int = RunConfig.seed,
    image_size: int = SelectionConfig.image_size,
    feature_cache: str = StorageConfig.feature_cache,
) -> AuditRecord:
    """Audit a prepared dataset and write ``audit.json``, ``audit.md`` and a contact sheet into ``output``.

    Args:
        data_dir: Output of the prepare-data step.
        output: Where the audit goes.
        runtime: Device, S3 client and caches.
        backbone_name: The backbone or encoder (empty: the task's own).
        features_dir: The extract-features features/ folder (``None``: the backbone's from the feature cache).
        audit: The audit settings (``None``: the defaults).
        seed: Seed of the k-fold.
        image_size: Input size (0: the backbone's own).
        feature_cache: Folder or ``s3://`` prefix of the feature cache.

    Returns:
        The audit record.

    With ``features_dir`` (the pipeline) detection data gets a record saying the audit does not apply.

    Raises:
        TlopsError: for detection data (without ``features_dir``), a baseline without features, or a class with
            fewer than 2 train+val examples.
    """
    audit = audit or AuditConfig()
    prepared = PreparedData.read(data_dir)
    if features_dir is not None and is_detection(prepared.task):  # the pipeline's audit of a detection run
        return _not_applicable(output, prepared, backbone_name, audit, "the audit reads classification data")
    task = task_of(prepared.task)
    backbone_name = backbone_name or task.default_backbones[0]
    if features_dir is not None and backbone_name == task.baseline:
        # The pipeline shipped the baseline (no features): audit with the task's own backbone from the cache.
        logger.info("audit: %s has no features, auditing with %s", backbone_name, task.default_backbones[0])
        backbone_name, features_dir = task.default_backbones[0], None
    check_auditable(prepared.task, backbone_name)
    manifest, classes, _ = prepared_manifest(data_dir, runtime)
    if features_dir is not None:
        splits = read_features(features_dir)
    else:
        task.check_backbone(backbone_name)
        encoder = load_encoder(prepared.task, backbone_name, runtime, image_size=image_size)
        cache = open_feature_cache(feature_cache, runtime)
        splits = encoder_features(prepared.task, encoder, manifest, classes, runtime, cache).splits
    rows = pd.concat([manifest[manifest["split"] == split] for split in SPLITS], ignore_index=True)
    features = np.concatenate([splits[split][0].float().numpy() for split in SPLITS])
    labels = np.concatenate([splits[split][1].numpy() for split in SPLITS])
    record, thumbnails = _audit(rows, features, labels, classes, prepared.task, backbone_name, audit, seed)
    write_audit(output, record, thumbnails)
    logger.info("audit: %s", record.summary())
    return record


def _not_applicable(output: Path, prepared: PreparedData, backbone: str, audit: AuditConfig, why: str) -> AuditRecord:
    """Write and return the record of an audit that does not apply to the pipeline's data."""
    record = AuditRecord(prepared.task, backbone, prepared.classes, audit.method, 0, 0, 0, skipped=why)
    write_audit(output, record, [])
    logger.info("audit: not run: %s", why)
    return record


def _item(row: pd.Series, text: bool) -> str:
    return snippet(row["text"]) if text else str(row.get("relpath") or row["uri"])


def _audit(
    rows: pd.DataFrame,
    features: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    task: str,
    backbone: str,
    audit: AuditConfig,
    seed: int,
) -> tuple[AuditRecord, list[tuple[Path, str]]]:
    """The record and the contact sheet's ``(image, caption)`` of the audit of ``rows`` (every split, in order)."""
    text = is_text(task)
    pooled = np.flatnonzero(rows["split"].isin(["train", "val"]).to_numpy())
    probabilities, folds = out_of_fold_probabilities(features[pooled], labels[pooled], len(classes), seed=seed)
    issues = find_label_issues(probabilities, labels[pooled], audit.method)
    label_issues, thumbnails = [], []
    for index in issues.indices:
        row = rows.iloc[pooled[index]]
        given, suggested = classes[labels[pooled[index]]], classes[issues.suggested[index]]
        label_issues.append({
            "sha256": row["sha256"], "split": row["split"], "item": _item(row, text), "given": given,
            "suggested": suggested, "confidence": round(float(issues.self_confidence[index]), 4),
            "suggested_confidence": round(float(probabilities[index, issues.suggested[index]]), 4),
        })  # fmt: skip
        if not text and len(thumbnails) < THUMBNAILS and "local_path" in rows:
            thumbnails.append((Path(row["local_path"]), f"{given} -> {suggested}"))
    pairs = near_duplicates(features, audit.duplicate_threshold, row_ids=list(rows["sha256"]))
    outliers = knn_outliers(features, audit.outlier_fraction)

    def described(index: int) -> dict[str, str]:
        row = rows.iloc[index]
        return {"item": _item(row, text), "split": row["split"], "label": classes[labels[index]]}

    record = AuditRecord(
        task=task,
        backbone=backbone,
        classes=classes,
        method=audit.method,
        folds=folds,
        audited=len(pooled),
        examples=len(rows),
        label_issues=label_issues,
        duplicate_threshold=audit.duplicate_threshold,
        duplicate_pairs=pairs.total,
        duplicates=[
            {"first": described(a), "second": described(b), "similarity": round(float(s), 5)}
            for a, b, s in list(zip(pairs.first, pairs.second, pairs.similarity, strict=True))[:MAX_DUPLICATES_LISTED]
        ],
        outliers=[{**described(i), "score": round(float(outliers.scores[i]), 5)} for i in outliers.indices],
    )
    return record, thumbnails
