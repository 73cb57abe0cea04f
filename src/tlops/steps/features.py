"""Features of a prepared dataset, computed once per key and read from the feature cache afterwards.

:func:`cached_features` is the part every task shares; :func:`dataset_features` runs an image backbone through it
(:mod:`tlops.steps.text_features` a text encoder).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import torch

from tlops.io.storage import is_s3_uri
from tlops.models.backbones import Backbone
from tlops.models.extraction import count_flops, count_parameters, measure_latency, weights_checksum
from tlops.models.feature_cache import FeatureCache, FeatureKey, Splits
from tlops.steps.image_packs import pack_features, pack_store
from tlops.steps.runtime import Runtime

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class FeatureSet:
    """A backbone's features of every split, and where they came from.

    Attributes:
        splits: Per split, float32 features ``(N, D)`` and int64 class ids ``(N,)``.
        cache_hit: Whether they were read from the cache (no backbone ran).
        entry: The cache entry holding them.
        seconds: Time this call took.
        extraction_seconds: Time of the pass that computed them (this one, or an earlier run's).
        cost: ``params``, ``flops`` (per image), ``latency_ms`` (one image) and the ``device`` it was timed on.
    """

    splits: Splits
    cache_hit: bool
    entry: str
    seconds: float
    extraction_seconds: float
    cost: dict[str, Any] = field(default_factory=dict)

    @property
    def saved_seconds(self) -> float:
        """Extraction time a cache hit saved (0 on a miss)."""
        return max(0.0, self.extraction_seconds - self.seconds) if self.cache_hit else 0.0


def open_feature_cache(uri: str, runtime: Runtime) -> FeatureCache:
    """The feature cache at ``uri`` (local folder or ``s3://`` prefix; ``""``: ``features/`` in the runtime's cache).

    Raises:
        TlopsError: when the location cannot be written (missing bucket, refused credentials, read-only folder).
    """
    root = uri or str(runtime.cache_dir / "features")
    cache = FeatureCache(root, runtime.s3 if is_s3_uri(root) else None, scratch=runtime.cache_dir / "feature-staging")
    cache.check()
    return cache


def images_digest(row_ids: dict[str, list[str]]) -> str:
    """sha256 over each split's row checksums (images' or texts') in order: what the features depend on.

    Labels do not matter: they do not change the features.
    """
    digest = hashlib.sha256()
    for split in sorted(row_ids):
        for sha256 in row_ids[split]:
            digest.update(f"{split}\t{sha256}\n".encode())
    return digest.hexdigest()


def feature_key(backbone: Backbone, row_ids: dict[str, list[str]]) -> FeatureKey:
    """The cache key of ``backbone``'s features of the images listed per split in ``row_ids``."""
    return FeatureKey(
        dataset_digest=images_digest(row_ids),
        backbone=backbone.name,
        weights_sha256=weights_checksum(backbone.model),
        preprocessing=asdict(backbone.data_config),
    )


def dataset_features(
    backbone: Backbone,
    manifest: pd.DataFrame,
    classes: list[str],
    runtime: Runtime,
    cache: FeatureCache,
) -> FeatureSet:
    """Features of every split: from the cache when its entry is valid, else from the images' packs (cached).

    On a miss of the dataset's entry the features of each image are looked up in the backbone's packs and only the
    images no pack holds run through the backbone (:func:`tlops.steps.image_packs.pack_features`); the entry is
    then written for the next read.

    Args:
        backbone: The frozen backbone with its preprocessing.
        manifest: The localized manifest (``local_path`` column).
        classes: Class names; a label's index is its class id.
        runtime: Device, workers and batch size.
        cache: Where entries are read and written.
    """
    row_ids = split_row_ids(manifest)
    packed: list[dict[str, torch.Tensor]] = []

    def batches(split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # On a miss of the dataset's entry: the images' packs, only the images without one run through the backbone.
        if not packed:
            packed.append(pack_features(backbone, manifest, classes, runtime, pack_store(backbone, cache)).splits)
        if len(packed[0][split]):
            yield packed[0][split], split_targets(manifest, split, classes)

    return cached_features(
        FeatureExtraction(
            key=feature_key(backbone, row_ids),
            row_ids=row_ids,
            name=backbone.name,
            num_features=backbone.num_features,
            batches=batches,
            targets=lambda split: split_targets(manifest, split, classes),
            cost=lambda: backbone_cost(backbone, runtime.device),
            unit="images",
        ),
        runtime,
        cache,
    )


def split_row_ids(manifest: pd.DataFrame) -> dict[str, list[str]]:
    """Per split, the ``sha256`` of each row in manifest order: what a cache entry's rows must be."""
    return {split: list(manifest.loc[manifest["split"] == split, "sha256"]) for split in SPLITS}


def split_targets(manifest: pd.DataFrame, split: str, classes: list[str]) -> torch.Tensor:
    """Class ids ``(N,)`` int64 of one split's rows in manifest order (a label's index in ``classes``)."""
    index = {label: i for i, label in enumerate(classes)}
    labels = manifest.loc[manifest["split"] == split, "label"]
    return torch.tensor([index[label] for label in labels], dtype=torch.long)


@dataclass
class FeatureExtraction:
    """What :func:`cached_features` needs to know about one model's features of one dataset.

    Attributes:
        key: The cache key.
        row_ids: Per split, the row checksums in order.
        name: The model's name, for logs.
        num_features: Width of a feature vector (for an empty split).
        batches: Per split, ``(features, targets)`` batches in row order: runs the model.
        targets: Per split, the class ids from the manifest (a cache hit takes its labels from there).
        cost: The model's cost (``params``, ``flops``, ``latency_ms``, ``device``), measured on a miss.
        unit: What a row is, in the plural (``images``, ``texts``), for logs and the extraction record.
    """

    key: FeatureKey
    row_ids: dict[str, list[str]]
    name: str
    num_features: int
    batches: Callable[[str], Iterable[tuple[torch.Tensor, torch.Tensor]]]
    targets: Callable[[str], torch.Tensor]
    cost: Callable[[], dict[str, Any]]
    unit: str = "images"


def cached_features(job: FeatureExtraction, runtime: Runtime, cache: FeatureCache) -> FeatureSet:
    """The features of ``job``: from the cache when its entry is valid, else one pass of the model (then cached).

    On a miss the batches stream into a cache writer split by split; an error leaves the entry as it was.
    """
    start = time.perf_counter()
    row_ids, unit = job.row_ids, job.unit
    rows = sum(len(ids) for ids in row_ids.values())
    hit = cache.load(job.key, row_ids)
    if hit is not None:
        # The key covers the rows' content, not their labels: the class ids come from this manifest.
        for split, (features, _) in hit.splits.items():
            hit.splits[split] = (features, job.targets(split))
        seconds = time.perf_counter() - start
        extraction = float(hit.index.extraction.get("seconds", 0.0))
        logger.info(
            "feature cache hit for %s: %d %s read in %.1f s from %s (extraction took %.1f s)",
            job.name,
            rows,
            unit,
            seconds,
            cache.entry(job.key),
            extraction,
        )
        return FeatureSet(hit.splits, True, cache.entry(job.key), seconds, extraction, hit.index.cost)
    writer = cache.writer(job.key)
    try:
        splits = {}
        for split in SPLITS:
            features, targets, done = [], [], 0
            for batch_features, batch_targets in job.batches(split):
                writer.add(split, batch_features, batch_targets, row_ids[split][done : done + len(batch_targets)])
                done += len(batch_targets)
                features.append(batch_features)
                targets.append(batch_targets)
            splits[split] = (
                (torch.cat(features), torch.cat(targets))
                if features
                else (torch.empty(0, job.num_features), torch.empty(0, dtype=torch.long))
            )
        seconds = time.perf_counter() - start
        cost = job.cost()
        extraction = {
            "seconds": round(seconds, 3),
            unit: rows,
            f"{unit}_per_second": round(rows / max(seconds, 1e-9), 2),
            "device": str(runtime.device),
        }
        entry = writer.commit(extraction, cost)
    except BaseException:
        writer.abort()
        raise
    logger.info(
        "%s features of %d %s in %.1f s (%.1f %s/s on %s), cached in %s",
        job.name,
        rows,
        unit,
        seconds,
        rows / max(seconds, 1e-9),
        unit,
        runtime.device,
        entry,
    )
    # The extraction time as the cache index keeps it, so a later hit reports the same number.
    return FeatureSet(splits, False, entry, time.perf_counter() - start, round(seconds, 3), cost)


def backbone_cost(backbone: Backbone, device: torch.device) -> dict[str, Any]:
    """Parameters, FLOPs per image, and measured latency of one image on ``device``."""
    size = backbone.data_config.input_size
    return {
        "params": count_parameters(backbone.model),
        "flops": count_flops(backbone.model, size),
        "latency_ms": round(1000 * measure_latency(backbone.model, size, device), 3),
        "device": str(device),
    }
