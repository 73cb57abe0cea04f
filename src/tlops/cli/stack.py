"""``tlops stack up|down|status``: the cluster's S3 (SeaweedFS) and MLflow server on this machine, from a folder.

The command line is the edge: it hands the services this process's environment, and prints the environment
they answer at (``export`` lines on stdout, so that ``eval "$(tlops stack up)"`` works too) and notes on stderr.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from tlops.errors import TlopsError
from tlops.io.paths import check_writable_dir
from tlops.stack import lifecycle, services
from tlops.stack.config import (
    CREDENTIALS_FILE,
    DEFAULT_DIR,
    ENV_FILE,
    STATE_FILE,
    Ports,
    StackConfig,
    export_lines,
    load_config,
    load_or_create_credentials,
    write_private,
)

EXIT_NOT_RUNNING = 3
NAMES = {"weed": "seaweedfs", "mlflow": "mlflow"}


def command_stack(args: argparse.Namespace) -> int:
    """Run ``tlops stack ACTION``; returns the exit status."""
    directory = Path(os.path.abspath(args.dir))
    if args.stack_command == "up":
        return _up(args, directory)
    if args.stack_command == "down":
        return _down(args, directory)
    return _status(args, directory)


def _note(text: str) -> None:
    print(f"tlops stack: {text}", file=sys.stderr)


def _dir_option(args: argparse.Namespace) -> str:
    """`` --dir DIR`` as the user gave it, or nothing for the default folder."""
    return "" if Path(args.dir) == DEFAULT_DIR else f" --dir {shlex.quote(str(args.dir))}"


def _running_config(directory: Path) -> StackConfig | None:
    """The configuration of the stack that runs whole from ``directory``; a part of one is stopped."""
    states = lifecycle.states(directory)
    running = [state.name for state in states if state.running]
    if running and len(running) == len(states):
        config = load_config(directory)
        if config is None:
            raise TlopsError(
                f"a tlops stack runs from {directory} but its {STATE_FILE} or {CREDENTIALS_FILE} is gone: stop it "
                "with tlops stack down, then start it again"
            )
        return config
    if running:
        _note(f"only {', '.join(NAMES[name] for name in running)} of the stack in {directory} runs: restarting it")
    lifecycle.stop(directory)  # also forgets processes that exited on their own
    return None


def _up(args: argparse.Namespace, directory: Path) -> int:
    weed = services.find_weed(os.environ.get("PATH"))  # without the stack extra: say so before creating anything
    check_writable_dir(directory, "--dir")
    ports = Ports.derived(args.s3_port, args.mlflow_port)
    if not directory.exists():
        lifecycle.check_ports(ports)  # nothing can run from a new folder: fail before creating it
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with lifecycle.locked(directory):
        config = _running_config(directory)
        if config is not None:
            _note(f"a tlops stack already runs from {directory} (S3 {config.s3_endpoint}, MLflow {config.mlflow_uri})")
        else:
            lifecycle.check_ports(ports)
            config = StackConfig(directory, ports, load_or_create_credentials(directory))
            _note(f"starting SeaweedFS (S3 {config.s3_endpoint}) and MLflow ({config.mlflow_uri}) in {directory}")
            started = time.monotonic()
            lifecycle.start(config, os.environ, weed=weed)
            _note(f"ready in {time.monotonic() - started:.0f} s; data and logs stay in {directory}")
        env_file = Path(args.dir) / ENV_FILE
        write_private(directory / ENV_FILE, export_lines(config.env()))
    print(export_lines(config.env()), end="", flush=True)
    _note(f"these lines are in {env_file}: source {shlex.quote(str(env_file))}")
    _note(f"MLflow UI: {config.mlflow_uri}")
    _note(f"stop it with: tlops stack down{_dir_option(args)}")
    return 0


def _down(args: argparse.Namespace, directory: Path) -> int:
    stopped = []
    if directory.is_dir():
        with lifecycle.locked(directory):
            if any(state.running for state in lifecycle.states(directory)):
                _note(f"stopping the stack in {directory} (SeaweedFS takes about 15 s to stop cleanly)")
            stopped = lifecycle.stop(directory)
    if not stopped:
        _note(f"no tlops stack runs from {directory}: nothing to stop")
        return 0
    names = ", ".join(f"{NAMES.get(record.name, record.name)} (pid {record.pid})" for record in stopped)
    print(f"stopped {names}; the data stays in {directory} for the next tlops stack up{_dir_option(args)}")
    return 0


def _status(args: argparse.Namespace, directory: Path) -> int:
    config = load_config(directory) if directory.is_dir() else None
    if directory.is_dir():
        states = lifecycle.states(directory)
    else:
        states = [lifecycle.ServiceState(name, None, False) for name in lifecycle.SERVICES]
    urls = {"weed": config.s3_endpoint, "mlflow": config.mlflow_uri} if config else {}
    probes = {"weed": services.s3_answers, "mlflow": services.mlflow_answers}
    rows = [("service", "pid", "url", "state")]
    whole = True
    for state in states:
        answers = state.running and config is not None and probes[state.name](config)
        whole = whole and answers
        condition = "answers" if answers else "runs, does not answer" if state.running else "stopped"
        pid = str(state.record.pid) if state.running and state.record else "-"
        rows.append((NAMES[state.name], pid, urls.get(state.name, "-"), condition))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print("\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows))
    if whole:
        return 0
    if not any(state.running for state in states):
        _note(f"no tlops stack runs from {directory}: start it with tlops stack up{_dir_option(args)}")
    else:
        _note(f"the stack in {directory} is not whole: tlops stack up{_dir_option(args)} restarts it")
    return EXIT_NOT_RUNNING
