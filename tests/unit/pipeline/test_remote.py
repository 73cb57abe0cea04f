"""``tlops submit`` / ``schedule`` without a server: cron expressions, bad input refused before any request, the run's
parameters exactly the pipeline's inputs, where the token comes from, waiting for a run and naming the failed step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from commands import REMOTE
from commands import in_process as _in_process
from refusals import one_error_line as _one_error_line
from tlops.cli import build_parser
from tlops.cli.pipeline_commands import pipeline_parameters
from tlops.cli.settings import resolve_config
from tlops.errors import TlopsError
from tlops.pipeline.compile import compile_pipeline
from tlops.pipeline.kfp_api import Connection
from tlops.pipeline.kfp_auth import Token, find_token
from tlops.pipeline.overrides import parse_overrides
from tlops.pipeline.remote import check_cron, wait_for_run


@pytest.mark.parametrize("expression", ["0 3 * * *", "", "0 0 0 3 * * *"])
def test_cron_needs_six_fields(expression: str) -> None:
    with pytest.raises(TlopsError, match="6 fields, seconds first"):
        check_cron(expression)


def test_cron_with_six_fields_is_normalized() -> None:
    assert check_cron(" 0  0 3 * * * ") == "0 0 3 * * *"


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        (REMOTE, "no Kubeflow Pipelines host"),
        (["--host", "http://kfp", "--tracking-uri", "http://mlflow:5000"], "--data is required"),
        (["--host", "http://kfp", "--data", "s3://b/d"], "--tracking-uri must be an MLflow server URL"),
        (["--host", "http://kfp", *REMOTE, "--epochs", "0"], "--epochs must be positive"),
        (["--host", "http://kfp", *REMOTE, "--pipeline-root", "bucket/root"], "--pipeline-root 'bucket/root'"),
        (["--host", "http://kfp", *REMOTE, "--poll-interval", "0"], "--poll-interval must be positive"),
    ],
)
def test_submit_bad_input(
    arguments: list[str], needle: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _one_error_line(_in_process(monkeypatch, capsys, "submit", *arguments), needle)


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        (["--host", "http://kfp", *REMOTE], "--cron is required"),
        (["--host", "http://kfp", *REMOTE, "--cron", "0 0 3 * * *", "--max-concurrency", "11"], "1 to 10"),
        (["--list"], "no Kubeflow Pipelines host"),
    ],
)
def test_schedule_bad_input(
    arguments: list[str], needle: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _one_error_line(_in_process(monkeypatch, capsys, "schedule", *arguments), needle)


def test_parameters_are_exactly_pipeline_inputs(tmp_path: Path) -> None:
    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "pipeline.yaml").read_text()))
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    args = build_parser().parse_args(["submit", *REMOTE, "--image-size", "96"])
    parameters = pipeline_parameters(args.data, args.tracking_uri, resolve_config(args))
    assert set(parameters) <= set(inputs)
    required = {name for name, spec in inputs.items() if not spec.get("isOptional")}
    assert required <= set(parameters)
    assert parameters["image_size"] == 96


INPUTS = {
    "epochs": {"parameterType": "NUMBER_INTEGER"},
    "learning_rate": {"parameterType": "NUMBER_DOUBLE"},
    "hflip": {"parameterType": "BOOLEAN"},
    "backbones": {"parameterType": "LIST"},
    "gpu_node_selector": {"parameterType": "STRUCT"},
    "credentials_secret": {"parameterType": "STRING"},
}


def test_params_are_typed_by_the_pipeline() -> None:
    texts = ["epochs=7", "learning_rate=1e-3", "hflip=true", 'backbones=["a", "b"]', 'gpu_node_selector={"p": "x"}']
    texts += ["credentials_secret=my=secret", "epochs=8"]
    assert parse_overrides(texts, INPUTS) == {
        "epochs": 8,
        "learning_rate": 0.001,
        "hflip": True,
        "backbones": ["a", "b"],
        "gpu_node_selector": {"p": "x"},
        "credentials_secret": "my=secret",
    }


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("epochs", "--param 'epochs': give NAME=VALUE"),
        ("=7", "give NAME=VALUE"),
        ("epochs=7.5", "epochs takes a whole number"),
        ("epochs=true", "epochs takes a whole number"),
        ("learning_rate=fast", "not JSON"),
        ("hflip=yes", "hflip takes true or false"),
        ("backbones=a,b", "backbones takes a JSON list"),
        ("gpu_node_selector=[]", "gpu_node_selector takes a JSON object"),
        ("epoch=7", "no parameter 'epoch'; its parameters: backbones, credentials_secret, epochs"),
    ],
)
def test_malformed_params_are_refused(text: str, needle: str) -> None:
    with pytest.raises(TlopsError) as raised:
        parse_overrides([text], INPUTS)
    assert needle in str(raised.value) and "\n" not in str(raised.value)


def test_the_token_comes_from_the_file_then_the_environment_then_the_service_account(tmp_path: Path) -> None:
    given, service_account = tmp_path / "given", tmp_path / "serviceaccount-token"
    given.write_text(" from-file\n")
    assert find_token(given, "from-env", service_account) == Token("from-file", f"--token-file {given}")
    assert find_token(None, "from-env", service_account) == Token("from-env", "KFP_TOKEN")
    assert find_token(None, "", service_account) is None
    service_account.write_text("from-pod")
    found = find_token(None, None, service_account)
    assert found == Token("from-pod", f"the service-account token {service_account}")
    assert "from-pod" not in repr(found)
    given.write_text("\n")
    with pytest.raises(TlopsError, match="is empty"):
        find_token(given, None, service_account)
    with pytest.raises(TlopsError, match="cannot read the token from --token-file"):
        find_token(tmp_path / "missing", None, service_account)


class _Runs:
    """A stand-in for kfp.Client.get_run: the given runs, one per call, the last one from then on."""

    def __init__(self, *runs: SimpleNamespace) -> None:
        self.runs, self.calls = list(runs), 0

    def get_run(self, run_id: str) -> SimpleNamespace:
        self.calls += 1
        return self.runs[min(self.calls, len(self.runs)) - 1]


def _run(state: str, tasks: Sequence[tuple[str, str, str | None]] = (), error: str | None = None) -> SimpleNamespace:
    def status(message: str | None) -> SimpleNamespace | None:
        return SimpleNamespace(message=message) if message else None

    details = [SimpleNamespace(display_name=n, state=s, error=status(e)) for n, s, e in tasks]
    return SimpleNamespace(state=state, run_details=SimpleNamespace(task_details=details), error=status(error))


def test_wait_gives_up_after_the_timeout() -> None:
    now = [0.0]
    client = _Runs(_run("PENDING"), _run("RUNNING"))
    reported: list[str] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    connection = Connection("http://kfp", client, None, None)
    outcome = wait_for_run(connection, "r1", 10, 25, reported.append, sleep=sleep, clock=lambda: now[0])
    assert (outcome.state, outcome.timed_out, reported) == ("RUNNING", True, ["PENDING", "RUNNING"])
    assert now[0] == 25 and client.calls == 4  # at 0, 10, 20 and 25 s


def test_the_failed_step_is_not_the_dag_or_a_driver() -> None:
    tasks = [("root", "FAILED", None), ("evaluate-driver", "FAILED", None), ("evaluate", "FAILED", None)]
    connection = Connection("http://kfp", _Runs(_run("FAILED", tasks, error="the run failed")), None, None)
    outcome = wait_for_run(connection, "r1", 1, 0, lambda state: None)
    assert (outcome.failed_task, outcome.error) == ("evaluate", "the run failed")  # the task has no error: the run's
