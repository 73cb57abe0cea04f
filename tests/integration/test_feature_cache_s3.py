"""The feature cache on a real S3 (SeaweedFS): an entry written in shards and read back, a missing bucket refused."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from feature_entries import IDS, KEY
from feature_entries import assert_equal_splits as _assert_equal
from feature_entries import write_entry as _write
from tlops.errors import TlopsError
from tlops.models.feature_cache import FeatureCache


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
