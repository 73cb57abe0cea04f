"""Bad input found by a new user (issue 6): each is one ``tlops: error:`` line and exit status 2, or works as
documented, and nothing is left half-written.

CLI cases run the installed ``tlops`` console script in subprocesses (all started at once by one fixture, as
each is a fresh Python); library cases call the data functions directly.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

ANSI = "\x1b["


# --- the CLI cases, run at once ---------------------------------------------------------------------------------


# --- 3. the error line of a failed pipeline, and what a failed run leaves -----------------------------------------


def test_failed_pipeline_leaves_no_partial_run_and_no_colour(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tlops.pipeline.pipeline
    from tlops.pipeline.local import PipelineFailed, run_locally

    earlier = tmp_path / "pipeline_root" / "tlops-transfer-learning-earlier"
    earlier.mkdir(parents=True)
    seen = {}

    def failing_pipeline(**_parameters: Any) -> None:
        from kfp.local import logging_utils

        seen["task"] = logging_utils.format_task_name("prepare-data")  # how kfp.local would print it
        (tmp_path / "pipeline_root" / "tlops-transfer-learning-now" / "prepare-data").mkdir(parents=True)
        raise RuntimeError(
            "Pipeline \x1b[95m'tlops-transfer-learning'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m. "
            "Inner task failed: \x1b[96m'prepare-data'\x1b[0m."
        )

    monkeypatch.setattr(tlops.pipeline.pipeline, "build_pipeline", lambda **_options: failing_pipeline)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # no terminal, even under pytest -s
    with pytest.raises(PipelineFailed) as failed:
        run_locally({}, tmp_path)

    assert ANSI not in str(failed.value)
    assert "status FAILURE. Inner task failed: 'prepare-data'." in str(failed.value)
    assert seen["task"] == "'prepare-data'"  # stderr is no terminal under pytest: kfp.local's colours are off
    assert [p.name for p in (tmp_path / "pipeline_root").iterdir()] == [earlier.name]  # only the failed run's went

    shutil.rmtree(tmp_path / "pipeline_root")
    with pytest.raises(PipelineFailed):
        run_locally({}, tmp_path)
    assert not (tmp_path / "pipeline_root").exists()  # created by the failed run: removed with it


# --- 11. a re-run into the same --output keeps the earlier run's summary --------------------------------------------


def _summary(run_id: str, version: int) -> Any:
    from tlops.steps.outputs import RunSummary

    return RunSummary(
        dataset={"source": "x"}, backbone="efficientnet_lite0", strategy="linear-probe", strategy_reasons=[],
        metrics={}, tracking_uri="sqlite:///x.db", experiment="tlops", run_id=run_id, registered_model="m",
        version=version, model_uri=f"models:/m/{version}", logged_model_uri="", aliases=["challenger"], gate=None,
    )  # fmt: skip


def test_rerun_keeps_every_run_summary(tmp_path: Path) -> None:
    from tlops.pipeline.local import RUNS_DIR, keep_run_summary

    (tmp_path / "run_summary.json").write_text(json.dumps({"run_id": "0ld0ld0ld", "version": 1}))  # an older tlops
    latest, first, note = keep_run_summary(_summary("aaaaaaaa1111", 2), tmp_path)
    assert "version 1" in note and RUNS_DIR in note
    _latest, second, note = keep_run_summary(_summary("bbbbbbbb2222", 3), tmp_path)
    assert "version 2" in note and "aaaaaaaa" in note

    kept = sorted(json.loads(p.read_text())["run_id"] for p in (tmp_path / RUNS_DIR).glob("*/run_summary.json"))
    assert kept == ["0ld0ld0ld", "aaaaaaaa1111", "bbbbbbbb2222"]
    assert json.loads(latest.read_text())["run_id"] == "bbbbbbbb2222"
    assert first != second and first.parent.name.endswith("aaaaaaaa") and second.parent.name.endswith("bbbbbbbb")
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


# --- 4. files are judged by content, not by extension ---------------------------------------------------------


# --- 6. archive limits ----------------------------------------------------------------------------------------


# --- 8. wrapper folders stripped alike for folders, archives and S3 ---------------------------------------------


# --- 9. CSV rows: absolute paths inside the CSV's folder, http(s) URLs ----------------------------------------------


# --- and: S3 without credentials, for run and prepare-data ----------------------------------------------------------
