"""The select-backbone step: rank candidate backbones on the training split and choose one."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from tlops.errors import TlopsError
from tlops.models.backbones import load_backbone
from tlops.models.names import check_backbone_name
from tlops.steps.common import backbone_features, localized_manifest
from tlops.steps.config import DEFAULT_BACKBONE, DEFAULTS
from tlops.steps.outputs import PreparedData, Selection
from tlops.steps.runtime import Runtime
from tlops.train.probe import GlobalScaler

logger = logging.getLogger(__name__)


def select_backbone(
    data_dir: Path,
    candidates: list[str],
    output_dir: Path,
    runtime: Runtime,
    *,
    image_size: int = DEFAULTS.image_size,
    max_images_per_class: int = 40,
    folds: int = 5,
    seed: int = DEFAULTS.seed,
) -> Selection:
    """Rank candidate backbones by cross-validated linear-probe accuracy on (a sample of) the training split.

    Args:
        data_dir: Output of the prepare-data step.
        candidates: Backbone names.
        output_dir: Where ``selection.json`` is written.
        runtime: Device, S3 client and caches.
        image_size: Input size for all candidates; 0 for each backbone's own.
        max_images_per_class: Training images per class used for scoring (the budget).
        folds: Cross-validation folds (fewer when a class is smaller).
        seed: Seed of the sample and folds.

    Raises:
        TlopsError: when no candidate is given, a name is unknown, or ``data_dir`` is not a prepare-data output
            (checked before anything runs, even when a single candidate leaves nothing to rank).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    candidates = list(dict.fromkeys(candidates))
    if not candidates:
        raise TlopsError(f"no candidate backbones given; pass at least one, e.g. --backbones {DEFAULT_BACKBONE}")
    for name in candidates:
        check_backbone_name(name)
    PreparedData.read(data_dir)
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
            backbone = load_backbone(name, image_size=image_size or None, s3=runtime.s3, cache_dir=runtime.cache_dir)
            features, targets = backbone_features(backbone, sample, "train", classes, runtime)
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
    selection.write(output_dir)
    for reason in selection.reasons:
        logger.info("backbone selection: %s", reason)
    return selection
