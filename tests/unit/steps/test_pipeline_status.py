"""The pipeline's first and last steps as commands and functions: ``fingerprint-data`` prints the fingerprint, and the
exit handler's record of a failed, half-registered or succeeded pipeline (``record-pipeline-status``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from images import solid_image_folder as _image_folder
from tlops.cli import main
from tlops.data.fingerprint import source_fingerprint
from tlops.errors import TlopsError
from tlops.promotion.failures import KFP_RUN_TAG, PipelineOutcome, record_failed_run
from tlops.steps.pipeline_status import record_pipeline_status


def test_fingerprint_data_command_prints_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _image_folder(tmp_path / "data", {"cat": 2, "dog": 2})
    assert main(["fingerprint-data", "--data", str(data)]) == 0
    assert f'"fingerprint": "{source_fingerprint(str(data))}"' in capsys.readouterr().out
    assert main(["fingerprint-data", "--data", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_failed_pipeline_that_never_reached_mlflow_gets_a_failed_run(client, experiment: str) -> None:
    outcome = PipelineOutcome("FAILED", "run-1", "nightly-retrain", "Task prepare-data failed: no images in class b")
    run_id = record_failed_run(client, experiment, outcome)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.info.run_name == "nightly-retrain (failed)"
    assert run.data.tags[KFP_RUN_TAG] == "run-1" and run.data.tags["tlops.pipeline_state"] == "FAILED"
    assert run.data.tags["tlops.pipeline_error"] == outcome.error
    assert client.get_experiment_by_name(experiment).experiment_id == run.info.experiment_id


def test_the_run_the_register_step_started_is_marked_failed_and_a_finished_one_stays(client, experiment: str) -> None:
    experiment_id = client.create_experiment(experiment)
    running = client.create_run(experiment_id, tags={KFP_RUN_TAG: "run-2"})
    assert record_failed_run(client, experiment, PipelineOutcome("FAILED", "run-2")) == running.info.run_id
    assert client.get_run(running.info.run_id).info.status == "FAILED"
    assert len(client.search_runs([experiment_id])) == 1  # no second run for the same pipeline run

    finished = client.create_run(experiment_id, tags={KFP_RUN_TAG: "run-3"})
    client.set_terminated(finished.info.run_id, "FINISHED")  # registered, then the pod died
    record_failed_run(client, experiment, PipelineOutcome("FAILED", "run-3", error="pod evicted"))
    run = client.get_run(finished.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["tlops.pipeline_error"] == "pod evicted"


def test_a_pipeline_that_succeeded_records_nothing(tracking_uri: str, client, experiment: str) -> None:
    assert record_pipeline_status(tracking_uri, experiment, PipelineOutcome("SUCCEEDED", "run-4")) is None
    assert client.get_experiment_by_name(experiment) is None


def test_an_unreachable_server_is_one_clear_line() -> None:
    with pytest.raises(TlopsError, match="does not answer"):
        record_pipeline_status("http://127.0.0.1:9", "tlops", PipelineOutcome("FAILED", "run-5"))


def test_record_status_command(tracking_uri: str, capsys, client, experiment: str) -> None:
    argv = ["record-status", "--state", "FAILED", "--kfp-run-id", "run-6", "--error", "fine-tune: CUDA out of memory"]
    assert main([*argv, "--tracking-uri", tracking_uri, "--experiment", experiment]) == 0
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["tlops.pipeline_error"] == "fine-tune: CUDA out of memory"
    assert run.info.run_id in capsys.readouterr().out
