"""Per-image feature packs on a local folder: written and gathered, damaged packs missed, shards planned."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tlops.errors import TlopsError
from tlops.models.feature_cache import FeatureCache
from tlops.models.feature_packs import PackKey, PackStore, pack_name, plan_shards

KEY = PackKey("efficientnet_lite0", "w" * 64, {"input_size": 224, "mean": [0.5, 0.5, 0.5]})


def _store(tmp_path: Path, key: PackKey = KEY) -> PackStore:
    return PackStore(FeatureCache(str(tmp_path / "features"), scratch=tmp_path / "scratch"), key)


def test_gathered_rows_follow_the_order_asked_for_across_packs(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first, second = torch.randn(3, 4), torch.randn(2, 4)
    store.write(first, ["a", "b", "c"], {"images": 3, "images_per_second": 10.0})
    store.write(second, ["d", "e"], {"images": 2})
    assert store.lookup(["e", "a", "x"]) == {"a": pack_name(["a", "b", "c"]) + ".safetensors",
                                              "e": pack_name(["d", "e"]) + ".safetensors"}  # fmt: skip
    features, missing = store.gather(["e", "x", "a", "a"], 4)
    assert missing == [1]
    assert torch.equal(features[0], second[1]) and torch.equal(features[2], first[0])
    assert torch.equal(features[3], first[0])  # a duplicate image: the same row twice
    assert not any((tmp_path / "scratch").rglob("*.safetensors"))  # staging is cleaned up


def test_a_damaged_or_unindexed_pack_is_a_miss_and_can_be_written_again(tmp_path: Path) -> None:
    store = _store(tmp_path)
    name = store.write(torch.randn(2, 4), ["a", "b"], {})
    pack = Path(store.prefix) / f"{name}.safetensors"
    pack.write_bytes(pack.read_bytes()[:-3])  # truncated
    _, missing = store.gather(["a", "b"], 4)
    assert missing == [0, 1]
    fresh = torch.randn(2, 4)
    assert store.write(fresh, ["a", "b"], {}) == name  # a retried shard rewrites the same pack
    features, missing = store.gather(["b", "a"], 4)
    assert missing == [] and torch.equal(features, fresh[[1, 0]])
    (Path(store.prefix) / f"{name}.json").unlink()  # a pack without its index does not count
    assert store.lookup(["a", "b"]) == {}


def test_packs_are_per_model_and_the_key_is_stable(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write(torch.randn(1, 4), ["a"], {})
    other = _store(tmp_path, PackKey("efficientnet_lite0", "v" * 64, KEY.preprocessing))
    assert other.lookup(["a"]) == {}
    assert PackKey(**{**KEY.__dict__, "preprocessing": dict(reversed(KEY.preprocessing.items()))}).digest == KEY.digest
    # Pinned: a change of the key layout would silently orphan every cached pack.
    assert KEY.digest == "491cf75691d370e7919c2ffd8c0f4b6d277905e1fae1f76091513976042d1681"


def test_the_plan_shards_only_the_missing_images_once_each_in_order() -> None:
    order = ["a", "b", "c", "b", "d", "e", "f", "g"]
    assert plan_shards(order, {"c", "f"}, 2) == [["a", "b"], ["d", "e"], ["g"]]
    assert plan_shards(order, set(order), 2) == []
    with pytest.raises(TlopsError, match="shard size"):
        plan_shards(order, set(), 0)


def test_a_pack_needs_one_row_id_per_row(tmp_path: Path) -> None:
    with pytest.raises(TlopsError, match="one row id per row"):
        _store(tmp_path).write(torch.randn(2, 4), ["a"], {})
