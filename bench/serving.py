"""Serving latency per image: ``mlflow models serve`` over HTTP against the same model loaded in process.

Usage (run by hand; about 3 minutes on 2 busy CPU cores)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python bench/serving.py \
        --workdir /tmp/tlops-bench-serving --json /tmp/tlops-bench-serving/serving.json

The model: ``efficientnet_lite0`` (ImageNet weights) with a seeded 10-class linear head (``build_classifier``; no
training: latency does not depend on the head's weights), logged by ``log_served_model`` (the served pyfunc only)
at ``--image-size`` (default 224, the backbone's own) into a sqlite MLflow store in the workdir. The input: a real
digit of scikit-learn's demo (8x8 grey) upscaled to 224x224 (nearest) and encoded as PNG.

Two clients of the same model URI, measured in the same run, the calls interleaved (one in process, one over
HTTP, ...) so that load from other jobs falls on both alike:

* in process: ``mlflow.pyfunc.load_model(uri).predict(DataFrame({"image": [png, ...]}))``;
* server: ``mlflow models serve -m URI --env-manager local --workers 1`` as a subprocess (the venv's bin first on
  PATH: it starts ``uvicorn``), POST ``/invocations`` with ``{"dataframe_split": {"columns": ["image"], "data":
  [[base64], ...]}}`` through one keep-alive ``requests.Session``.

``--requests`` single-image calls and ``--batches`` calls of ``--batch-size`` images each; per image, the median
and p90 of the call's wall time (a batch's divided by its images), and the ratio server / in process of the
medians. The server inherits this process's environment (so ``OMP_NUM_THREADS`` applies to both), and its
process group is killed at the end.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from tlops.data.demo import DIGIT_NAMES
from tlops.serving.model import ServingConfig

BACKBONE = "efficientnet_lite0"
WARMUP = 3


# --- model and input ---------------------------------------------------------------------------------------------


def log_model(workdir: Path, image_size: int) -> str:
    """The served model of an untrained-head lite0 classifier, logged into ``workdir``'s sqlite store; its URI."""
    import mlflow

    from tlops.models.backbones import build_classifier, load_backbone
    from tlops.serving.package import log_served_model

    torch.manual_seed(0)
    backbone = load_backbone(BACKBONE, image_size=image_size or None)
    model = build_classifier(backbone, len(DIGIT_NAMES)).eval()
    classes = list(DIGIT_NAMES)
    mlflow.set_tracking_uri(tracking_uri(workdir))
    experiment = f"serving-{int(time.time())}"
    experiment_id = mlflow.create_experiment(experiment, artifact_location=(workdir / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment_id):
        config = ServingConfig(classes, asdict(backbone.data_config))
        logged = log_served_model(model, config, {"classes": classes, "backbone": BACKBONE}, tensor_model=False)
    return getattr(logged, "served", logged).model_uri  # LoggedModels(served, tensors), or a ModelInfo before


def tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir.resolve() / 'mlflow.db'}"


def digit_png(size: int) -> bytes:
    """The first digit of scikit-learn's demo, upscaled to ``size`` x ``size`` (nearest), as PNG bytes."""
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[0] * (255.0 / 16.0)).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").resize((size, size), Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


# --- the server --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(uri: str, workdir: Path, port: int) -> subprocess.Popen:
    """``mlflow models serve`` in its own process group, the venv's bin first on PATH, logging to the workdir."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = os.environ | {"MLFLOW_TRACKING_URI": tracking_uri(workdir), "PATH": path}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local"]
    return subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=(workdir / "serve.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(server: subprocess.Popen, url: str, log: Path, timeout: float = 180.0) -> float:
    """Seconds until ``/ping`` answers 200; fails with the log's tail if the server exits or times out."""
    import requests

    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except requests.ConnectionError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"the server did not answer /ping within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL if it lingers."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    except ProcessLookupError:
        pass


# --- clients -----------------------------------------------------------------------------------------------------


def in_process_client(uri: str) -> Callable[[list[bytes]], list[str]]:
    """Labels of ``mlflow.pyfunc.load_model(uri).predict`` on a DataFrame of PNG bytes."""
    import mlflow

    model = mlflow.pyfunc.load_model(uri)

    def predict(images: list[bytes]) -> list[str]:
        return list(model.predict(pd.DataFrame({"image": images}))["label"])

    return predict


def server_client(url: str) -> Callable[[list[bytes]], list[str]]:
    """Labels of POST ``/invocations`` with the base64 PNGs as ``dataframe_split``, over one keep-alive session."""
    import requests

    session = requests.Session()

    def predict(images: list[bytes]) -> list[str]:
        data = [[base64.b64encode(image).decode()] for image in images]
        payload = {"dataframe_split": {"columns": ["image"], "data": data}}
        response = session.post(f"{url}/invocations", json=payload, timeout=300)
        response.raise_for_status()
        return [row["label"] for row in response.json()["predictions"]]

    return predict


def timed(client: Callable[[list[bytes]], list[str]], images: list[bytes]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    labels = client(images)
    return time.perf_counter() - start, labels


def measure(clients: dict[str, Callable], images: list[bytes], calls: int) -> dict[str, Any]:
    """Per image ms of ``calls`` calls of each client on ``images``, interleaved, after a warm-up."""
    for client in clients.values():
        for _ in range(WARMUP):
            client(images)
    seconds: dict[str, list[float]] = {name: [] for name in clients}
    labels: dict[str, set[str]] = {name: set() for name in clients}
    for _ in range(calls):
        for name, client in clients.items():
            elapsed, got = timed(client, images)
            seconds[name].append(elapsed * 1000 / len(images))
            labels[name].update(got)
    return {name: stats(values) | {"labels": sorted(labels[name])} for name, values in seconds.items()}


def stats(values: list[float]) -> dict[str, Any]:
    median, p90 = np.percentile(values, [50, 90])
    return {"median_ms": float(median), "p90_ms": float(p90), "calls": len(values), "ms": [round(v, 2) for v in values]}


# --- report ------------------------------------------------------------------------------------------------------


def markdown(results: dict[str, dict[str, Any]], batch_size: int) -> str:
    """One row per (request size, client), and the ratio server / in process."""
    lines = [
        "| request | client | calls | median ms/image | p90 ms/image | server / in process (median) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for request, label in (("single", "1 image"), ("batch", f"{batch_size} images")):
        row = results[request]
        ratio = row["server"]["median_ms"] / row["in-process"]["median_ms"]
        for client in ("in-process", "server"):
            r = row[client]
            shown = f"{ratio:.2f}x" if client == "server" else ""
            lines.append(f"| {label} | {client} | {r['calls']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {shown} |")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlops-bench-serving"))
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--requests", type=int, default=50, help="single-image calls per client (default 50)")
    parser.add_argument("--batches", type=int, default=10, help="batch calls per client (default 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch call (default 32)")
    parser.add_argument("--image-size", type=int, default=224, help=f"input size of {BACKBONE} (default 224)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Log the model, start the server, time both clients, print the table, write the JSON, stop the server."""
    args = parse(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    uri = log_model(args.workdir, args.image_size)
    png = digit_png(args.image_size)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(uri, args.workdir, port)
    try:
        clients = {"in-process": in_process_client(uri)}
        startup = wait_ready(server, url, args.workdir / "serve.log")
        clients["server"] = server_client(url)
        results = {
            "single": measure(clients, [png], args.requests),
            "batch": measure(clients, [png] * args.batch_size, args.batches),
        }
    finally:
        stop_server(server)
    seconds = time.perf_counter() - start
    print(f"{BACKBONE} at {args.image_size} px, {len(png)}-byte PNG; model {uri}\n")
    print(markdown(results, args.batch_size) + "\n")
    print(
        f"server ready {startup:.1f} s after start; {seconds:.0f} s in all; torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "backbone": BACKBONE,
            "image_size": args.image_size,
            "png_bytes": len(png),
            "model_uri": uri,
            "batch_size": args.batch_size,
            "server_startup_seconds": round(startup, 2),
            "seconds": round(seconds, 1),
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average": os.getloadavg(),
            "results": results,
        }
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
