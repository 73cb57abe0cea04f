"""`mlflow models serve` of a logged model in a process of its own, offline, for the serving tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 300


@contextlib.contextmanager
def serve_model(model_uri: str, mlflow_uri: str, log: Path) -> Iterator[str]:
    """Serve ``model_uri`` with ``--env-manager local`` on a free local port until the block ends; its base URL.

    The server gets no AWS or test settings (only the tracking URI) and no Hugging Face hub access.
    """
    import requests

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "TLOPS_TEST_"))}
    env |= {
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "PATH": f"{BIN}{os.pathsep}{env['PATH']}",  # the server starts uvicorn from the venv's bin
        "HF_HUB_OFFLINE": "1",  # the model must not need the Hugging Face hub
        "NO_PROXY": "127.0.0.1,localhost",
    }
    command = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=60)
