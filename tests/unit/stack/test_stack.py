"""``tlops stack up|status|down`` as README.md's "Local stack" shows them, and what they refuse.

The README's commands run as subprocesses of the installed ``tlops`` in a temporary working directory (so the
stack's folder is that directory's ``.tlops-stack``), through :func:`test_readme.readme_command`, exactly as typed
(the default ports; the other tests pick free ones). Every test stops what it started, also when it fails. The tests
that start services are marked ``integration``; those that only check what ``up``, ``down`` and ``status`` refuse
are not.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_readme import readme_command, run
from tlops.stack import lifecycle
from tlops.stack.config import DEFAULT_DIR, DEFAULT_MLFLOW_PORT, DEFAULT_S3_PORT, Ports
from tlops.stack.processes import ProcessRecord, append_record, port_taken

UP = "tlops stack up"
STATUS = "tlops stack status"
DOWN = "tlops stack down"


@pytest.fixture
def cwd(tmp_path: Path) -> Iterator[Path]:
    """The working directory of the README's commands; whatever stack runs from it is stopped at the end."""
    try:
        yield tmp_path
    finally:
        lifecycle.stop(tmp_path / DEFAULT_DIR, grace=5)


def _free_ports() -> tuple[int, int]:
    """An S3 port whose SeaweedFS ports (it, the 3 above it, each + 10000) are free, and a free MLflow port."""
    rng = random.Random()
    for _ in range(500):
        ports = Ports.derived(rng.randrange(20000, 22000), rng.randrange(22100, 23000))  # below ephemeral ports
        if not any(port_taken("127.0.0.1", port) for port in (*ports.seaweedfs().values(), ports.mlflow)):
            return ports.s3, ports.mlflow
    raise AssertionError("no free ports for a stack")


def _tlops(text: str, cwd: Path, extra: tuple[str, ...] = (), env: dict[str, str] | None = None, timeout: float = 600):
    command = readme_command(text)
    command.argv += extra
    return run(command, cwd, env, timeout=timeout)


def _status_rows(stdout: str) -> dict[str, list[str]]:
    header, *rows = stdout.splitlines()
    assert header.split() == ["service", "pid", "url", "state"]
    return {row.split()[0]: row.split(maxsplit=3)[1:] for row in rows}


def test_a_taken_port_is_named_with_its_option_and_nothing_starts(cwd: Path) -> None:
    s3_port, mlflow_port = _free_ports()
    ports = ("--s3-port", str(s3_port), "--mlflow-port", str(mlflow_port))
    directory = cwd / DEFAULT_DIR
    cases = [
        (mlflow_port, "the MLflow server", "--mlflow-port PORT"),
        (s3_port + 2 + 10000, "SeaweedFS's volume server gRPC, --s3-port + 10002", "--s3-port PORT"),
    ]
    for taken, owner, option in cases:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", taken))
            holder.listen()
            result = _tlops(UP, cwd, ports)
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"tlops: error: port {taken} on 127.0.0.1 is taken ({owner} needs it)")
        assert option in result.stderr
        # Nothing started, nothing recorded; a new folder is not even created.
        assert not directory.exists() or sorted(p.name for p in directory.iterdir()) == [".lock"]
        directory.mkdir(exist_ok=True)  # the second case: an existing folder


def test_down_and_status_with_nothing_running(cwd: Path) -> None:
    directory = cwd / DEFAULT_DIR
    down = _tlops(DOWN, cwd)
    assert (down.returncode, down.stdout) == (0, "")
    assert down.stderr == f"tlops stack: no tlops stack runs from {directory}: nothing to stop\n"
    status = _tlops(STATUS, cwd)
    assert status.returncode == 3
    assert {name: row for name, row in _status_rows(status.stdout).items()} == {
        "seaweedfs": ["-", "-", "stopped"],
        "mlflow": ["-", "-", "stopped"],
    }
    assert f"no tlops stack runs from {directory}: start it with tlops stack up" in status.stderr
    assert not directory.exists()  # neither created a folder


def test_down_leaves_a_recorded_pid_alone_once_it_is_another_process(cwd: Path) -> None:
    """A pid in the records that now belongs to another process (other start time, no token) is not signalled."""
    directory = cwd / DEFAULT_DIR
    directory.mkdir()
    other = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        ticks = int(Path(f"/proc/{other.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        append_record(directory / "pids", ProcessRecord("weed", other.pid, ticks - 1, "not-its-token"))
        down = _tlops(DOWN, cwd)
        assert down.returncode == 0 and "no tlops stack runs from" in down.stderr, down.stderr
        assert other.poll() is None
        status = _tlops(STATUS, cwd)
        assert status.returncode == 3
        assert _status_rows(status.stdout)["seaweedfs"][0] == "-"
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()


def test_the_defaults_are_the_cluster_ports_and_the_stack_folder() -> None:
    from tlops.cli.parser import build_parser

    args = build_parser().parse_args(["stack", "up"])
    assert (args.dir, args.s3_port, args.mlflow_port) == (Path(".tlops-stack"), 8333, 5000)
    assert (DEFAULT_S3_PORT, DEFAULT_MLFLOW_PORT) == (8333, 5000)
    ports = Ports.derived()
    assert (ports.master, ports.volume, ports.filer, ports.filer_grpc) == (8334, 8335, 8336, 18336)
