"""An image backbone's features image by image: read from the feature packs, only the images without one computed.

:func:`pack_features` is what :func:`tlops.steps.features.dataset_features` runs when a dataset's entry is missing
(new images, another subset): it gathers the features the packs hold and extracts the rest, writing them as new
packs of at most :data:`~tlops.models.feature_cache.SHARD_ROWS` images. The extract-shard step runs
:func:`extract_into_packs` on one shard of the planner's list.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from tlops.data.loading import make_loader, split_dataset
from tlops.data.preprocessing import eval_transform
from tlops.models.backbones import Backbone, feature_extractor
from tlops.models.extraction import iter_features, weights_checksum
from tlops.models.feature_cache import SHARD_ROWS, FeatureCache
from tlops.models.feature_packs import PackKey, PackStore
from tlops.steps.runtime import Runtime

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PACK_SPLIT = "pack"  # the split name the rows of one pack get while they are extracted


@dataclass
class PackedFeatures:
    """Features of every split assembled from packs.

    Attributes:
        splits: Per split, float32 features ``(N, D)`` in manifest order.
        extracted: Images this call ran the backbone on (those no pack held).
        cached: Images read from packs.
    """

    splits: dict[str, torch.Tensor]
    extracted: int
    cached: int


def pack_key(backbone: Backbone) -> PackKey:
    """The pack key of ``backbone``: its name, weights checksum and preprocessing (the dataset is not in it)."""
    return PackKey(backbone.name, weights_checksum(backbone.model), asdict(backbone.data_config))


def pack_store(backbone: Backbone, cache: FeatureCache) -> PackStore:
    """The packs of ``backbone`` in ``cache``."""
    return PackStore(cache, pack_key(backbone))


def extract_into_packs(
    backbone: Backbone, rows: pd.DataFrame, classes: list[str], runtime: Runtime, store: PackStore
) -> torch.Tensor:
    """Run the backbone over ``rows`` (one per image, ``local_path`` set) and write packs of them; return the features.

    Each pack holds at most :data:`~tlops.models.feature_cache.SHARD_ROWS` images, so memory stays bounded by one
    pack besides the result.
    """
    transform = eval_transform(backbone.data_config)
    model = feature_extractor(backbone)
    chunks = []
    for start in range(0, len(rows), SHARD_ROWS):
        chunk = rows.iloc[start : start + SHARD_ROWS].assign(split=PACK_SPLIT)
        began = time.perf_counter()
        dataset = split_dataset(chunk, PACK_SPLIT, classes, transform)
        loader = make_loader(dataset, runtime.batch_size, workers=runtime.workers, pin_memory=runtime.pin_memory)
        batches = [features for features, _ in iter_features(model, loader, runtime.device, f"{backbone.name} pack")]
        features = torch.cat(batches) if batches else torch.empty(0, backbone.num_features)
        seconds = time.perf_counter() - began
        extraction = {
            "seconds": round(seconds, 3),
            "images": len(chunk),
            "images_per_second": round(len(chunk) / max(seconds, 1e-9), 2),
            "device": str(runtime.device),
        }
        name = store.write(features, list(chunk["sha256"]), extraction)
        logger.info(
            "feature packs: %s features of %d images in %.1f s (%.1f images/s on %s), pack %s",
            backbone.name,
            len(chunk),
            seconds,
            extraction["images_per_second"],
            runtime.device,
            name[:12],
        )
        chunks.append(features)
    return torch.cat(chunks) if chunks else torch.empty(0, backbone.num_features)


def pack_features(
    backbone: Backbone, manifest: pd.DataFrame, classes: list[str], runtime: Runtime, store: PackStore
) -> PackedFeatures:
    """Features of every split: the images the packs hold read from them, the others extracted (and packed).

    Args:
        backbone: The frozen backbone.
        manifest: The localized manifest (``local_path``, ``sha256``, ``split``, ``label``).
        classes: Class names.
        runtime: Device, workers and batch size.
        store: The backbone's packs.
    """
    ordered = pd.concat([manifest[manifest["split"] == split] for split in SPLITS])
    order = list(ordered["sha256"])
    features, missing = store.gather(order, backbone.num_features)
    todo = ordered.iloc[missing].drop_duplicates("sha256")
    logger.info(
        "feature packs: %s has %d of %d images cached; extracting %d",
        backbone.name,
        len(set(order)) - len(todo),
        len(set(order)),
        len(todo),
    )
    if len(todo):
        computed = extract_into_packs(backbone, todo, classes, runtime, store)
        row_of = {sha256: i for i, sha256 in enumerate(todo["sha256"])}
        source = torch.tensor([row_of[order[position]] for position in missing], dtype=torch.long)
        features[torch.tensor(missing, dtype=torch.long)] = computed[source]
    splits, start = {}, 0
    for split in SPLITS:
        count = int((ordered["split"] == split).sum())
        splits[split] = features[start : start + count]
        start += count
    return PackedFeatures(splits, extracted=len(todo), cached=len(set(order)) - len(todo))
