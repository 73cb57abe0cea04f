"""The command line's contract: bad input to ``tlops run`` gives one line on stderr and exit status 2; ``tlops
prepare-data`` prepares a folder and refuses bad input alike.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from commands import CLI_TIMEOUT_S
from commands import clean_env as _base_env
from commands import tlops_module as _tlops
from tlops.data.demo import write_digits_imagefolder


def _assert_bad_input(result: subprocess.CompletedProcess[str], output: Path, *needles: str) -> str:
    """Exit status 2, one ``tlops: error:`` line on stderr naming the problem, no traceback, nothing registered."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("tlops: error: "), line
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in line, (needle, line)
    assert not (output / "mlflow.db").exists()
    assert not (output / "mlartifacts").exists()
    assert not (output / "pipeline_root").exists()
    assert not (output / "run_summary.json").exists()
    return line


def _classes(root: Path, sizes: dict[str, int]) -> Path:
    """An ImageFolder ``root`` holding ``sizes[label]`` real digit images per class, under the given labels."""
    digits = write_digits_imagefolder(root.with_name(root.name + "-digits"), per_class=max(sizes.values()))
    for (label, n), source in zip(sizes.items(), sorted(digits.iterdir()), strict=False):
        (root / label).mkdir(parents=True)
        for image in sorted(source.iterdir())[:n]:
            shutil.copyfile(image, root / label / image.name)
    return root


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- bad input to ``tlops run`` ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadRun:
    """One ``tlops run`` on bad input: its result, its --output directory and the inputs it was given."""

    result: subprocess.CompletedProcess[str]
    output: Path
    data: Path
    tracking_uri: str = ""


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BadRun]:
    """Every local bad-input case of ``tlops run``, started concurrently (each process imports torch)."""
    root = tmp_path_factory.mktemp("bad-runs")
    (root / "empty").mkdir()
    valid = _classes(root / "valid", {"cats": 4, "dogs": 4})
    uri = f"http://127.0.0.1:{_unused_port()}"
    cases: dict[str, tuple[Path, list[str], dict[str, str]]] = {
        "missing": (root / "no-such-dir", [], {}),
        "empty": (root / "empty", [], {}),
        "one-class": (_classes(root / "one-class", {"cats": 6}), [], {}),
        "too-small": (_classes(root / "too-small", {"cats": 6, "dogs": 2, "owls": 5}), [], {}),
        "mlflow-down": (valid, [], {"MLFLOW_TRACKING_URI": uri}),
        "tracking-uri-flag-down": (valid, ["--tracking-uri", uri], {}),
        "epochs-zero": (valid, ["--epochs", "0"], {}),
        "fractions": (valid, ["--val-fraction", "0.5", "--test-fraction", "0.45"], {}),
        "unknown-backbone": (valid, ["--backbones", "efficientnet_lite0,resnet50"], {}),
    }
    started = {}
    for name, (data, extra, env) in cases.items():
        output = root / f"out-{name}"
        command = [sys.executable, "-m", "tlops.cli", "run", "--data", str(data), "--output", str(output), *extra]
        process = subprocess.Popen(
            command, cwd=root, env=_base_env() | env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started[name] = (process, output, data, env.get("MLFLOW_TRACKING_URI", uri))
    runs = {}
    for name, (process, output, data, tracking_uri) in started.items():
        try:
            stdout, stderr = process.communicate(timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        runs[name] = BadRun(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), output,
                            data, tracking_uri)  # fmt: skip
    return runs


def test_run_missing_data_path(bad_runs: dict[str, BadRun]) -> None:
    run = bad_runs["missing"]
    _assert_bad_input(run.result, run.output, "does not exist", str(run.data))
    assert not run.output.exists()


def test_run_empty_folder(bad_runs: dict[str, BadRun]) -> None:
    run = bad_runs["empty"]
    _assert_bad_input(run.result, run.output, "no images found", str(run.data))
    assert not run.output.exists()


def test_run_single_class(bad_runs: dict[str, BadRun]) -> None:
    run = bad_runs["one-class"]
    _assert_bad_input(run.result, run.output, "only one class", "'cats'")
    assert not run.output.exists()


def test_run_class_too_small(bad_runs: dict[str, BadRun]) -> None:
    run = bad_runs["too-small"]
    line = _assert_bad_input(run.result, run.output, "too small", "'dogs' has 2", "at least 3")
    assert "'cats'" not in line and "'owls'" not in line
    assert not run.output.exists()


@pytest.mark.parametrize("case", ["mlflow-down", "tracking-uri-flag-down"])
def test_run_mlflow_server_not_answering(bad_runs: dict[str, BadRun], case: str) -> None:
    run = bad_runs[case]
    _assert_bad_input(run.result, run.output, "MLflow server", run.tracking_uri, "does not answer")
    assert not run.output.exists()


def test_run_epochs_zero(bad_runs: dict[str, BadRun]) -> None:
    run = bad_runs["epochs-zero"]
    _assert_bad_input(run.result, run.output, "--epochs must be positive, got 0")
    assert not run.output.exists()


def test_run_split_fractions_leaving_no_training_data(bad_runs: dict[str, BadRun]) -> None:
    run = bad_runs["fractions"]
    _assert_bad_input(run.result, run.output, "--val-fraction + --test-fraction must leave at least 10% for training")
    assert not run.output.exists()


def test_run_unknown_backbone(bad_runs: dict[str, BadRun]) -> None:
    run = bad_runs["unknown-backbone"]
    _assert_bad_input(run.result, run.output, "unknown backbone 'resnet50'", "timm:NAME")
    assert not run.output.exists()


def test_run_relative_data_path(tmp_path: Path) -> None:
    _classes(tmp_path / "data", {"cats": 6, "dogs": 2, "owls": 5})
    result = _tlops("run", "--data", "data", "--output", "out", cwd=tmp_path)
    _assert_bad_input(result, tmp_path / "out", "'dogs' has 2", str(tmp_path / "data"))


@pytest.mark.integration
def test_run_s3_missing_bucket(s3_env: Any, tmp_path: Path) -> None:
    bucket = f"no-such-bucket-{time.time_ns()}"
    output = tmp_path / "out"
    env = _base_env() | {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    assert "AWS_ENDPOINT_URL" in env
    result = _tlops("run", "--data", f"s3://{bucket}/datasets/x", "--output", str(output), cwd=tmp_path, env=env)
    _assert_bad_input(result, output, f"'{bucket}'", "does not exist")
    assert not output.exists()


# --- help and prepare-data --------------------------------------------------------------------------------------


def test_prepare_data_command(tmp_path: Path) -> None:
    data = write_digits_imagefolder(tmp_path / "data", per_class=4)
    (data / "one" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (data / "two" / "again.png").write_bytes(next((data / "two").glob("*.png")).read_bytes())
    output = tmp_path / "prepared"

    result = _tlops("prepare-data", "--data", str(data), "--output", str(output), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    summary = json.loads((output / "prepare_summary.json").read_text())
    for key in ("digest", "classes", "counts", "quarantined", "duplicates_removed"):
        assert key in summary
    assert len(summary["classes"]) == 10
    assert set(summary["counts"]) == {"train", "val", "test"}
    assert all(set(per_class) == set(summary["classes"]) for per_class in summary["counts"].values())
    assert sum(sum(per_class.values()) for per_class in summary["counts"].values()) == 40
    assert [q["path"] for q in summary["quarantined"]] == ["one/broken.png"]
    assert summary["quarantined"][0]["reason"]
    assert summary["duplicates_removed"] == 1
    printed = json.loads(result.stdout[result.stdout.index("{") :])
    assert printed["digest"] == summary["digest"]
    assert (output / "manifest.csv").is_file()
    assert (output / "report.md").is_file()


def test_prepare_data_bad_input(tmp_path: Path) -> None:
    data = _classes(tmp_path / "data", {"a": 5, "b": 1})
    output = tmp_path / "prepared"
    result = _tlops("prepare-data", "--data", str(data), "--output", str(output), cwd=tmp_path)
    _assert_bad_input(result, output, "'b' has 1")
    assert not output.exists()
