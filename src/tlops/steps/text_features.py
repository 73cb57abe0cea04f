"""Text encoder embeddings of a prepared text dataset, computed once per key and read from the feature cache after."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import torch

from tlops.models.extraction import weights_checksum
from tlops.models.feature_cache import SHARD_ROWS, FeatureCache, FeatureKey
from tlops.models.text_embedding import embed_texts, text_encoder_cost, tokenize
from tlops.models.text_encoders import TextEncoder
from tlops.steps.features import (
    FeatureExtraction,
    FeatureSet,
    cached_features,
    images_digest,
    split_row_ids,
    split_targets,
)
from tlops.steps.runtime import Runtime


def text_feature_key(encoder: TextEncoder, row_ids: dict[str, list[str]]) -> FeatureKey:
    """The cache key of ``encoder``'s embeddings of the texts listed per split (their sha256) in ``row_ids``."""
    return FeatureKey(
        dataset_digest=images_digest(row_ids),
        backbone=encoder.name,
        weights_sha256=weights_checksum(encoder.model),
        preprocessing=encoder.preprocessing(),
    )


def text_dataset_features(
    encoder: TextEncoder,
    manifest: pd.DataFrame,
    classes: list[str],
    runtime: Runtime,
    cache: FeatureCache,
) -> FeatureSet:
    """Mean-pooled embeddings of every split: from the cache when its entry is valid, else one pass (then cached).

    Args:
        encoder: The frozen text encoder.
        manifest: The text manifest (``text``, ``sha256`` of the normalised text, ``label`` and ``split`` columns).
        classes: Class names; a label's index is its class id.
        runtime: Device and batch size (texts per forward pass).
        cache: Where entries are read and written.

    Returns:
        The same :class:`~tlops.steps.features.FeatureSet` as images get; ``cost`` has ``params``, ``flops`` and
        ``latency_ms`` of one text of median token length of the dataset, and the ``device``.
    """
    row_ids = split_row_ids(manifest)

    def batches(split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rows = manifest[manifest["split"] == split]
        texts, targets = list(rows["text"]), split_targets(manifest, split, classes)
        for start in range(0, len(texts), SHARD_ROWS):  # one shard's texts at a time: memory stays bounded
            chunk = texts[start : start + SHARD_ROWS]
            desc = f"{encoder.name} {split}"
            features = embed_texts(encoder, chunk, runtime.device, runtime.batch_size, desc)
            yield features, targets[start : start + len(chunk)]

    return cached_features(
        FeatureExtraction(
            key=text_feature_key(encoder, row_ids),
            row_ids=row_ids,
            name=encoder.name,
            num_features=encoder.num_features,
            batches=batches,
            targets=lambda split: split_targets(manifest, split, classes),
            cost=lambda: text_encoder_cost(encoder, typical_text(encoder, list(manifest["text"])), runtime.device),
            unit="texts",
        ),
        runtime,
        cache,
    )


def typical_text(encoder: TextEncoder, texts: list[str], sample: int = 1000) -> str:
    """A text of median token length among (the first ``sample`` of) ``texts``: what one prediction costs."""
    texts = texts[:sample] or [""]
    lengths = [len(ids) for ids in tokenize(encoder, texts)]
    order = sorted(range(len(texts)), key=lambda row: lengths[row])
    return texts[order[len(order) // 2]]
