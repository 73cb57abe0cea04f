"""Start, inspect and stop the stack of a folder: the processes it recorded there, and no others."""

from __future__ import annotations

import contextlib
import fcntl
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tlops.errors import TlopsError
from tlops.stack import processes, services
from tlops.stack.config import (
    HOST,
    LOCK_FILE,
    MLFLOW_LOG,
    PIDS_FILE,
    STATE_FILE,
    WEED_DATA,
    WEED_LOG,
    Ports,
    StackConfig,
)
from tlops.stack.processes import ProcessRecord

S3_READY_TIMEOUT_S = 90.0
MLFLOW_READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 20.0  # SeaweedFS stops cleanly in about 15 s: its filer waits that long for its own gRPC streams
LOG_LINES = 8
SERVICES = ("weed", "mlflow")  # in order of start; stopped in reverse
TITLES = {"weed": "SeaweedFS", "mlflow": "the MLflow server"}
LOGS = {"weed": WEED_LOG, "mlflow": MLFLOW_LOG}
SOCKET_DIR = Path("/tmp")  # where SeaweedFS puts its unix sockets, named after their ports


@dataclass(frozen=True)
class ServiceState:
    """A service of a stack as recorded in its folder: its process record (if any) and whether that runs."""

    name: str
    record: ProcessRecord | None
    running: bool


def read_records(directory: Path) -> list[ProcessRecord]:
    """The processes the stack of ``directory`` recorded when it started (none when it is stopped)."""
    return processes.read_records(directory / PIDS_FILE)


def states(directory: Path) -> list[ServiceState]:
    """Each service of the stack of ``directory``, in order of start."""
    records = {record.name: record for record in read_records(directory)}
    return [
        ServiceState(name, records.get(name), name in records and processes.is_running(records[name]))
        for name in SERVICES
    ]


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold the folder's lock: one ``up`` or ``down`` at a time per folder (the folder must exist)."""
    with (directory / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _port_owners(ports: Ports) -> list[tuple[int, str, str]]:
    """Each port with the server that listens there and the option that moves it."""
    titles = {"s3": "S3 gateway", "master": "master", "volume": "volume server", "filer": "filer"}
    owners = [(ports.mlflow, "the MLflow server", "--mlflow-port")]
    for name, port in ports.seaweedfs().items():
        title = titles[name.removesuffix("_grpc")] + (" gRPC" if name.endswith("_grpc") else "")
        derived = "" if name == "s3" else f", --s3-port + {port - ports.s3}"
        owners.append((port, f"SeaweedFS's {title}{derived}", "--s3-port"))
    return owners


def check_ports(ports: Ports, host: str = HOST) -> None:
    """Check that every port of a stack is free on ``host``, before anything starts.

    Raises:
        TlopsError: naming the first taken port, the service that needs it and the option that moves it.
    """
    for port, owner, option in _port_owners(ports):
        if processes.port_taken(host, port):
            raise TlopsError(
                f"port {port} on {host} is taken ({owner} needs it): stop what listens there or choose "
                f"another port with {option} PORT"
            )


def _alive(record: ProcessRecord) -> Callable[[], None]:
    def check() -> None:
        code = processes.exit_status(record)
        if code is not None:
            raise services.NotReady(f"it exited with status {code}")

    return check


def _failure(config: StackConfig, name: str, error: BaseException) -> str:
    log = config.path(LOGS[name])
    reason = str(error) or type(error).__name__
    tail = processes.log_tail(log, LOG_LINES)
    lines = "".join(f"\n  {line}" for line in tail) if tail else " (empty)"
    return (
        f"{TITLES[name]} did not start: {reason}; nothing is left running; the cause is in {log}, whose last "
        f"lines are:{lines}"
    )


def start(
    config: StackConfig,
    environ: Mapping[str, str],
    *,
    s3_timeout: float = S3_READY_TIMEOUT_S,
    mlflow_timeout: float = MLFLOW_READY_TIMEOUT_S,
    weed: str | None = None,
) -> None:
    """Start SeaweedFS (with its S3 gateway) and the MLflow server detached, and wait until both work.

    Writes the S3 identities, the stack's state (ports, URLs) and the process records into the folder; the
    services log there and keep their data there (``weed-data/``, ``mlflow.db``). The caller checks that no
    stack of the folder runs (and, if it wants to, that the ports are free).

    Args:
        config: The stack.
        environ: The environment the services inherit, less its AWS_ and MLFLOW_ variables.
        s3_timeout: Seconds SeaweedFS has to answer an S3 round trip.
        mlflow_timeout: Seconds the MLflow server has to answer.
        weed: The SeaweedFS binary (default: :func:`services.find_weed` on the environment's ``PATH``).

    Raises:
        TlopsError: a service did not start; what had started is stopped, and the message ends with its log tail.
    """
    directory = config.directory
    config.path(WEED_DATA).mkdir(parents=True, exist_ok=True)
    pids = directory / PIDS_FILE
    pids.unlink(missing_ok=True)
    weed = weed or services.find_weed(environ.get("PATH"))
    services.write_s3_identities(config)
    (directory / STATE_FILE).write_text(json.dumps(config.state(), indent=2) + "\n")
    base = {k: v for k, v in environ.items() if not k.startswith(("AWS_", "MLFLOW_", processes.TOKEN_ENV))}
    commands = {
        "weed": (services.weed_command(config, weed), services.weed_env(base)),
        "mlflow": (services.mlflow_command(config), services.mlflow_env(config, base)),
    }
    token = uuid.uuid4().hex
    started: list[ProcessRecord] = []
    failing = SERVICES[0]
    try:
        for name in SERVICES:  # MLflow touches S3 only when artifacts move: it boots while SeaweedFS settles
            failing = name
            argv, env = commands[name]
            record = processes.spawn(name, argv, cwd=directory, env=env, log_path=directory / LOGS[name], token=token)
            processes.append_record(pids, record)
            started.append(record)
        weed_record, mlflow_record = started
        failing = "weed"
        services.wait_s3(config, _alive(weed_record), s3_timeout)
        services.ensure_bucket(config)
        failing = "mlflow"
        services.wait_mlflow(config, _alive(mlflow_record), mlflow_timeout)
    except BaseException as error:
        processes.stop(started, STOP_GRACE_S)
        pids.unlink(missing_ok=True)
        _remove_weed_sockets(directory)
        if isinstance(error, Exception) and not isinstance(error, TlopsError):
            raise TlopsError(_failure(config, failing, error)) from error
        raise


def stop(directory: Path, grace: float = STOP_GRACE_S) -> list[ProcessRecord]:
    """Stop the processes the stack of ``directory`` recorded: SIGTERM, then SIGKILL after ``grace`` seconds.

    The data stays. A recorded pid that is another process now is left alone. Safe when nothing runs.

    Returns:
        The records of the processes that were running.
    """
    records = read_records(directory)
    stopped = processes.stop(records, grace)
    if not any(processes.is_running(record) for record in records):
        (directory / PIDS_FILE).unlink(missing_ok=True)
    if any(record.name == "weed" for record in records):
        _remove_weed_sockets(directory)
    return stopped


def _remove_weed_sockets(directory: Path) -> None:
    """Delete the unix sockets SeaweedFS leaves behind (named after the stack's ports) when it is killed."""
    try:
        ports = json.loads((directory / STATE_FILE).read_text())["ports"]
    except (OSError, KeyError, ValueError):
        return
    for port in ports.values():
        for socket_path in SOCKET_DIR.glob(f"seaweedfs-*-{int(port)}.sock"):
            with contextlib.suppress(OSError):
                socket_path.unlink()
