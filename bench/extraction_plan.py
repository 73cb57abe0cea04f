"""Simulate the extraction planner on a large manifest without pixels: shards, cache keys, planning time, merge memory.

A manifest of ``--images`` random sha256s (seeded), of which ``--cached`` already have features in packs (pack
indexes written to a local feature cache under ``--workdir``; the indexes are all the planner reads). Measured: the
time of the planner's lookup and shard cut, the shards and the pack key; the merge's memory is computed for
``--feature-dim`` float32 features of every image and measured (peak RSS growth) on ``--merge-rows`` real rows
gathered from packs. Prints a table; JSON to ``--output``.

    python bench/extraction_plan.py --workdir /tmp/tlops-bench-plan --output /tmp/tlops-bench-plan/plan.json
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path

import torch

from tlops.models.feature_cache import SHARD_ROWS, FeatureCache
from tlops.models.feature_packs import PackKey, PackStore, plan_shards


def _sha256s(count: int, seed: int) -> list[str]:
    generator = random.Random(seed)
    return [f"{generator.getrandbits(256):064x}" for _ in range(count)]


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def main(argv: list[str] | None = None) -> dict:
    """Run the simulation; return (and print) what it measured."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlops-bench-plan"))
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--cached", type=int, default=500_000, help="images that already have packs")
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--feature-dim", type=int, default=1280, help="efficientnet_lite0's width")
    parser.add_argument("--merge-rows", type=int, default=20_000)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)

    cache = FeatureCache(str(args.workdir / f"features-{time.time_ns()}"), scratch=args.workdir / "scratch")
    key = PackKey("efficientnet_lite0", "0" * 64, {"input_size": 224, "interpolation": "bicubic"})
    store = PackStore(cache, key)
    order = _sha256s(args.images, seed=0)
    # The cached images' pack indexes, as extract-shard pods would leave them (no features: not read by the planner).
    index_dir = Path(store.prefix)
    index_dir.mkdir(parents=True)
    for start in range(0, args.cached, SHARD_ROWS):
        rows = order[start : start + SHARD_ROWS]
        index = {"key": key.digest, "file": f"p{start}.safetensors", "sha256": "", "row_ids": rows, "extraction": {}}
        (index_dir / f"p{start}.json").write_text(json.dumps({**index, "schema_version": 1}))

    began = time.perf_counter()
    cached = store.lookup(order)
    shards = plan_shards(order, cached, args.shard_size)
    planning = time.perf_counter() - began

    # The merge: rows gathered from real packs into one (rows, dim) float32 tensor, one pack in memory at a time.
    merge_store = PackStore(cache, PackKey("merge", "0" * 64, {}))
    merge_ids = _sha256s(args.merge_rows, seed=1)
    for start in range(0, args.merge_rows, SHARD_ROWS):
        rows = merge_ids[start : start + SHARD_ROWS]
        merge_store.write(torch.randn(len(rows), args.feature_dim), rows, {})
    rss_before = _rss_bytes()
    began = time.perf_counter()
    features, missing = merge_store.gather(merge_ids, args.feature_dim)
    merge_seconds = time.perf_counter() - began
    assert not missing and features.shape == (args.merge_rows, args.feature_dim)
    result_bytes = args.merge_rows * args.feature_dim * 4
    result = {
        "images": args.images,
        "cached": len(cached),
        "shard_size": args.shard_size,
        "shards": len(shards),
        "images_to_extract": sum(map(len, shards)),
        "pack_indexes": len(list(index_dir.glob("*.json"))),
        "planning_seconds": round(planning, 2),
        "pack_key": key.digest,
        "merge_rows_measured": args.merge_rows,
        "merge_seconds": round(merge_seconds, 2),
        "merge_peak_rss_growth_mb": round((_rss_bytes() - rss_before) / 2**20, 1),
        "merge_result_mb": round(result_bytes / 2**20, 1),
        "merge_bytes_1m_images_gb": round(args.images * args.feature_dim * 4 / 2**30, 2),
    }
    width = max(map(len, result))
    for name, value in result.items():
        print(f"{name:<{width}}  {value}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
