"""The feature cache: hits, misses, damaged and stale entries, streaming shards, local and real S3 storage."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from tlops.errors import TlopsError
from tlops.models.feature_cache import FeatureCache, FeatureKey

KEY = FeatureKey("d" * 64, "efficientnet_lite0", "w" * 64, {"input_size": 224, "mean": [0.5, 0.5, 0.5]})
IDS = {"train": [f"t{i}" for i in range(7)], "val": ["v0", "v1"], "test": ["s0"]}


def _splits(width: int = 4) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return {
        split: (torch.randn(len(ids), width, generator=generator), torch.arange(len(ids)) % 2)
        for split, ids in IDS.items()
    }


def _write(cache: FeatureCache, key: FeatureKey = KEY, batch: int = 3) -> dict:
    splits = _splits()
    writer = cache.writer(key)
    for split, (features, targets) in splits.items():
        for start in range(0, len(targets), batch):
            stop = start + batch
            writer.add(split, features[start:stop], targets[start:stop], IDS[split][start:stop])
    writer.commit({"seconds": 12.5, "images": 10}, {"params": 3, "flops": 5, "latency_ms": 1.0, "device": "cpu"})
    return splits


def _assert_equal(loaded, expected) -> None:
    assert set(loaded) == set(expected)
    for split, (features, targets) in expected.items():
        assert torch.equal(loaded[split][0], features) and torch.equal(loaded[split][1], targets)


@pytest.mark.integration
def test_the_cache_works_on_real_s3(s3_client, bucket: str, tmp_path: Path) -> None:
    cache = FeatureCache(f"s3://{bucket}/tlops/features", s3_client, scratch=tmp_path / "scratch")
    cache.check()
    expected = _write(cache)
    hit = cache.load(KEY, IDS)
    assert hit is not None
    _assert_equal(hit.splits, expected)
    assert not any((tmp_path / "scratch").rglob("*.safetensors"))  # shards were uploaded and removed locally
    entry_key = cache.entry(KEY).removeprefix(f"s3://{bucket}/")
    shard_key = next(
        item["Key"]
        for item in s3_client.list_objects_v2(Bucket=bucket, Prefix=entry_key)["Contents"]
        if item["Key"].endswith(".safetensors")
    )
    s3_client.put_object(Bucket=bucket, Key=shard_key, Body=b"truncated")
    assert cache.load(KEY, IDS) is None  # checksum mismatch: never used


@pytest.mark.integration
def test_an_s3_cache_in_a_missing_bucket_is_refused(s3_client) -> None:
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/features"
    with pytest.raises(TlopsError, match="no-such-bucket"):
        FeatureCache(missing, s3_client).check()
