"""Logging, not print: the library logs, the edges configure it, and progress is a line per interval in a log."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tlops.io.logs import LEVEL_ENV

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) tlops(\.\w+)*: ")

EXECUTOR_LINES = ("Executing task", "[KFP Executor", '"executorInput"', '"parameterValues"', "Streamed logs")


@pytest.mark.pipeline
def test_tlops_run_prints_results_on_stdout_and_the_steps_logs_on_stderr(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "KFP_"))}
    env |= {"TLOPS_DEMO_IMAGES_PER_CLASS": "5", LEVEL_ENV: "INFO"}
    result = subprocess.run(
        [sys.executable, "-m", "tlops.cli", "run", "--epochs", "1", "--output", "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out, err = result.stdout.splitlines(), result.stderr.splitlines()
    # stdout: the command's own lines and the summary, nothing of kfp.local or of the steps.
    assert out[0].startswith("no --data given: using the built-in demo data")
    assert out[1].startswith("running the tlops pipeline locally (50 images")
    assert "tlops run finished" in out and out[-1].startswith("  summary    ")
    assert len(out) < 40, result.stdout
    assert not [line for line in out if any(marker in line for marker in EXECUTOR_LINES) or LOG_LINE.match(line)]
    # stderr: the steps' log lines, one record a line, without kfp.local's indent or its executor output.
    steps = {match[1] for line in err if (match := re.match(r".* tlops\.steps\.(\w+): ", line))}
    assert {"score_backbone", "select_backbone", "fine_tune", "evaluate", "register"} <= steps, result.stderr
    assert all(LOG_LINE.match(line) for line in err), [line for line in err if not LOG_LINE.match(line)][:5]
