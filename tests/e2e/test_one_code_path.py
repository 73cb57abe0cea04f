"""One code path per step: the step commands one by one register what ``tlops run`` registers.

Both go through the installed ``tlops`` script, as a user types them, each into its own local MLflow store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tlops.data.demo import write_digits_imagefolder
from tlops.promotion.gate import GateConfig, describe
from tlops.steps.outputs import RunSummary

pytestmark = pytest.mark.pipeline

TLOPS = str(Path(sys.executable).parent / "tlops")
OPTIONS = {"image_size": "64", "epochs": "1", "strategy": "full", "seed": "0"}
TIMEOUT_S = 900


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))} | {"TLOPS_DEVICE": "cpu"}


def _run(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [TLOPS, *arguments], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert result.returncode == 0, (arguments, result.stdout[-2000:], result.stderr[-4000:])
    return result


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three digit classes, 8 images each."""
    root = write_digits_imagefolder(tmp_path_factory.mktemp("digits") / "images", per_class=8)
    for folder in sorted(root.iterdir())[3:]:
        shutil.rmtree(folder)
    return root


def test_the_steps_one_by_one_register_what_tlops_run_registers(images: Path, tmp_path: Path) -> None:
    run_dir, steps_dir = tmp_path / "run", tmp_path / "steps"
    steps_dir.mkdir()
    flags = {name: f"--{name.replace('_', '-')}" for name in OPTIONS}
    whole = subprocess.Popen(
        [TLOPS, "run", "--data", str(images), "--output", str(run_dir), "--backbones", "efficientnet_lite0"]
        + [item for name, value in OPTIONS.items() for item in (flags[name], value)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seed, size = ["--seed", OPTIONS["seed"]], ["--image-size", OPTIONS["image_size"]]
        _run("prepare-data", "--data", str(images), "--output", "prepared", *seed, cwd=steps_dir)
        _run("select-backbone", "--dataset", "prepared", "--output", "selection", *size, *seed, cwd=steps_dir)
        _run("extract-features", "--dataset", "prepared", "--output", "features", *size, *seed, cwd=steps_dir)
        _run(
            "audit", "--dataset", "prepared", "--features", "features/features", "--backbone", "efficientnet_lite0",
            "--output", "audit", *size, *seed, cwd=steps_dir,
        )  # fmt: skip
        _run(
            "fine-tune", "--dataset", "prepared", "--probe", "features/probe", "--audit", "audit", "--output", "model",
            "--strategy", OPTIONS["strategy"], "--epochs", OPTIONS["epochs"], *seed, cwd=steps_dir,
        )  # fmt: skip
        evaluated = _run(
            "evaluate", "--dataset", "prepared", "--model", "model", "--output", "evaluation", cwd=steps_dir
        )
        registered = _run(
            "register", "--dataset", "prepared", "--model", "model", "--evaluation", "evaluation",
            "--selection", "selection", "--audit", "audit", "--output", "registration", cwd=steps_dir,
        )  # fmt: skip
    finally:
        stdout, stderr = whole.communicate(timeout=TIMEOUT_S)
    assert whole.returncode == 0, (stdout[-2000:], stderr[-4000:])

    by_run = RunSummary.read(run_dir)
    by_steps = RunSummary.read(steps_dir / "registration")
    # Both tracked into a local store: OUTPUT/mlflow.db for tlops run, ./mlflow.db for the step commands.
    assert by_run.tracking_uri == f"sqlite:///{run_dir / 'mlflow.db'}"
    assert by_steps.tracking_uri == f"sqlite:///{steps_dir / 'mlflow.db'}"
    for summary in (by_run, by_steps):
        assert summary.version == 1 and sorted(summary.aliases) == ["challenger", "champion"]
        assert summary.gate == {
            "promote": True,
            "champion_version": None,
            "reasons": ["no champion yet: the first becomes it"],
            "thresholds": describe(GateConfig()),
        }
        assert summary.champion == {"version": 1, "reason": "no champion yet: the new version becomes it"}
    assert by_steps.dataset == by_run.dataset  # same source path, digest, counts
    assert (by_steps.backbone, by_steps.strategy, by_steps.strategy_reasons) == (
        by_run.backbone,
        by_run.strategy,
        by_run.strategy_reasons,
    )
    assert by_steps.metrics.keys() == by_run.metrics.keys()
    for name, value in by_run.metrics.items():
        assert by_steps.metrics[name] == pytest.approx(value, abs=1e-4), name
    assert set(by_steps.to_dict()) == set(by_run.to_dict())
    assert by_steps.to_dict() == json.loads(registered.stdout)
    assert "test_accuracy" in evaluated.stdout
    # The step commands logged the same things with the run: the gate's verdict, the champion's reason, the files.
    runs = {name: _mlflow_run(summary) for name, summary in (("run", by_run), ("steps", by_steps))}
    for key in ("tlops.promotion.gate", "tlops.champion"):
        assert runs["steps"].data.tags[key] == runs["run"].data.tags[key], key
    assert set(runs["steps"].data.metrics) == set(runs["run"].data.metrics)
    assert set(runs["steps"].data.params) == set(runs["run"].data.params)
    assert _artifacts(by_steps) == _artifacts(by_run)
    assert "report/comparison.json" in _artifacts(by_steps) and "report/selection.json" in _artifacts(by_steps)


def _mlflow_run(summary: RunSummary):
    from mlflow import MlflowClient

    return MlflowClient(summary.tracking_uri).get_run(summary.run_id)


def _artifacts(summary: RunSummary) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(summary.tracking_uri)
    return sorted(
        item.path
        for folder in client.list_artifacts(summary.run_id)
        if folder.is_dir
        for item in client.list_artifacts(summary.run_id, folder.path)
    )
