"""Feature packs on a real S3 (SeaweedFS): written, found image by image, a damaged pack missed and rewritten."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tlops.models.feature_cache import FeatureCache
from tlops.models.feature_packs import PackKey, PackStore


@pytest.mark.integration
def test_packs_work_on_real_s3(s3_client, bucket: str, tmp_path: Path) -> None:
    cache = FeatureCache(f"s3://{bucket}/tlops/features", s3_client, scratch=tmp_path / "scratch")
    store = PackStore(cache, PackKey("efficientnet_lite0", "w" * 64, {"input_size": 224}))
    first, second = torch.randn(3, 4), torch.randn(1, 4)
    name = store.write(first, ["a", "b", "c"], {"images": 3})
    store.write(second, ["d"], {"images": 1})
    assert sorted(store.lookup(["a", "d", "x"])) == ["a", "d"]
    features, missing = store.gather(["d", "c", "x"], 4)
    assert missing == [2] and torch.equal(features[0], second[0]) and torch.equal(features[1], first[2])
    key = f"{store.prefix}/{name}.safetensors".removeprefix(f"s3://{bucket}/")
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"truncated")
    assert store.gather(["a", "d"], 4)[1] == [0]  # fails its checksum: computed again
    store.write(first, ["a", "b", "c"], {"images": 3})
    assert store.gather(["a", "d"], 4)[1] == []
