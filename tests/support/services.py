"""Start and stop real local services (SeaweedFS S3 and an MLflow server) for tests and CI.

The same code as ``tlops stack up|down`` (:mod:`tlops.stack`) starts and stops them; only the ports (free ones,
picked at start) and the fixed test credentials differ. Everything binds to 127.0.0.1. Logs go to files in the
work directory (``weed.log``, ``mlflow.log``) and the process records to ``pids``, so a failed start can be
diagnosed and a detached start can be stopped later.

Library use (pytest fixtures)::

    services = start_services(workdir)
    ...
    stop_services(workdir)

CLI use (CI)::

    python tests/support/services.py start --workdir DIR --env-file DIR/env.sh
    . DIR/env.sh
    python tests/support/services.py stop --workdir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tlops.errors import TlopsError
from tlops.stack import lifecycle
from tlops.stack.config import BUCKET, HOST, MLFLOW_LOG, PIDS_FILE, REGION, WEED_LOG, Credentials, Ports, StackConfig
from tlops.stack.config import export_lines as _export_lines
from tlops.stack.services import s3_client

__all__ = [
    "ACCESS_KEY",
    "HOST",
    "MLFLOW_BUCKET",
    "PIDS_FILE",
    "REGION",
    "SECRET_KEY",
    "Services",
    "make_s3_client",
    "start_services",
    "stop_services",
]

ACCESS_KEY = "tlops-test"
SECRET_KEY = "tlops-test-secret"
MLFLOW_BUCKET = BUCKET

S3_READY_TIMEOUT_S = 60.0
MLFLOW_READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class Services:
    """Endpoints and credentials of running services.

    Attributes:
        s3_endpoint: SeaweedFS S3 gateway URL, e.g. ``http://127.0.0.1:8333``.
        access_key: S3 access key id.
        secret_key: S3 secret access key.
        mlflow_uri: MLflow tracking server URL, e.g. ``http://127.0.0.1:5000``.
    """

    s3_endpoint: str
    access_key: str
    secret_key: str
    mlflow_uri: str

    def env(self) -> dict[str, str]:
        """Environment variables that point AWS SDKs and the tests at these services.

        Returns:
            Mapping of variable name to value.
        """
        return {
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "TLOPS_TEST_MLFLOW_URI": self.mlflow_uri,
            "TLOPS_TEST_S3_ENDPOINT": self.s3_endpoint,
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Services | None:
        """Build from variables written by :meth:`env` (e.g. services started by CI).

        Args:
            environ: Environment to read; defaults to ``os.environ``.

        Returns:
            The services, or None when ``TLOPS_TEST_MLFLOW_URI`` or ``TLOPS_TEST_S3_ENDPOINT`` is unset.
        """
        env = os.environ if environ is None else environ
        s3 = env.get("TLOPS_TEST_S3_ENDPOINT")
        mlflow_uri = env.get("TLOPS_TEST_MLFLOW_URI")
        if not s3 or not mlflow_uri:
            return None
        return cls(
            s3_endpoint=s3,
            access_key=env.get("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            mlflow_uri=mlflow_uri,
        )


def make_s3_client(services: Services, *, secret_key: str | None = None, retries: int = 3) -> Any:
    """Create a boto3 S3 client for the SeaweedFS gateway.

    Args:
        services: Running services.
        secret_key: Override the secret key (to test that wrong credentials are rejected).
        retries: Total attempts per request.

    Returns:
        A ``botocore`` S3 client.
    """
    credentials = Credentials(services.access_key, services.secret_key if secret_key is None else secret_key)
    return s3_client(services.s3_endpoint, credentials, retries=retries)


def _free_ports(count: int) -> list[int]:
    """Ask the kernel for ``count`` distinct free TCP ports on the loopback interface."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _log_tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file (or a note that it is missing)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no {path.name})"
    return "\n".join(text.splitlines()[-lines:])


def start_services(workdir: Path) -> Services:
    """Start SeaweedFS (with S3) and an MLflow tracking server on free ports, and wait until both work.

    Args:
        workdir: Directory for data, logs and the ``pids`` file; created if missing. Data there from an earlier
            start is kept (the ports change).

    Returns:
        Endpoints and credentials of the running services.

    Raises:
        RuntimeError: A service failed to start; the log tails are printed to stderr and anything already
            started is stopped.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    names = ["s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "mlflow"]
    ports = Ports(**dict(zip(names, _free_ports(len(names)), strict=True)))
    config = StackConfig(workdir, ports, Credentials(ACCESS_KEY, SECRET_KEY))
    t0 = time.monotonic()
    try:
        lifecycle.start(config, os.environ, s3_timeout=S3_READY_TIMEOUT_S, mlflow_timeout=MLFLOW_READY_TIMEOUT_S)
    except TlopsError as e:
        for log in (WEED_LOG, MLFLOW_LOG):
            print(f"----- tail of {workdir / log} -----\n{_log_tail(workdir / log)}", file=sys.stderr)
        raise RuntimeError(f"starting test services in {workdir} failed: {e}") from e
    print(f"services ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return Services(
        s3_endpoint=config.s3_endpoint,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        mlflow_uri=config.mlflow_uri,
    )


def _read_pids(workdir: Path) -> list[tuple[str, int]]:
    """The recorded ``(name, pid)`` of each service (``weed``, ``mlflow``); each pid is also its process group."""
    return [(record.name, record.pid) for record in lifecycle.read_records(Path(workdir).resolve())]


def stop_services(workdir: Path, grace: float = STOP_GRACE_S) -> None:
    """Stop services started by :func:`start_services` (or the ``start`` CLI) in ``workdir``.

    Sends SIGTERM to the recorded processes (those that are still the recorded ones), waits up to ``grace``
    seconds, then SIGKILLs what is left. Safe to call more than once and when nothing was started.

    Args:
        workdir: The directory passed to :func:`start_services`.
        grace: Seconds to wait for a clean exit before killing.
    """
    lifecycle.stop(Path(workdir).resolve(), grace)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``start`` (detached) or ``stop`` the services.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        Process exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start services in the background; return when ready")
    p_start.add_argument("--workdir", type=Path, required=True, help="data, logs and pids directory")
    p_start.add_argument("--env-file", type=Path, required=True, help="where to write `export KEY=VALUE` lines")
    p_stop = sub.add_parser("stop", help="stop services started with `start --workdir`")
    p_stop.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "start":
        try:
            services = start_services(args.workdir)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        args.env_file.parent.mkdir(parents=True, exist_ok=True)
        args.env_file.write_text(_export_lines(services.env()))
        print(json.dumps(asdict(services)))
        return 0
    stop_services(args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
