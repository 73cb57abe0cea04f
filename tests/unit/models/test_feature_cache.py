"""The feature cache: hits, misses, damaged and stale entries, streaming shards, on local storage."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from feature_entries import IDS, KEY
from feature_entries import assert_equal_splits as _assert_equal
from feature_entries import write_entry as _write
from tlops.errors import TlopsError
from tlops.models import feature_cache
from tlops.models.feature_cache import INDEX_FILE, FeatureCache, FeatureKey


def test_written_features_are_read_back_with_their_index(tmp_path: Path) -> None:
    cache = FeatureCache(str(tmp_path / "cache"))
    expected = _write(cache)
    hit = cache.load(KEY, IDS)
    assert hit is not None
    _assert_equal(hit.splits, expected)
    assert hit.index.extraction["seconds"] == 12.5 and hit.index.cost["params"] == 3
    entry = Path(cache.entry(KEY))
    assert entry.parent.name == KEY.digest[:2] and entry.name == KEY.digest
    assert sorted(p.name for p in entry.parent.iterdir()) == [KEY.digest]  # no staging folder left


@pytest.mark.parametrize(
    "other",
    [
        FeatureKey("e" * 64, KEY.backbone, KEY.weights_sha256, KEY.preprocessing),  # a changed image
        FeatureKey(KEY.dataset_digest, "efficientnet_lite1", KEY.weights_sha256, KEY.preprocessing),
        FeatureKey(KEY.dataset_digest, KEY.backbone, "x" * 64, KEY.preprocessing),  # other weights
        FeatureKey(KEY.dataset_digest, KEY.backbone, KEY.weights_sha256, {**KEY.preprocessing, "input_size": 240}),
    ],
    ids=["dataset", "backbone", "weights", "input-size"],
)
def test_any_other_key_is_a_miss(tmp_path: Path, other: FeatureKey) -> None:
    cache = FeatureCache(str(tmp_path))
    _write(cache)
    assert other.digest != KEY.digest
    assert cache.load(other, IDS) is None


def test_rows_in_another_order_are_a_miss(tmp_path: Path) -> None:
    cache = FeatureCache(str(tmp_path))
    _write(cache)
    assert cache.load(KEY, {**IDS, "train": list(reversed(IDS["train"]))}) is None


def test_large_splits_stream_into_bounded_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feature_cache, "SHARD_ROWS", 2)
    cache = FeatureCache(str(tmp_path))
    expected = _write(cache, batch=1)
    index = json.loads((Path(cache.entry(KEY)) / INDEX_FILE).read_text())
    assert [shard["rows"] for shard in index["shards"]["train"]] == [2, 2, 2, 1]
    hit = cache.load(KEY, IDS)
    assert hit is not None
    _assert_equal(hit.splits, expected)


@pytest.mark.parametrize("damage", ["truncate", "flip-byte", "delete"])
def test_a_damaged_shard_is_detected_and_rebuilt(tmp_path: Path, damage: str, caplog) -> None:
    cache = FeatureCache(str(tmp_path))
    expected = _write(cache)
    shard = next(Path(cache.entry(KEY)).glob("train-*.safetensors"))
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "flip-byte":
        shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        shard.unlink()
    with caplog.at_level(logging.WARNING):
        assert cache.load(KEY, IDS) is None
    assert "rebuilding" in caplog.text
    _write(cache)  # the rebuild replaces the damaged entry
    hit = cache.load(KEY, IDS)
    assert hit is not None
    _assert_equal(hit.splits, expected)


def test_an_entry_of_another_cache_schema_is_rebuilt_with_a_note(tmp_path: Path, caplog) -> None:
    cache = FeatureCache(str(tmp_path))
    _write(cache)
    index_path = Path(cache.entry(KEY)) / INDEX_FILE
    index = json.loads(index_path.read_text())
    index_path.write_text(json.dumps(index | {"schema_version": 99, "tlops_version": "9.9.9"}))
    with caplog.at_level(logging.WARNING):
        assert cache.load(KEY, IDS) is None
    assert "written by tlops 9.9.9 (cache schema 99" in caplog.text
    index_path.write_text("{not json")
    assert cache.load(KEY, IDS) is None


def test_an_aborted_write_leaves_no_entry(tmp_path: Path) -> None:
    cache = FeatureCache(str(tmp_path))
    writer = cache.writer(KEY)
    writer.add("train", torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), ["a", "b"])
    writer.abort()
    assert cache.load(KEY, IDS) is None
    assert not any(tmp_path.rglob("*.safetensors"))


def test_a_cache_folder_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(TlopsError, match="--feature-cache"):
        FeatureCache(str(tmp_path / "file" / "cache")).check()
