"""One source of defaults: the CLI, the pipeline signature, the step functions and the config dataclasses agree."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from tlops.cli import build_parser
from tlops.data.config import SplitConfig
from tlops.promotion.config import RegistryConfig
from tlops.steps.config import DEFAULT_BACKBONE, DEFAULTS, Defaults
from tlops.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "tlops"
# The pipeline parameter each CLI option sets (``tlops run --lr`` is ``learning_rate``).
CLI_NAMES = {"learning_rate": "lr"}


def _cli_value(args, name: str):
    value = getattr(args, CLI_NAMES.get(name, name))
    return tuple(value.split(",")) if name == "backbones" else value


def test_the_defaults_come_from_the_config_dataclasses() -> None:
    train, split = TrainConfig(), SplitConfig()
    assert (DEFAULTS.strategy, DEFAULTS.epochs, DEFAULTS.batch_size) == (train.strategy, train.epochs, train.batch_size)
    assert (DEFAULTS.learning_rate, DEFAULTS.class_weighted) == (train.lr, train.class_weighted)
    assert (DEFAULTS.val_fraction, DEFAULTS.test_fraction) == (split.val_fraction, split.test_fraction)
    assert DEFAULTS.seed == split.seed == train.seed
    assert (DEFAULTS.experiment, DEFAULTS.model_name) == (RegistryConfig.experiment, RegistryConfig.model_name)
    assert DEFAULTS.backbones == (DEFAULT_BACKBONE,) and DEFAULTS.image_size == 0


@pytest.mark.parametrize("command", ["run", "submit", "schedule"])
def test_run_options_default_to_the_pipeline_defaults(command: str) -> None:
    from tlops.pipeline.pipeline import transfer_learning_pipeline

    extra = ["--cron", "0 0 3 * * *"] if command == "schedule" else []
    args = build_parser().parse_args([command, *extra])
    signature = inspect.signature(transfer_learning_pipeline.pipeline_func).parameters
    for field in fields(Defaults):
        expected = getattr(DEFAULTS, field.name)
        assert _cli_value(args, field.name) == expected, field.name
        pipeline_default = signature[field.name].default
        assert (tuple(pipeline_default) if field.name == "backbones" else pipeline_default) == expected, field.name
    assert set(signature) == {f.name for f in fields(Defaults)} | {"data_uri", "tracking_uri", "credentials_secret"}


def test_the_compiled_pipeline_carries_the_same_defaults() -> None:
    spec = next(yaml.safe_load_all((REPO / "pipelines" / "transfer_learning.yaml").read_text()))
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    for field in fields(Defaults):
        expected = getattr(DEFAULTS, field.name)
        compiled = parameters[field.name]["defaultValue"]
        assert (tuple(compiled) if field.name == "backbones" else compiled) == expected, field.name


STEP_ARGUMENTS = {
    "prepare-data": ["--data", "d", "--output", "o"],
    "select-backbone": ["--dataset", "d", "--output", "o"],
    "extract-features": ["--dataset", "d", "--output", "o"],
    "fine-tune": ["--dataset", "d", "--probe", "p", "--output", "o"],
    "evaluate": ["--dataset", "d", "--model", "m", "--output", "o"],
    "register": ["--dataset", "d", "--model", "m", "--evaluation", "e"],
    "promote": [],
}


@pytest.mark.parametrize("command", STEP_ARGUMENTS)
def test_step_command_options_default_to_the_same_values(command: str) -> None:
    args = build_parser().parse_args([command, *STEP_ARGUMENTS[command]])
    compared = [f.name for f in fields(Defaults) if hasattr(args, CLI_NAMES.get(f.name, f.name))]
    assert compared, command
    for name in compared:
        assert _cli_value(args, name) == getattr(DEFAULTS, name), (command, name)
    if command == "extract-features":
        assert args.backbone == DEFAULT_BACKBONE


def test_step_functions_take_the_same_defaults() -> None:
    from tlops.steps.evaluate import evaluate
    from tlops.steps.extract_features import extract_and_probe
    from tlops.steps.select_backbone import select_backbone

    for function in (select_backbone, extract_and_probe, evaluate):
        parameters = inspect.signature(function).parameters
        for name, parameter in parameters.items():
            if hasattr(DEFAULTS, name):
                assert parameter.default == getattr(DEFAULTS, name), (function.__name__, name)


def test_help_shows_the_defaults(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "tlops"), "run", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for option, value in (("epochs", DEFAULTS.epochs), ("backbones", DEFAULT_BACKBONE), ("strategy", "auto")):
        assert re.search(rf"--{option} \S+ .*?\(default: {re.escape(str(value))}\)", text), option


def test_the_default_backbone_is_written_once() -> None:
    literal = re.compile(r"""["']efficientnet_lite0["']""")
    found = [
        (path.relative_to(SRC).as_posix(), line.strip())
        for path in SRC.rglob("*.py")
        for line in path.read_text().splitlines()
        if literal.search(line)
    ]
    assert found == [("steps/config.py", 'DEFAULT_BACKBONE = "efficientnet_lite0"')]


def test_the_command_line_parses_and_checks_folders_without_importing_torch() -> None:
    code = (
        "import sys; from tlops.cli import build_parser; import tlops.steps.outputs; build_parser(); "
        "print(sorted({'torch', 'pandas', 'mlflow'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_cluster_run_needs_only_the_data_and_the_tracking_uri() -> None:
    """Every other parameter of the compiled pipeline has a real default (no None that kfp cannot convert)."""
    spec = next(yaml.safe_load_all((REPO / "pipelines" / "transfer_learning.yaml").read_text()))
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    required = {name for name, parameter in parameters.items() if "defaultValue" not in parameter}
    assert required == {"data_uri", "tracking_uri"}
    assert all(
        parameter.get("defaultValue") is not None for name, parameter in parameters.items() if name not in required
    )
