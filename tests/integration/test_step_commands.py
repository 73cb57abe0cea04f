"""Bad input to each step command: one ``tlops: error:`` line, exit status 2, no traceback, no --output left.

Every command runs as a user runs it: the installed ``tlops`` script in a subprocess (all cases at once).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from tlops.data.demo import write_digits_imagefolder
from tlops.data.prepare import prepare_data
from tlops.models.backbones import build_classifier, load_backbone
from tlops.steps.outputs import Comparison, Evaluation, ModelConfig, ProbeSummary, Training, save_model, write_probe

TLOPS = str(Path(sys.executable).parent / "tlops")
TIMEOUT_S = 300


def _digits(root: Path, classes: int) -> Path:
    """An ImageFolder of 3 digit images for each of the first ``classes`` digits."""
    write_digits_imagefolder(root, per_class=3)
    for folder in sorted(root.iterdir())[classes:]:
        shutil.rmtree(folder)
    return root


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DOWN = f"http://127.0.0.1:{_unused_port()}"  # an MLflow URI where nothing answers


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Valid step outputs to pass beside the bad one: prepared data, a probe, a model, an evaluation."""
    root = tmp_path_factory.mktemp("inputs")
    images = _digits(root / "images", 2)
    prepared = prepare_data(str(images), root / "prepared")
    classes = prepared.classes
    backbone = load_backbone("efficientnet_lite0", image_size=32, pretrained=False)
    head = build_classifier(backbone, len(classes))[-1]
    write_probe(
        root / "features" / "probe",
        head,
        ProbeSummary(backbone.name, classes, 1.0, 0.5, 0.5, 32, backbone.num_features),
    )
    model_config = ModelConfig(backbone.name, classes, asdict(backbone.data_config), "linear-probe")
    save_model(root / "model", build_classifier(backbone, len(classes)), model_config)
    Training("linear-probe", "auto", ["requested"], 0, 0.5, 0.5, [], {}).write(root / "model")
    Evaluation({"test_accuracy": 0.5}, {}, [[1, 0], [0, 1]], classes, backbone.name, "linear-probe").write(
        root / "evaluation"
    )
    Comparison(True, None, ["no champion yet: the first becomes it"]).write(root / "evaluation")
    (root / "a-file").write_text("not a folder")
    return {
        "root": root,
        "images": images,
        "prepared": root / "prepared",
        "features": root / "features",
        "probe": root / "features" / "probe",
        "model": root / "model",
        "evaluation": root / "evaluation",
        "file": root / "a-file",
    }


def _cases(inputs: dict[str, Path]) -> dict[str, tuple[list[str], list[str]]]:
    """Name -> (arguments without --output, the words the error line must hold)."""
    root = inputs["root"]
    missing, prepared, model = str(root / "no-such-folder"), str(inputs["prepared"]), str(inputs["model"])
    evaluated = ["--dataset", prepared, "--model", model, "--evaluation", str(inputs["evaluation"])]
    down = DOWN
    not_prepared = "is not a prepare-data output"
    return {
        "prepare-data missing data": (["prepare-data", "--data", missing], ["does not exist", missing]),
        "select-backbone missing dataset": (
            ["select-backbone", "--dataset", missing, "--backbones", "efficientnet_lite0"],
            [f"{missing} {not_prepared} (no such folder): run tlops prepare-data first"],
        ),
        "select-backbone dataset not prepared": (
            ["select-backbone", "--dataset", str(inputs["images"])],
            [f"{inputs['images']} {not_prepared} (no prepare_summary.json)"],
        ),
        "select-backbone unknown backbone": (
            ["select-backbone", "--dataset", prepared, "--backbones", "efficientnet_lite0,resnet50"],
            ["unknown backbone 'resnet50'"],
        ),
        "select-backbone negative image size": (
            ["select-backbone", "--dataset", prepared, "--image-size", "-8"],
            ["--image-size must be >= 0, got -8"],
        ),
        "select-backbone negative budget": (
            ["select-backbone", "--dataset", prepared, "--max-params", "-5"],
            ["--max-params must be >= 0, got -5"],
        ),
        "select-backbone more scoring images than the split has": (
            ["select-backbone", "--dataset", prepared, "--scoring-images-per-class", "1000"],
            ["--scoring-images-per-class 1000 asks for more images than the training split has", "or fewer"],
        ),
        "select-backbone feature cache not writable": (
            ["select-backbone", "--dataset", prepared, "--feature-cache", f"{inputs['file']}/cache"],
            [f"--feature-cache {inputs['file']}/cache"],
        ),
        "score-backbone misspelt backbone": (
            ["score-backbone", "--dataset", prepared, "--backbone", "efficientnet_lite9"],
            ["unknown backbone 'efficientnet_lite9' (did you mean efficientnet_lite"],
        ),
        "extract-features misspelt timm architecture": (
            ["extract-features", "--dataset", prepared, "--backbone", "timm:resnet5O"],
            ["timm has no model 'resnet5O' (did you mean resnet50"],
        ),
        "extract-features dataset is a file": (
            ["extract-features", "--dataset", str(inputs["file"])],
            [f"{inputs['file']} {not_prepared} (a file, not a folder)"],
        ),
        "extract-features unknown backbone": (
            ["extract-features", "--dataset", prepared, "--backbone", "keras:resnet50"],
            ["unknown backbone 'keras:resnet50'"],
        ),
        "fine-tune missing dataset": (
            ["fine-tune", "--dataset", missing, "--probe", str(inputs["probe"])],
            [f"{missing} {not_prepared}"],
        ),
        "fine-tune probe is not the probe folder": (
            ["fine-tune", "--dataset", prepared, "--probe", str(inputs["features"])],
            [f"{inputs['features']} is not an extract-features output (no probe_summary.json)", "probe/"],
        ),
        "fine-tune negative epochs": (
            ["fine-tune", "--dataset", prepared, "--probe", str(inputs["probe"]), "--epochs", "-1"],
            ["--epochs must be positive, got -1"],
        ),
        "evaluate model is not a model": (
            ["evaluate", "--dataset", prepared, "--model", prepared],
            [f"{prepared} is not a fine-tune output (no model_config.json): run tlops fine-tune first"],
        ),
        "evaluate missing dataset": (["evaluate", "--dataset", missing, "--model", model], [not_prepared]),
        "evaluate mlflow down": (
            ["evaluate", "--dataset", prepared, "--model", model, "--tracking-uri", down],
            [f"MLflow server at {down} does not answer"],
        ),
        "register evaluation is not an evaluation": (
            ["register", "--dataset", prepared, "--model", model, "--evaluation", model],
            [f"{model} is not an evaluate output (no evaluation.json): run tlops evaluate first"],
        ),
        "register selection missing": (
            ["register", *evaluated, "--selection", missing],
            [f"{missing} is not a select-backbone output (no such folder)"],
        ),
        "register mlflow down": (
            ["register", *evaluated, "--tracking-uri", down],
            [f"MLflow server at {down} does not answer"],
        ),
    }


@pytest.fixture(scope="module")
def results(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Every case started at once (each process imports torch); name -> (completed process, --output, cwd)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))} | {"TLOPS_DEVICE": "cpu"}
    started = {}
    for name, (arguments, _needles) in _cases(inputs).items():
        cwd = tmp_path_factory.mktemp("cwd")
        output = cwd / "out" / "step"
        command = [TLOPS, *arguments, "--output", str(output)]
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started[name] = (process, output, cwd)
    finished = {}
    for name, (process, output, cwd) in started.items():
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        finished[name] = (subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), output, cwd)
    return finished


CASES = list(_cases({k: Path("/x") for k in ("root", "images", "prepared", "features", "probe", "model", "evaluation",
                                             "file")}))  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_to_a_step_command(case: str, inputs: dict[str, Path], results: dict[str, tuple]) -> None:
    result, output, cwd = results[case]
    needles = _cases(inputs)[case][1]
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[-3000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tlops: error: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not output.exists() and not output.parent.exists(), "nothing may be left in --output"
    assert sorted(p.name for p in cwd.iterdir()) == [], "nothing may be written beside it (no mlflow.db)"


def test_select_backbone_with_one_candidate_still_reads_the_dataset(tmp_path: Path) -> None:
    """The issue's case, exactly: a single candidate used to skip the dataset and exit 0."""
    command = [TLOPS, "select-backbone", "--dataset", "/no/such/folder", "--backbones", "efficientnet_lite0"]
    result = subprocess.run([*command, "--output", "x"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "tlops: error: /no/such/folder is not a prepare-data output (no such folder): run tlops prepare-data first"
    )
    assert not (tmp_path / "x").exists()


def test_fine_tune_refuses_a_probe_of_another_dataset(inputs: dict[str, Path], tmp_path: Path) -> None:
    other = prepare_data(str(_digits(tmp_path / "five", 5)), tmp_path / "five-p")
    assert len(other.classes) == 5
    output = tmp_path / "model"
    command = [TLOPS, "fine-tune", "--dataset", str(tmp_path / "five-p"), "--probe", str(inputs["probe"])]
    result = subprocess.run([*command, "--output", str(output)], capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"tlops: error: --probe {inputs['probe']} was made for other classes than --dataset {tmp_path / 'five-p'} "
        "has: use the outputs of one dataset"
    )
    assert not output.exists()
