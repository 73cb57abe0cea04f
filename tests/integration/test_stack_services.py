"""``tlops stack up|status|down`` as README.md's "Local stack" shows them, and what they refuse.

The README's commands run as subprocesses of the installed ``tlops`` in a temporary working directory (so the
stack's folder is that directory's ``.tlops-stack``), through :func:`test_readme.readme_command`, exactly as typed
(the default ports; the other tests pick free ones). Every test stops what it started, also when it fails. The tests
that start services are marked ``integration``; those that only check what ``up``, ``down`` and ``status`` refuse
are not.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_readme import readme_command, run
from tlops.stack import lifecycle
from tlops.stack.config import DEFAULT_DIR, Ports
from tlops.stack.processes import port_taken

UP = "tlops stack up"


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


@pytest.mark.integration
def test_a_service_that_does_not_start_is_reported_with_its_log_and_nothing_stays(cwd: Path) -> None:
    s3_port, mlflow_port = _free_ports()
    directory = cwd / DEFAULT_DIR
    directory.mkdir()
    (directory / "mlflow.db").write_bytes(b"not a sqlite database " * 100)
    start = time.monotonic()
    up = _tlops(UP, cwd, ("--s3-port", str(s3_port), "--mlflow-port", str(mlflow_port)))
    assert up.returncode == 2, up.stderr
    starting, first, *tail = up.stderr.splitlines()
    assert starting.startswith("tlops stack: starting SeaweedFS")
    assert re.match(r"tlops: error: the MLflow server did not start: it exited with status \d+; nothing is left", first)
    assert f"the cause is in {directory / 'mlflow.log'}, whose last lines are:" in first
    assert tail and all(line.startswith("  ") for line in tail)
    assert not (directory / "pids").exists()
    ports = {*Ports.derived(s3_port, mlflow_port).seaweedfs().values(), mlflow_port}
    assert not [port for port in ports if port_taken("127.0.0.1", port)]
    assert time.monotonic() - start < 120
