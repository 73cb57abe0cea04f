"""The ``fine-tune`` command, run as a subprocess on probed digits, logs lines (one per epoch and step), not progress
bars.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probes import probe_digits
from tlops.steps.runtime import Runtime


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory, runtime: Runtime) -> dict[str, Path]:
    """The digits probed once for this module (``runtime`` from tests/conftest.py)."""
    return probe_digits(tmp_path_factory.mktemp("e2e"), runtime)


def test_fine_tune_command_logs_lines_not_progress_bars(
    probed: dict[str, Path], runtime: Runtime, tmp_path: Path
) -> None:
    """As in a pod or under kfp.local, stderr is a pipe: progress is a log line per interval, never a '\r' bar."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TLOPS_", "AWS_", "MLFLOW_"))}
    env |= {"TLOPS_DEVICE": "cpu", "TLOPS_CACHE_DIR": str(runtime.cache_dir), "TLOPS_WORKERS": "0"}
    command = [sys.executable, "-m", "tlops.cli", "fine-tune", "--dataset", str(probed["data"]),
               "--probe", str(probed["probe"]), "--output", str(tmp_path / "model"), "--strategy", "full",
               "--epochs", "2", "--batch-size", "16"]  # fmt: skip
    start = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, timeout=600, check=False)  # bytes: '\r' kept
    elapsed = time.monotonic() - start

    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert b"\r" not in result.stderr and b"\r" not in result.stdout
    stderr = result.stderr.decode()
    logged = [line for line in stderr.splitlines() if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO tlops\.", line)]
    requested = "tlops.steps.fine_tune: strategy lp-ft: strategy 'lp-ft' was requested"
    assert any(line.endswith(requested) for line in logged)
    for epoch in (1, 2):
        trained = f"tlops.train.finetune: epoch {epoch}: 8 blocks trained, train loss "
        assert any(trained in line for line in logged), stderr
    # 2 epochs of 5 batches: at most one progress line per 30 s and loop, plus each loop's closing line.
    progress_lines = [line for line in logged if " tlops.io.progress: " in line]
    assert len(progress_lines) <= 2 * (elapsed // 30 + 1), progress_lines
    assert not re.search(r"\d%\|", stderr), stderr  # no tqdm bar (" 40%|####      | 2/5 [...]") anywhere
    assert json.loads(result.stdout)["strategy"] == "lp-ft"  # stdout holds the result only
