"""The command line's contract: bad input to ``tlops run`` gives one line on stderr and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLI_TIMEOUT_S = 120


def _base_env() -> dict[str, str]:
    """This environment without any tracking server or S3 settings the developer may have exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env["TLOPS_DEVICE"] = "cpu"
    return env


def _tlops(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tlops.cli", *args],
        cwd=cwd,
        env=env or _base_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


# --- bad input to ``tlops run`` ---------------------------------------------------------------------------------


# --- help and prepare-data --------------------------------------------------------------------------------------


def test_help_mentions_the_strategies(tmp_path: Path) -> None:
    top = _tlops("--help", cwd=tmp_path)
    run = _tlops("run", "--help", cwd=tmp_path)
    assert top.returncode == 0 and run.returncode == 0
    for strategy in ("linear-probe", "mlp-probe", "partial", "surgical", "lp-ft", "gradual", "auto"):
        assert strategy in top.stdout, top.stdout
        assert strategy in run.stdout, run.stdout
    assert "run" in top.stdout and "prepare-data" in top.stdout
    for flag in ("--data", "--output", "--strategy", "--backbones", "--epochs", "--tracking-uri"):
        assert flag in run.stdout
    for flag in ("--unfreeze-blocks", "--layer-decay", "--swa-epochs", "--checkpoint-uri", "--gpu-node-selector"):
        assert flag in run.stdout
