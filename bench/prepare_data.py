"""Images per second of tlops.data.prepare_data, from a local folder and through a real SeaweedFS S3 gateway.

Usage (run by hand; several minutes, most of it the S3 runs with one worker)::

    python bench/prepare_data.py --workdir /tmp/tlops-bench --output bench/prepare_data.json

The dataset (``--images`` 64x64 JPEGs in ``--classes`` classes, all different) is generated once into
``WORKDIR/dataset-*`` and reused. SeaweedFS (and the MLflow server ``tests/support/services.py`` starts with it) runs in
``WORKDIR/services`` for the S3 half and is stopped at the end; the dataset is uploaded there once per service
data directory. Each source is measured with one worker and with ``SplitConfig().workers``: the whole
``prepare_data`` call (listing, reading, hashing, decoding, splitting, writing the manifest) is timed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from tlops.io.storage import make_s3_client

BUCKET = "tlops-bench"
SERVICES_PY = Path(__file__).resolve().parent.parent / "tests" / "support" / "services.py"
UPLOAD_THREADS = 8  # within botocore's default pool of 10 connections


def generate_dataset(root: Path, images: int, classes: int, size: int = 64) -> Path:
    """Write ``images`` distinct JPEGs as ``root/class-K/NNNNNN.jpg`` unless a complete copy is already there."""
    marker = root / ".complete"  # hidden and at the top level, so prepare_data never lists it
    if marker.exists():
        return root
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 216, (classes, 3))
    start = time.perf_counter()
    for index in range(images):
        label = index % classes
        # Smooth random blobs tinted by class, plus pixel noise: photo-like file sizes, no two files alike.
        blobs = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        pixels = 0.5 * np.asarray(blobs) + 0.5 * colours[label] + rng.normal(0, 6, (size, size, 3))
        folder = root / f"class-{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{index:06d}.jpg", quality=90)
    marker.write_text(json.dumps({"images": images, "classes": classes, "size": size}))
    print(f"generated {images} images in {time.perf_counter() - start:.1f}s into {root}", file=sys.stderr)
    return root


def load_services_module() -> ModuleType:
    """Import tests/support/services.py by path (it is not part of the tlops package)."""
    spec = importlib.util.spec_from_file_location("tlops_test_services", SERVICES_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def upload_dataset(s3: Any, root: Path, prefix: str) -> float | None:
    """Upload every image under ``root`` to ``s3://BUCKET/prefix/``; return the seconds, or None if all were there."""
    from botocore.exceptions import ClientError

    try:
        s3.create_bucket(Bucket=BUCKET)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            raise
    files = sorted(p for p in root.rglob("*.jpg"))
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
    present = sum(page.get("KeyCount", 0) for page in pages)
    if present == len(files):
        return None

    def put(path: Path) -> None:
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes())

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        for _ in pool.map(put, files):
            pass
    return time.perf_counter() - start


def measure(source: str, workers: int, output_dir: Path, s3: Any = None) -> dict[str, Any]:
    """Time one prepare_data call and return a result row."""
    from tlops.data.prepare import SplitConfig, prepare_data

    start = time.perf_counter()
    prepared = prepare_data(source=source, output_dir=output_dir, config=SplitConfig(workers=workers), s3=s3)
    seconds = time.perf_counter() - start
    if prepared.quarantined:
        raise RuntimeError(f"{len(prepared.quarantined)} generated images were quarantined: {prepared.quarantined[:3]}")
    images = sum(prepared.num_images.values())
    row = {"source": "s3" if s3 is not None else "local", "workers": workers, "images": images}
    row |= {"seconds": round(seconds, 2), "images_per_s": round(images / seconds, 1)}
    print("{source:<6} {workers:>7} {images:>7} {seconds:>8.2f} {images_per_s:>9.1f}".format(**row), flush=True)
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate, (upload,) measure; return the JSON report."""
    from tlops.data.prepare import SplitConfig

    workdir = args.workdir.resolve()
    dataset = generate_dataset(workdir / f"dataset-{args.images}x{args.classes}", args.images, args.classes)
    default_workers = SplitConfig().workers
    print(f"{'source':<6} {'workers':>7} {'images':>7} {'seconds':>8} {'images/s':>9}", flush=True)
    rows = [measure(str(dataset), w, workdir / "out" / f"local-{w}") for w in (1, default_workers)]
    report: dict[str, Any] = {"dataset": str(dataset), "cpus": os.cpu_count(), "default_workers": default_workers}
    report["runs"] = rows
    if not args.skip_s3:
        services_module = load_services_module()
        services_dir = workdir / "services"
        services = services_module.start_services(services_dir)
        try:
            os.environ.update(services.env())  # the edge: credentials and endpoint for boto3
            s3 = make_s3_client(endpoint_url=services.s3_endpoint)
            uploaded = upload_dataset(s3, dataset, dataset.name)
            report["upload_seconds"] = None if uploaded is None else round(uploaded, 1)
            uri = f"s3://{BUCKET}/{dataset.name}"
            rows += [measure(uri, w, workdir / "out" / f"s3-{w}", s3) for w in (1, default_workers)]
        finally:
            services_module.stop_services(services_dir)
    speed = {(r["source"], r["workers"]): r["images_per_s"] for r in rows}
    report["speedup_default_over_1_worker"] = {
        source: round(speed[(source, default_workers)] / speed[(source, 1)], 2)
        for source in ("local", "s3")
        if (source, 1) in speed
    }
    return report


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print the table and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workdir", type=Path, required=True, help="cache for the dataset, services and outputs")
    parser.add_argument("--output", type=Path, help="JSON report (default: WORKDIR/prepare_data.json)")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--skip-s3", action="store_true", help="measure the local folder only")
    args = parser.parse_args(argv)
    # prepare_data's progress bar would interleave with the table; tqdm reads this when tlops.data imports it.
    os.environ.setdefault("TQDM_DISABLE", "1")
    report = run(args)
    output = args.output or args.workdir / "prepare_data.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"speed-up of {report['default_workers']} workers over 1: {report['speedup_default_over_1_worker']}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
