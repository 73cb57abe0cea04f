"""tlops submit / schedule against a fake Kubeflow Pipelines server (tests/support/fake_kfp.py) driven by the real
kfp.Client.

Bad input is refused before any request; the pipeline and this code's version are uploaded once and reused; runs
and recurring runs carry exactly the pipeline's parameters; the token reaches the server and never the output.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from commands import REMOTE
from commands import in_process as _in_process
from fake_kfp import FakeKfp
from refusals import one_error_line as _one_error_line
from tlops import __version__
from tlops.cli import build_parser
from tlops.cli.pipeline_commands import pipeline_parameters
from tlops.cli.settings import resolve_config
from tlops.pipeline.pipeline import PIPELINE_NAME

TOKEN = "kfp-test-token-3f9a1c"  # what the fake accepts

FORBIDDEN = "kfp-forbidden-token-77d2"  # authenticated, but refused every API call (403)

WRONG = "kfp-wrong-token-0b5e"

FAST = ["--poll-interval", "0.02"]


def _tlops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": "/usr/bin:/bin"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "tlops.cli", *args], capture_output=True, text=True, env=environment, timeout=300
    )


def _succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def _posts(fake: FakeKfp, route: str) -> list[Any]:
    """The POST requests to exactly ``/apis/v2beta1<route>``."""
    return [r for r in fake.requests_to("POST") if r.path == f"/apis/v2beta1{route}"]


def _no_token_in(result: subprocess.CompletedProcess[str], *tokens: str) -> None:
    for token in tokens or (TOKEN, FORBIDDEN, WRONG):
        assert token not in result.stdout + result.stderr


def _expected_parameters(*options: str) -> dict[str, Any]:
    """The parameters `tlops submit` builds from these options, as JSON gives them back."""
    args = build_parser().parse_args(["submit", *REMOTE, *options])
    parameters = pipeline_parameters(args.data, args.tracking_uri, resolve_config(args))
    return json.loads(json.dumps(parameters))


@pytest.fixture
def kfp_server() -> Iterator[FakeKfp]:
    with FakeKfp(token=TOKEN, forbidden_token=FORBIDDEN) as fake:
        yield fake


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "kfp-token"
    path.write_text(TOKEN + "\n")
    return path


def test_schedule_rejects_a_five_field_cron_before_any_request(kfp_server: FakeKfp) -> None:
    result = _tlops("schedule", "--host", kfp_server.url, *REMOTE, "--cron", "0 3 * * *", env={"KFP_TOKEN": TOKEN})
    _one_error_line(result, "'0 3 * * *' has 5 fields")
    assert kfp_server.requests == []


def test_submit_refuses_an_unknown_param_before_any_request(kfp_server: FakeKfp) -> None:
    result = _tlops("submit", "--host", kfp_server.url, *REMOTE, "--param", "epoch=7", env={"KFP_TOKEN": TOKEN})
    line = _one_error_line(result, "--param epoch: the pipeline has no parameter 'epoch'", "epochs", "data_uri")
    assert "credentials_secret" in line  # a parameter no other option sets is listed too
    assert kfp_server.requests == []


@pytest.mark.parametrize(
    ("host", "needles"),
    [
        ("localhost:8080", ["--host 'localhost:8080' has no scheme", "write http://localhost:8080"]),
        ("kfp.example.com/", ["has no scheme", "write http://kfp.example.com (or https://kfp.example.com"]),
        ("ftp://localhost:8080", ["is not an http(s) URL", "write http://localhost:8080"]),
        ("http://:8080", ["names no host", "http://HOST:PORT"]),
    ],
)
@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_a_host_without_http_is_named_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str, host: str, needles: list[str]
) -> None:
    cron = ["--cron", "0 0 3 * * *"] if command == "schedule" else []
    result = _in_process(monkeypatch, capsys, command, "--host", host, *REMOTE, *cron)
    line = _one_error_line(result, *needles)
    assert "does not answer" not in line and "InvalidSchema" not in line


def test_submit_to_an_unreachable_server() -> None:
    _one_error_line(_tlops("submit", "--host", "http://127.0.0.1:9", *REMOTE), "does not answer", "127.0.0.1:9")


def test_submit_uploads_the_pipeline_and_version_once(kfp_server: FakeKfp, token_file: Path) -> None:
    first = _tlops("submit", "--host", kfp_server.url, *REMOTE, "--token-file", str(token_file))
    stdout = _succeeded(first)
    _no_token_in(first)
    assert [r.files for r in _posts(kfp_server, "/pipelines/upload")] == [{"uploadfile": "pipeline.yaml"}]
    assert [r.query["name"] for r in _posts(kfp_server, "/pipelines/upload")] == [PIPELINE_NAME]
    assert len(_posts(kfp_server, "/pipelines/upload_version")) == 1
    (pipeline,) = kfp_server.pipelines.values()
    assert pipeline["display_name"] == PIPELINE_NAME and "namespace" not in pipeline  # shared: no --namespace
    # The upload made a first version named like the pipeline (as KFP does); tlops added its own.
    ours = [v for v in kfp_server.versions_of(pipeline["pipeline_id"]) if v["display_name"] != PIPELINE_NAME]
    (version,) = ours
    package = kfp_server.packages[version["pipeline_version_id"]]
    assert version["display_name"] == f"{__version__}-{hashlib.sha256(package.encode()).hexdigest()[:12]}"
    assert next(yaml.safe_load_all(package))["pipelineInfo"]["name"] == PIPELINE_NAME
    (run,) = kfp_server.runs.values()
    assert run["runtime_config"] == {"parameters": _expected_parameters()}  # no pipeline root: the server's
    assert run["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert run["display_name"] == "tlops"
    assert kfp_server.experiments[run["experiment_id"]]["display_name"] == "tlops"
    assert f"{kfp_server.url}/#/runs/details/{run['run_id']}" in stdout
    assert f"uploaded pipeline version {version['display_name']!r}" in stdout
    assert {r.authorization for r in kfp_server.requests} == {f"Bearer {TOKEN}"}

    # The same code again, the token from KFP_TOKEN: nothing uploaded, a second run of the same version.
    kfp_server.requests.clear()
    second = _tlops("submit", "--host", kfp_server.url, *REMOTE, env={"KFP_TOKEN": TOKEN})
    stdout = _succeeded(second)
    _no_token_in(second)
    assert [r.path for r in kfp_server.requests_to("POST")] == ["/apis/v2beta1/runs"]  # not even an experiment
    assert f"reusing (this code was uploaded before) pipeline version {version['display_name']!r}" in stdout
    assert len(kfp_server.pipelines) == 1 and len(kfp_server.versions) == 2 and len(kfp_server.experiments) == 2
    runs = list(kfp_server.runs.values())
    assert len(runs) == 2 and runs[1]["pipeline_version_reference"] == runs[0]["pipeline_version_reference"]
    assert runs[1]["runtime_config"] == runs[0]["runtime_config"]
    assert {r.authorization for r in kfp_server.requests} == {f"Bearer {TOKEN}"}

    # Images built for a commit: the spec names them, so it is another version of the pipeline.
    third = _tlops("submit", "--host", kfp_server.url, *REMOTE, env={"KFP_TOKEN": TOKEN, "TLOPS_GIT_COMMIT": "abc1234"})
    _succeeded(third)
    (newest,) = [v for v in kfp_server.versions_of(pipeline["pipeline_id"]) if v["display_name"] not in (
        PIPELINE_NAME, version["display_name"])]  # fmt: skip
    executors = next(yaml.safe_load_all(kfp_server.packages[newest["pipeline_version_id"]]))["deploymentSpec"]
    images = {executor["container"]["image"] for executor in executors["executors"].values()}
    assert images == {f"ghcr.io/tlops/tlops:{__version__}-abc1234", f"ghcr.io/tlops/tlops-gpu:{__version__}-abc1234"}
    assert (
        list(kfp_server.runs.values())[2]["pipeline_version_reference"]["pipeline_version_id"]
        == (newest["pipeline_version_id"])
    )


def test_submit_wait_follows_a_run_that_succeeds(kfp_server: FakeKfp) -> None:
    result = _tlops(
        "submit", "--host", kfp_server.url, *REMOTE, "--param", "epochs=7", "--param", "credentials_secret=s3-team",
        "--pipeline-root", "s3://bucket/kfp-root", "--wait", *FAST, env={"KFP_TOKEN": TOKEN},
    )  # fmt: skip
    stdout = _succeeded(result)
    _no_token_in(result)
    (run,) = kfp_server.runs.values()
    expected = _expected_parameters() | {"epochs": 7, "credentials_secret": "s3-team"}
    assert run["runtime_config"] == {"parameters": expected, "pipeline_root": "s3://bucket/kfp-root"}
    states = [line.split(": ")[1] for line in stdout.splitlines() if line.startswith(f"run {run['run_id']}: ")]
    assert states == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert result.stderr == ""


def test_submit_wait_on_a_failed_run_names_the_failed_step(kfp_server: FakeKfp) -> None:
    kfp_server.run_states = ["PENDING", "RUNNING", "RUNNING", "FAILED"]
    result = _tlops("submit", "--host", kfp_server.url, *REMOTE, "--wait", *FAST, env={"KFP_TOKEN": TOKEN})
    assert result.returncode == 1, result
    (run,) = kfp_server.runs.values()
    states = [line.split(": ")[1] for line in result.stdout.splitlines() if line.startswith(f"run {run['run_id']}: ")]
    assert states == ["PENDING", "RUNNING", "FAILED"]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        f"tlops: error: run {run['run_id']} ended FAILED: step fine-tune failed: {kfp_server.task_error} "
        f"({kfp_server.url}/#/runs/details/{run['run_id']})"
    )
    assert len(kfp_server.requests_to("GET", f"/runs/{run['run_id']}")) == 4


def test_schedule_creates_replaces_lists_and_deletes_by_name(kfp_server: FakeKfp) -> None:
    env = {"KFP_TOKEN": TOKEN}
    host = ["--host", kfp_server.url, "--namespace", "team-a"]
    created = _tlops("schedule", *host, *REMOTE, "--cron", "0 0 3 * * *", "--max-concurrency", "2", env=env)
    _succeeded(created)
    (request,) = kfp_server.requests_to("POST", "/recurringruns")
    body = request.body
    assert body["display_name"] == "tlops-retrain" and body["mode"] == "ENABLE"
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert (body["max_concurrency"], body["no_catchup"]) == (2, True)
    assert body["runtime_config"] == {"parameters": _expected_parameters()}
    (first,) = kfp_server.recurring_runs.values()
    assert kfp_server.experiments[first["experiment_id"]]["namespace"] == "team-a"
    assert [p.get("namespace") for p in kfp_server.pipelines.values()] == ["team-a"]  # the profile's own pipeline
    assert f"{kfp_server.url}/#/recurringrun/details/{first['recurring_run_id']}" in created.stdout

    replaced = _tlops("schedule", *host, *REMOTE, "--cron", "0 30 4 * * *", "--catchup", env=env)
    stdout = _succeeded(replaced)
    (job,) = kfp_server.recurring_runs.values()  # exactly one of that name remains
    assert job["recurring_run_id"] != first["recurring_run_id"]
    assert (job["trigger"]["cron_schedule"]["cron"], job["max_concurrency"], job["no_catchup"]) == (
        "0 30 4 * * *",
        "1",
        False,
    )
    assert f"replaced recurring run 'tlops-retrain' ({first['recurring_run_id']}" in stdout
    assert len(_posts(kfp_server, "/pipelines/upload")) == len(_posts(kfp_server, "/pipelines/upload_version")) == 1

    listed = _succeeded(_tlops("schedule", *host, "--list", env=env))
    header, row = listed.splitlines()
    assert header.split() == ["name", "cron", "enabled", "max", "concurrency", "id", "created"]
    assert row.split()[:9] == ["tlops-retrain", "0", "30", "4", "*", "*", "*", "yes", "1"]
    assert row.split()[9] == job["recurring_run_id"]
    assert all(r.query.get("namespace") == "team-a" for r in kfp_server.requests_to("GET", "/recurringruns"))

    missing = _tlops("schedule", *host, "--delete", "nightly", env=env)
    _one_error_line(missing, "no recurring run named 'nightly'", "the recurring runs there: tlops-retrain")
    deleted = _tlops("schedule", *host, "--delete", "tlops-retrain", env=env)
    assert f"deleted recurring run 'tlops-retrain' ({job['recurring_run_id']}" in _succeeded(deleted)
    assert kfp_server.recurring_runs == {}
    assert _succeeded(_tlops("schedule", *host, "--list", env=env)).startswith("no recurring runs")
    for result in (created, replaced, missing, deleted):
        _no_token_in(result)
    assert {r.authorization for r in kfp_server.requests} == {f"Bearer {TOKEN}"}


def test_a_refused_token_is_named_by_its_source(kfp_server: FakeKfp, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text(WRONG)
    result = _tlops("schedule", "--host", kfp_server.url, "--list", "--token-file", str(wrong))
    line = _one_error_line(
        result,
        f"Kubeflow Pipelines at {kfp_server.url} refused the request (401 Unauthorized) with the token from "
        f"--token-file {wrong}: ",
        "get a fresh one",
    )
    _no_token_in(result)
    assert "Traceback" not in result.stderr and line

    anonymous = _tlops("schedule", "--host", kfp_server.url, "--list")
    _one_error_line(anonymous, "(401 Unauthorized) without a token", "--token-file PATH or set KFP_TOKEN")

    # Authenticated (healthz answers), but not allowed: the API server's 403 on the first API call.
    forbidden = _tlops("schedule", "--host", kfp_server.url, "--list", env={"KFP_TOKEN": FORBIDDEN})
    _one_error_line(forbidden, "refused the request (403 Forbidden) with the token from KFP_TOKEN: ", "--namespace")
    _no_token_in(forbidden)
    assert kfp_server.requests_to("GET", "/recurringruns")[-1].authorization == f"Bearer {FORBIDDEN}"


def test_the_kfp_experiment_and_the_service_account_are_options_of_their_own(kfp_server: FakeKfp) -> None:
    """--experiment names the MLflow experiment (a pipeline parameter); the KFP run is filed under --kfp-experiment."""
    result = _tlops(
        "submit", "--host", kfp_server.url, *REMOTE, "--experiment", "mlflow-exp", "--kfp-experiment", "kfp-exp",
        "--service-account", "tlops-runner", env={"KFP_TOKEN": TOKEN},
    )  # fmt: skip
    _succeeded(result)
    (run,) = kfp_server.runs.values()
    assert kfp_server.experiments[run["experiment_id"]]["display_name"] == "kfp-exp"
    assert run["runtime_config"]["parameters"]["experiment"] == "mlflow-exp"
    assert run["service_account"] == "tlops-runner"


@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_remote_help_shows_no_local_defaults(command: str) -> None:
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices[command].format_help().split())
    assert "built-in demo data" not in help_text and "--output" not in help_text
    assert "--kfp-experiment" in help_text and "--service-account" in help_text and "--config" in help_text
