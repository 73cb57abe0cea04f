"""Images decoded and seconds spent on the data by one ``tlops run``: before and after the prepared-dataset cache.

Usage (run by hand; about a minute, most of it starting SeaweedFS)::

    python bench/read_once.py --workdir /tmp/tlops-bench-read-once [--images 2000] [--skip-s3]

What ``tlops run`` does with the data before its first training step, called here in process so that
:func:`tlops.data.images.decode_count` sees every decode:

- before: the preflight (``preflight_dataset`` without a cache: every image read and decoded), the pipeline's
  fingerprint-data step (``source_fingerprint``: a listing), the prepare-data step (``prepare_data`` without a
  cache: every image read and decoded again);
- after, first run (empty cache): the preflight prepares into the cache, fingerprint-data lists, prepare-data
  finds the entry by the fingerprint and copies it;
- after, next run (the same data again): the preflight and prepare-data both find the entry.

The dataset (``--images`` 64x64 JPEGs in 10 classes, generated once into ``WORKDIR/dataset-*``, as
bench/prepare_data.py makes them) is read from the local folder and, unless ``--skip-s3``, through a real SeaweedFS
S3 gateway (``tests/support/services.py``). ``SplitConfig().workers`` threads read and decode. Table on stdout, JSON to
``--output``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent


def _bench_prepare_data() -> ModuleType:
    """bench/prepare_data.py, imported by path: its dataset generator, services loader and uploader."""
    spec = importlib.util.spec_from_file_location("tlops_bench_prepare_data", BENCH / "prepare_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(phases: list[dict[str, Any]], name: str, call: Callable[[], Any]) -> Any:
    from tlops.data.images import decode_count

    before, start = decode_count(), time.perf_counter()
    result = call()
    phases.append({"phase": name, "decodes": decode_count() - before, "seconds": time.perf_counter() - start})
    return result


def one_run(source: str, workdir: Path, s3: Any, cache: Any | None) -> list[dict[str, Any]]:
    """The data part of one ``tlops run``: preflight, fingerprint-data, prepare-data; one row per phase."""
    from tlops.data.fingerprint import source_fingerprint
    from tlops.data.prepare import SplitConfig, preflight_dataset, prepare_data

    config = SplitConfig()
    output = workdir / "step-output"
    shutil.rmtree(output, ignore_errors=True)
    phases: list[dict[str, Any]] = []
    _timed(phases, "preflight", lambda: preflight_dataset(source, config, s3, cache))
    fingerprint = _timed(phases, "fingerprint-data", lambda: source_fingerprint(source, s3))
    _timed(phases, "prepare-data", lambda: prepare_data(source, output, config, s3, cache, fingerprint))
    return phases


def measure(label: str, source: str, workdir: Path, s3: Any = None) -> list[dict[str, Any]]:
    """Before (no cache), after with an empty cache, after with the entry there; print and return the rows."""
    from tlops.data.prepare import PreparedCache

    cache_dir = workdir / f"cache-{label}"
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache = PreparedCache.in_cache_dir(cache_dir)
    rows = []
    for case, used in (("before", None), ("after, first run", cache), ("after, next run", cache)):
        phases = one_run(source, workdir, s3, used)
        row = {
            "source": label,
            "case": case,
            "decodes": sum(p["decodes"] for p in phases),
            "seconds": round(sum(p["seconds"] for p in phases), 2),
            "phases": [p | {"seconds": round(p["seconds"], 2)} for p in phases],
        }
        detail = ", ".join(f"{p['phase']} {p['decodes']} / {p['seconds']:.2f}s" for p in phases)
        print(f"{label:<6} {case:<17} {row['decodes']:>8} {row['seconds']:>8.2f}   {detail}", flush=True)
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate (and upload) the dataset, measure; return the JSON report."""
    helpers = _bench_prepare_data()
    workdir = args.workdir.resolve()
    dataset = helpers.generate_dataset(workdir / f"dataset-{args.images}x10", args.images, 10)
    print(f"{'source':<6} {'case':<17} {'decodes':>8} {'seconds':>8}   phases (decodes / seconds)", flush=True)
    rows = measure("local", str(dataset), workdir)
    if not args.skip_s3:
        services_module = helpers.load_services_module()
        services_dir = workdir / "services"
        services = services_module.start_services(services_dir)
        try:
            os.environ.update(services.env())  # the edge: credentials and endpoint for boto3
            s3 = helpers.make_s3_client(endpoint_url=services.s3_endpoint)
            helpers.upload_dataset(s3, dataset, dataset.name)
            rows += measure("s3", f"s3://{helpers.BUCKET}/{dataset.name}", workdir, s3)
        finally:
            services_module.stop_services(services_dir)
    return {"dataset": str(dataset), "images": args.images, "cpus": os.cpu_count(), "runs": rows}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print the table and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workdir", type=Path, required=True, help="dataset, caches, services and outputs")
    parser.add_argument("--output", type=Path, help="JSON report (default: WORKDIR/read_once.json)")
    parser.add_argument("--images", type=int, default=2_000)
    parser.add_argument("--skip-s3", action="store_true", help="measure the local folder only")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bar between the table's lines
    report = run(args)
    output = args.output or args.workdir / "read_once.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
