"""Feature-cache entries for tests: a key, the image ids of each split, random features, an entry written."""

from __future__ import annotations

import torch

from tlops.models.feature_cache import FeatureCache, FeatureKey

KEY = FeatureKey("d" * 64, "efficientnet_lite0", "w" * 64, {"input_size": 224, "mean": [0.5, 0.5, 0.5]})
IDS = {"train": [f"t{i}" for i in range(7)], "val": ["v0", "v1"], "test": ["s0"]}


def random_splits(width: int = 4) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Seeded random ``(features, targets)`` of ``width`` features for each split of :data:`IDS`."""
    generator = torch.Generator().manual_seed(0)
    return {
        split: (torch.randn(len(ids), width, generator=generator), torch.arange(len(ids)) % 2)
        for split, ids in IDS.items()
    }


def write_entry(cache: FeatureCache, key: FeatureKey = KEY, batch: int = 3) -> dict:
    """Write :func:`random_splits` into ``cache`` under ``key``, ``batch`` rows a shard; returns the splits."""
    splits = random_splits()
    writer = cache.writer(key)
    for split, (features, targets) in splits.items():
        for start in range(0, len(targets), batch):
            stop = start + batch
            writer.add(split, features[start:stop], targets[start:stop], IDS[split][start:stop])
    writer.commit({"seconds": 12.5, "images": 10}, {"params": 3, "flops": 5, "latency_ms": 1.0, "device": "cpu"})
    return splits


def assert_equal_splits(loaded, expected) -> None:
    """``loaded`` holds exactly ``expected``'s splits, tensor for tensor."""
    assert set(loaded) == set(expected)
    for split, (features, targets) in expected.items():
        assert torch.equal(loaded[split][0], features) and torch.equal(loaded[split][1], targets)
