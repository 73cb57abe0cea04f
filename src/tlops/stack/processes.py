"""Detached service processes: start each in its own session, record who it is, stop exactly those processes.

A record holds a process's name, pid, start time (clock ticks since boot, from ``/proc/PID/stat``) and a token
that the process and all its children carry in their environment (:data:`TOKEN_ENV`). A recorded pid is
signalled only while it is still that process (same start time); when the leader is gone, only the members of
its process group that carry the token are. Without ``/proc`` (not Linux), a pid that still leads its own
process group is taken as the recorded process.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TOKEN_ENV = "TLOPS_STACK_TOKEN"
PROC = Path("/proc")
KILL_WAIT_S = 5.0
POLL_S = 0.1

# The Popen handles of processes this process started, so that their exit is reaped (no zombies) and seen.
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """A started process: its name, pid (also its process group and session id) and identity.

    Attributes:
        name: The service's name, e.g. ``weed``.
        pid: Its pid, which leads its own session and process group.
        start_ticks: Its start time in clock ticks since boot, or None where ``/proc`` is missing.
        token: The value of :data:`TOKEN_ENV` in its (and its children's) environment.
    """

    name: str
    pid: int
    start_ticks: int | None
    token: str

    def line(self) -> str:
        """The record as one line of a pids file."""
        ticks = "-" if self.start_ticks is None else str(self.start_ticks)
        return f"{self.name} {self.pid} {ticks} {self.token}\n"

    @classmethod
    def parse(cls, line: str) -> ProcessRecord | None:
        """A record from a line of :meth:`line`, or None for a line that is not one."""
        parts = line.split()
        if len(parts) != 4 or not parts[1].isdigit() or not (parts[2].isdigit() or parts[2] == "-"):
            return None
        return cls(parts[0], int(parts[1]), None if parts[2] == "-" else int(parts[2]), parts[3])


def read_records(path: Path) -> list[ProcessRecord]:
    """The records of a pids file (none when it is missing)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [record for record in map(ProcessRecord.parse, lines) if record is not None]


def append_record(path: Path, record: ProcessRecord) -> None:
    """Add a record to a pids file."""
    with path.open("a") as file:
        file.write(record.line())


def spawn(
    name: str, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path, token: str
) -> ProcessRecord:
    """Start ``argv`` detached: its own session, stdin closed, stdout and stderr appended to ``log_path``.

    The process outlives this one. Its environment is ``env`` plus :data:`TOKEN_ENV` = ``token``.

    Returns:
        The record that identifies it later.
    """
    with log_path.open("ab") as log:
        log.write(f"$ {shlex.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env={**env, TOKEN_ENV: token},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _SPAWNED[process.pid] = process
    return ProcessRecord(name, process.pid, _stat(process.pid).start_ticks if PROC.is_dir() else None, token)


def exit_status(record: ProcessRecord) -> int | None:
    """The exit status of a process this process started, once it has exited; None while it runs."""
    process = _SPAWNED.get(record.pid)
    if process is not None:
        return process.poll()
    return None if is_running(record) else -1


@dataclass(frozen=True)
class _Stat:
    state: str
    pgid: int
    start_ticks: int


def _stat(pid: int) -> _Stat:
    """State, process group and start time of ``pid`` from ``/proc/PID/stat`` (OSError when it is gone)."""
    text = (PROC / str(pid) / "stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": the name may hold spaces and parentheses
    return _Stat(state=fields[0], pgid=int(fields[2]), start_ticks=int(fields[19]))


def _stats() -> Iterator[tuple[int, _Stat]]:
    """Every process's pid and stat, skipping those that vanish meanwhile."""
    for entry in os.listdir(PROC):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                yield int(entry), _stat(int(entry))


def _carries(pid: int, token: str) -> bool:
    """Whether process ``pid`` has ``TOKEN_ENV=token`` in its environment."""
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{TOKEN_ENV}={token}".encode() in environ.split(b"\0")


def _members(record: ProcessRecord) -> tuple[bool, list[int]]:
    """Whether the record's process group is provably its own, and the live processes of it that are.

    Returns:
        ``(True, pids)`` when the recorded leader still exists (a zombie counts) with its start time: the whole
        group is its own; ``(False, pids)`` with the group's members that carry its token when the leader is gone.
    """
    process = _SPAWNED.get(record.pid)
    if process is not None:
        process.poll()  # reap our own child, so that an exited leader is gone rather than a zombie
    if not PROC.is_dir():
        return _members_without_proc(record)
    try:
        leader = _stat(record.pid)
    except (OSError, ValueError, IndexError):
        leader = None
    if leader is not None and leader.start_ticks != record.start_ticks:
        return False, []  # the pid is another process now; the group it led had emptied before the pid was reused
    live = [pid for pid, stat in _stats() if stat.pgid == record.pid and stat.state not in "ZX"]
    if leader is not None:
        return True, live
    return False, [pid for pid in live if _carries(pid, record.token)]


def _members_without_proc(record: ProcessRecord) -> tuple[bool, list[int]]:
    try:
        if os.getpgid(record.pid) != record.pid:
            return False, []
        os.killpg(record.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False, []
    return True, [record.pid]


def is_running(record: ProcessRecord) -> bool:
    """Whether the recorded process, or a process of its group that carries its token, is alive."""
    return bool(_members(record)[1])


def _signal(record: ProcessRecord, sig: signal.Signals) -> None:
    """Send ``sig`` to the record's own processes: its group while it leads it, else each member with its token."""
    whole_group, members = _members(record)
    with contextlib.suppress(ProcessLookupError):
        if whole_group and members:
            os.killpg(record.pid, sig)
            return
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _wait_gone(records: Sequence[ProcessRecord], seconds: float) -> list[ProcessRecord]:
    """Wait up to ``seconds`` for the records' processes to exit; return those still running."""
    deadline = time.monotonic() + seconds
    while True:
        left = [record for record in records if is_running(record)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL_S)


def stop(records: Sequence[ProcessRecord], grace: float) -> list[ProcessRecord]:
    """Stop the records' processes: SIGTERM in reverse order of start, SIGKILL to what is left after ``grace`` s.

    Processes that no longer are the recorded ones are left alone.

    Returns:
        The records that were running.
    """
    running = [record for record in records if is_running(record)]
    for record in reversed(running):
        _signal(record, signal.SIGTERM)
    for record in _wait_gone(running, grace):
        _signal(record, signal.SIGKILL)
    _wait_gone(running, KILL_WAIT_S)
    for record in running:
        process = _SPAWNED.pop(record.pid, None)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=1)
    return running


def port_taken(host: str, port: int) -> bool:
    """Whether a server could not listen on ``host:port`` (something listens there already)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT does not count
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def log_tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` non-blank lines of a log file (none when it is missing)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]
