"""Running ``tlops``: as the installed console script, as ``python -m tlops.cli``, or in this process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from test_readme import base_env

TLOPS = Path(sys.executable).parent / "tlops"
CLI_TIMEOUT_S = 120

# ``tlops submit``/``schedule`` arguments that name a dataset and a tracking server, neither of them reached.
REMOTE = ["--data", "s3://bucket/dataset", "--tracking-uri", "http://mlflow:5000"]


def clean_env() -> dict[str, str]:
    """This environment without any tracking server or S3 settings the developer may have exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env["TLOPS_DEVICE"] = "cpu"
    return env


def tlops_module(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m tlops.cli ARGS`` in ``cwd`` (with :func:`clean_env` unless ``env`` is given)."""
    return subprocess.run(
        [sys.executable, "-m", "tlops.cli", *args],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def tlops_script(
    arguments: list[str], cwd: Path, environment: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """The ``tlops`` console script with ``arguments`` in ``cwd``, its environment the README's plus ``environment``."""
    return subprocess.run(
        [str(TLOPS), *arguments],
        cwd=cwd,
        env=base_env() | environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> SimpleNamespace:
    """``tlops ARGS`` run by ``main`` here (for input refused before anything starts): exit status and output."""
    from tlops.cli import main
    from tlops.io.logs import LEVEL_ENV

    for name in ("KFP_HOST", "KFP_TOKEN", "KFP_NAMESPACE", "MLFLOW_TRACKING_URI", LEVEL_ENV):
        monkeypatch.delenv(name, raising=False)
    capsys.readouterr()
    status = main(list(args))
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=status, stdout=captured.out, stderr=captured.err)
