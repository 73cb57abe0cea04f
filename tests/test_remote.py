"""tlops submit / schedule: bad input is refused before anything is sent; parameters match the compiled pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tlops.cli import build_parser
from tlops.cli.pipeline_commands import _pipeline_parameters
from tlops.errors import TlopsError
from tlops.pipeline.compile import compile_pipeline
from tlops.pipeline.remote import check_cron

REMOTE = ["--data", "s3://bucket/dataset", "--tracking-uri", "http://mlflow:5000"]


def _tlops(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "tlops.cli", *args], capture_output=True, text=True, env=env)


def _one_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tlops: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("expression", ["0 3 * * *", "", "0 0 0 3 * * *"])
def test_cron_needs_six_fields(expression: str) -> None:
    with pytest.raises(TlopsError, match="6 fields, seconds first"):
        check_cron(expression)


def test_cron_with_six_fields_is_normalized() -> None:
    assert check_cron(" 0  0 3 * * * ") == "0 0 3 * * *"


def test_schedule_rejects_a_five_field_cron_before_contacting_the_server() -> None:
    result = _tlops("schedule", "--host", "http://127.0.0.1:9", *REMOTE, "--cron", "0 3 * * *")
    _one_error_line(result, "'0 3 * * *' has 5 fields")


def test_submit_to_an_unreachable_server() -> None:
    _one_error_line(_tlops("submit", "--host", "http://127.0.0.1:9", *REMOTE), "does not answer", "127.0.0.1:9")


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        (REMOTE, "no Kubeflow Pipelines host"),
        (["--host", "http://kfp", "--tracking-uri", "http://mlflow:5000"], "--data is required"),
        (["--host", "http://kfp", "--data", "s3://b/d"], "--tracking-uri must be an MLflow server URL"),
        (["--host", "http://kfp", *REMOTE, "--epochs", "0"], "--epochs must be positive"),
    ],
)
def test_submit_bad_input(arguments: list[str], needle: str) -> None:
    _one_error_line(_tlops("submit", *arguments), needle)


def test_parameters_are_exactly_pipeline_inputs(tmp_path: Path) -> None:
    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "pipeline.yaml").read_text()))
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    args = build_parser().parse_args(["submit", *REMOTE, "--image-size", "96"])
    parameters = _pipeline_parameters(args, args.data, args.tracking_uri, ["efficientnet_lite0"], args.image_size)
    assert set(parameters) <= set(inputs)
    required = {name for name, spec in inputs.items() if not spec.get("isOptional")}
    assert required <= set(parameters)
    assert parameters["image_size"] == 96
