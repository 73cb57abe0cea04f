"""Data-pipeline efficiency of feature extraction: the backbone's forward speed against the speed from files.

Usage (run by hand; about 4 minutes per backbone on 2 busy CPU cores)::

    python bench/extraction.py --workdir /tmp/tlops-bench-extraction --output bench/extraction.json

``--images`` photo-like RGB files (random crops of scikit-image's sample photos, resized to 320x240..500x375,
half JPEG, half PNG; one class folder per source photo) are generated once into ``WORKDIR/photos-N`` and reused.
Per backbone, at its native input size, it measures:

* forward, channels_last: images/s of ``feature_extractor(backbone)`` prepared by ``prepare_for_inference``
  (eval, channels_last) on one random batch already in memory, under ``torch.inference_mode`` (the median of
  ``--forward-batches`` timed batches after ``--warmup`` untimed ones);
* forward, default format: the same on a copy left in the default (contiguous) memory format, interleaved with
  the channels_last runs, for the channels_last gain;
* decode and transform: median milliseconds per file of ``decode_image`` and of ``eval_transform``, in-process,
  the transform with torch's intra-op threads and with one (as in a DataLoader worker);
* loader only: images/s of a fresh ``make_loader(split_dataset(...), workers=W)`` with ``eval_transform``
  (read, decode, resize, crop), for W in 0, 1, 2: the ceiling the data side sets;
* end-to-end: images/s of ``iter_features`` consuming such a loader: tlops' real extraction path, worker
  start-up included (``dataset_features`` builds a fresh loader per split).

``efficiency = end-to-end / forward``, where forward is measured just before each end-to-end pass
(``--paired-batches`` timed batches), so a change in load from other jobs on a shared machine cancels out of
the ratio; 1.0 means the data pipeline costs nothing on top of the forward pass. Every setting runs
``--repeats`` times, interleaved over W; the table shows the median efficiency and the best throughputs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from tlops.data.loading import make_loader, split_dataset
from tlops.data.preprocessing import eval_transform
from tlops.models.backbones import feature_extractor, load_backbone
from tlops.models.device import autocast
from tlops.models.extraction import iter_features, prepare_for_inference
from tlops.steps.runtime import available_cpus

SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "colorwheel")
WORKER_COUNTS = (0, 1, 2)


def generate_photos(root: Path, images: int, seed: int = 0) -> Path:
    """Write ``images`` crops of skimage's RGB sample photos as ``root/<photo>/NNNNNN.{jpg,png}`` (reused if complete).

    Each file is a random crop (30..100% of the shorter side, 4:3) resized to a random 320x240..500x375, with
    a little noise so no two files are alike; even indices are JPEG (quality 90), odd ones PNG.
    """
    import skimage.data

    marker = root / ".complete"  # hidden and at the top level: no class folder holds it
    if marker.exists() and json.loads(marker.read_text()).get("images") == images:
        return root
    rng = np.random.default_rng(seed)
    photos = {name: getattr(skimage.data, name)()[..., :3] for name in SOURCES}
    start = time.perf_counter()
    for index in range(images):
        name = SOURCES[index % len(SOURCES)]
        photo = photos[name]
        height, width = photo.shape[:2]
        crop_h = int(rng.uniform(0.3, 1.0) * min(height, width * 3 / 4))
        crop_w = int(crop_h * 4 / 3)
        top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
        out_w = int(rng.integers(320, 501))
        crop = Image.fromarray(photo[top : top + crop_h, left : left + crop_w])
        resized = np.asarray(crop.resize((out_w, out_w * 3 // 4), Image.BICUBIC), dtype=np.float32)
        pixels = np.clip(resized + rng.normal(0, 2, resized.shape), 0, 255).astype(np.uint8)
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        if index % 2 == 0:
            Image.fromarray(pixels).save(folder / f"{index:06d}.jpg", quality=90)
        else:
            Image.fromarray(pixels).save(folder / f"{index:06d}.png")
    marker.write_text(json.dumps({"images": images, "seed": seed}))
    print(f"generated {images} images in {time.perf_counter() - start:.1f}s into {root}", file=sys.stderr)
    return root


def photo_manifest(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """A localized manifest (``local_path``, ``label``, ``split``) putting every generated file in ``train``."""
    files = sorted(p for p in root.rglob("*") if p.suffix in {".jpg", ".png"})
    manifest = pd.DataFrame(
        {"local_path": [str(p) for p in files], "label": [p.parent.name for p in files], "split": "train"}
    )
    return manifest, sorted(manifest["label"].unique())


@torch.inference_mode()
def forward_throughput(
    model: torch.nn.Module, batch: torch.Tensor, device: torch.device, warmup: int, batches: int
) -> float:
    """Median images/s of ``model`` on ``batch`` over ``batches`` timed forwards after ``warmup`` untimed ones."""
    rates = []
    for index in range(warmup + batches):
        start = time.perf_counter()
        with autocast(device):
            model(batch)
        if index >= warmup:
            rates.append(len(batch) / (time.perf_counter() - start))
    return statistics.median(rates)


def loader_pass(dataset: Any, batch_size: int, workers: int, model: torch.nn.Module | None) -> dict[str, float]:
    """One pass over ``dataset`` through a fresh loader, consumed by ``iter_features`` (or, without a model, alone)."""
    device = torch.device("cpu")
    start = time.perf_counter()
    loader = make_loader(dataset, batch_size, workers=workers)
    images, first = 0, None
    batches = iter_features(model, loader, device, "bench") if model is not None else iter(loader)
    for _, targets in batches:
        images += len(targets)
        if first is None:
            first = time.perf_counter() - start
    seconds = time.perf_counter() - start
    del loader  # persistent workers exit with their loader
    return {"seconds": seconds, "images": images, "images_per_s": images / seconds, "first_batch_s": first or 0.0}


def stage_times(dataset: Any, images: int) -> dict[str, float]:
    """Median milliseconds per file of decoding and of ``eval_transform``, in this process.

    The transform is timed with torch's intra-op threads as they are (what a loader with 0 workers gets) and with
    one thread (what a DataLoader worker process gets: PyTorch sets one thread in each worker).
    """
    from tlops.data.images import decode_image

    decode, transform, transform_one = [], [], []
    threads = torch.get_num_threads()
    for path in dataset.paths[:images]:
        start = time.perf_counter()
        picture = decode_image(Path(path).read_bytes()).image
        middle = time.perf_counter()
        dataset.transform(picture)
        decode.append(middle - start)
        transform.append(time.perf_counter() - middle)
        torch.set_num_threads(1)
        try:
            start = time.perf_counter()
            dataset.transform(picture)
            transform_one.append(time.perf_counter() - start)
        finally:
            torch.set_num_threads(threads)
    return {
        "decode_ms": round(1000 * statistics.median(decode), 2),
        "transform_ms": round(1000 * statistics.median(transform), 2),
        "transform_ms_one_thread": round(1000 * statistics.median(transform_one), 2),
        "threads": threads,
    }


def bench_backbone(name: str, manifest: pd.DataFrame, classes: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of one backbone at its native input size.

    Each end-to-end pass is paired with a forward measurement taken just before it, and its efficiency is the
    ratio within that pair, so load from other jobs that changes during the run cancels out of the ratio.
    """
    device = torch.device("cpu")
    backbone = load_backbone(name)
    size = backbone.data_config.input_size
    batch = torch.rand(args.batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
    fast = prepare_for_inference(feature_extractor(backbone), device)
    batch_cl = batch.contiguous(memory_format=torch.channels_last)
    plain = load_backbone(name)  # a separate copy, never converted to channels_last
    plain_model = feature_extractor(plain).eval()

    print(f"{name} ({size} px): forward, channels_last and default format ...", file=sys.stderr)
    forward_runs: dict[str, list[float]] = {"channels_last": [], "default": []}
    for _ in range(args.repeats):  # interleaved, so both formats see the same load
        forward_runs["channels_last"].append(
            forward_throughput(fast, batch_cl, device, args.warmup, args.forward_batches)
        )
        forward_runs["default"].append(
            forward_throughput(plain_model, batch.contiguous(), device, args.warmup, args.forward_batches)
        )
    del plain, plain_model
    gains = [a / b for a, b in zip(forward_runs["channels_last"], forward_runs["default"], strict=True)]

    dataset = split_dataset(manifest, "train", classes, eval_transform(backbone.data_config))
    stages = stage_times(dataset, args.stage_images)
    runs: dict[int, list[dict[str, float]]] = {}
    for repeat in range(args.repeats):
        for workers in WORKER_COUNTS:
            print(f"{name}: repeat {repeat + 1}/{args.repeats}, {workers} workers ...", file=sys.stderr)
            loader = loader_pass(dataset, args.batch_size, workers, None)
            forward = forward_throughput(fast, batch_cl, device, 0, args.paired_batches)
            end_to_end = loader_pass(dataset, args.batch_size, workers, fast)
            runs.setdefault(workers, []).append(
                {
                    "loader_images_per_s": loader["images_per_s"],
                    "forward_images_per_s": forward,
                    "end_to_end_images_per_s": end_to_end["images_per_s"],
                    "first_batch_s": end_to_end["first_batch_s"],
                    "efficiency": end_to_end["images_per_s"] / forward,
                }
            )

    rows = []
    for workers in WORKER_COUNTS:
        pairs = runs[workers]
        rows.append(
            {
                "workers": workers,
                "loader_images_per_s": round(max(r["loader_images_per_s"] for r in pairs), 1),
                "forward_images_per_s": round(statistics.median(r["forward_images_per_s"] for r in pairs), 1),
                "end_to_end_images_per_s": round(max(r["end_to_end_images_per_s"] for r in pairs), 1),
                "first_batch_s": round(min(r["first_batch_s"] for r in pairs), 2),
                "efficiency": round(statistics.median(r["efficiency"] for r in pairs), 3),
                "passes": [{k: round(v, 3) for k, v in r.items()} for r in pairs],
            }
        )
    return {
        "backbone": name,
        "input_size": size,
        "forward_channels_last_images_per_s": round(statistics.median(forward_runs["channels_last"]), 1),
        "forward_default_images_per_s": round(statistics.median(forward_runs["default"]), 1),
        "channels_last_gain": round(statistics.median(gains), 3),
        "forward_runs": {k: [round(v, 1) for v in vs] for k, vs in forward_runs.items()},
        "stages": stages,
        "loaders": rows,
    }


def markdown(results: list[dict[str, Any]], images: int, batch_size: int) -> str:
    """The results as Markdown tables: the forward pass, then one row per backbone and worker count."""
    lines = [
        f"Forward pass on a {batch_size}-image batch in memory (images/s, median of the repeats):",
        "",
        "| backbone | px | channels_last | default format | channels_last gain | decode ms/img "
        f"| transform ms/img ({results[0]['stages']['threads']} threads / 1 thread) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['backbone']} | {r['input_size']} | {r['forward_channels_last_images_per_s']:.1f} | "
            f"{r['forward_default_images_per_s']:.1f} | {r['channels_last_gain']:.2f}x | "
            f"{r['stages']['decode_ms']:.1f} | {r['stages']['transform_ms']:.1f} / "
            f"{r['stages']['transform_ms_one_thread']:.1f} |"
        )
    lines += [
        "",
        f"From {images} files (batch {batch_size}): `make_loader` + `eval_transform` alone, and consumed by "
        "`iter_features`; forward = the paired in-memory measurement; efficiency = end-to-end / forward "
        "(median of the pairs):",
        "",
        "| backbone | workers | loader only (img/s) | forward (img/s) | end-to-end (img/s) | first batch (s) "
        "| efficiency |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for row in r["loaders"]:
            lines.append(
                f"| {r['backbone']} | {row['workers']} | {row['loader_images_per_s']:.1f} | "
                f"{row['forward_images_per_s']:.1f} | {row['end_to_end_images_per_s']:.1f} | "
                f"{row['first_batch_s']:.2f} | {row['efficiency']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Generate the photos, measure every backbone, print the tables and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlops-bench-extraction"))
    parser.add_argument("--images", type=int, default=256, help="generated files (default 256)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--backbones", default="efficientnet_lite0", help="comma-separated bundled backbones (lite0, lite1, lite2)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed forward batches (default 1)")
    parser.add_argument("--forward-batches", type=int, default=3, help="timed forward batches (default 3)")
    parser.add_argument(
        "--paired-batches", type=int, default=2, help="timed forward batches paired with each end-to-end pass"
    )
    parser.add_argument("--repeats", type=int, default=2, help="passes per setting (default 2)")
    parser.add_argument("--stage-images", type=int, default=64, help="files timed stage by stage (default 64)")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    root = generate_photos(args.workdir / f"photos-{args.images}", args.images)
    manifest, classes = photo_manifest(root)
    results = [bench_backbone(name, manifest, classes, args) for name in args.backbones.split(",")]
    report = {
        "images": len(manifest),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "cpus": available_cpus(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "load_average_before_after": [load_before, os.getloadavg()],
        "results": results,
    }
    print(markdown(results, len(manifest), args.batch_size))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {available_cpus()} CPUs")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
