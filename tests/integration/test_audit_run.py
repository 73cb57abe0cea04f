"""kfp.local: a run with --exclude-suspected-label-errors audits, trains without the flagged rows, logs the audit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_readme import covers, readme_command
from tlops.data.demo import write_digits_imagefolder
from tlops.io.logs import LEVEL_ENV

FLIPS = (("one", "seven"), ("three", "eight"), ("zero", "six"))
LINE = re.compile(r"audit +(\d+) suspected label errors \((\d+) excluded from training\), (\d+) near-duplicate pairs, "
                  r"(\d+) outliers; see audit.md")  # fmt: skip
RUN = "tlops run --data ./photos --exclude-suspected-label-errors"  # docs/audit.md
EXCLUDED = re.compile(r"excluded (\d+) suspected label errors from the (\d+) training examples")


@pytest.mark.pipeline
@covers(RUN)
def test_a_run_excluding_suspected_label_errors_reports_and_logs_the_audit(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    images = write_digits_imagefolder(tmp_path / "digits", per_class=12)
    for source, target in FLIPS:  # injected label errors
        for path in sorted((images / source).iterdir())[:2]:
            shutil.move(path, images / target / f"flip_{path.name}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "KFP_"))}
    env |= {LEVEL_ENV: "INFO", "TLOPS_CACHE_DIR": str(tmp_path / "cache")}
    small = f"{images} --output out --epochs 1 --strategy linear-probe --image-size 64"
    command = [sys.executable, "-m", "tlops.cli", *readme_command(RUN, {"./photos": small}).argv[1:]]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    ((issues, excluded, pairs, outliers),) = LINE.findall(result.stdout)
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    audit = summary["audit"]
    assert (audit["label_issues"], audit["excluded"]) == (int(issues), int(excluded))
    assert int(excluded) == audit["label_issues_by_split"]["train"] > 0  # every flagged training row, no other
    ((logged, _),) = EXCLUDED.findall(result.stderr)
    assert int(logged) == int(excluded)
    client = MlflowClient(summary["tracking_uri"])
    names = {item.path for item in client.list_artifacts(summary["run_id"], "audit")}
    assert {"audit/audit.md", "audit/audit.json", "audit/label_issues.png"} <= names
    metrics = client.get_run(summary["run_id"]).data.metrics
    assert metrics["audit_label_issues"] == int(issues) and metrics["audit_excluded_from_training"] == int(excluded)
    assert (metrics["audit_near_duplicate_pairs"], metrics["audit_outliers"]) == (int(pairs), int(outliers))
