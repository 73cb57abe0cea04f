"""One definition per setting: the CLI, --config, OUTPUT/config.yaml, the pipeline and the torchrun worker agree."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from tlops.cli import build_parser
from tlops.cli.settings import resolve_config, write_config
from tlops.errors import TlopsError
from tlops.steps.config import (
    Leaf,
    RunConfig,
    from_parameters,
    leaves,
    parameter_defaults,
    to_parameters,
)

LEAVES = leaves()


def other_value(item: Leaf) -> Any:
    """A valid value of the setting that is not its default."""
    default, spec = item.default, item.spec
    if spec.choices is not None:  # another choice; the default where it is the only one (the task, for now)
        return next((choice for choice in spec.choices if choice not in (default, "full")), default)
    if item.type is bool:
        return not default
    if item.type is int:
        return int(default) + 1
    if item.type is float:
        high = spec.maximum if spec.maximum is not None else default + 2
        return round((default + high) / 2, 6) if high != default else round(default / 2, 6)
    if isinstance(default, list) and (not default or isinstance(default[0], str)):
        return ["efficientnet_lite1", "efficientnet_lite2"]
    if isinstance(default, list):
        return [{"key": "pool", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}]
    if isinstance(default, dict):
        return {"pool": "a100"}
    return f"s3://bucket/{item.name}" if item.name.endswith(("cache", "uri", "weights")) else f"{default}-x"


def changed_config() -> RunConfig:
    """A run config with every setting away from its default (train.swa_epochs kept within train.epochs)."""
    mapping: dict[str, Any] = {}
    for item in LEAVES:
        target = mapping
        for part in item.path.split(".")[:-1]:
            target = target.setdefault(part, {})
        target[item.name] = other_value(item)
    mapping["split"] |= {"val_fraction": 0.2, "test_fraction": 0.1}
    mapping["train"]["swa_epochs"] = 1
    mapping["train"] |= {"grad_accumulation": 2, "batch_size": 64}
    return RunConfig.from_mapping(mapping)


def flags_of(config: RunConfig) -> list[str]:
    """The command-line flags that give ``config``."""
    mapping, argv = config.to_mapping(), []
    for item in LEAVES:
        value = mapping
        for part in item.path.split("."):
            value = value[part]
        if item.type is bool:
            argv.append(item.flag if value else "--no-" + item.flag[2:])
        elif isinstance(value, list) and value and isinstance(value[0], str):
            argv += [item.flag, ",".join(value)]
        elif isinstance(value, dict | list):
            argv += [item.flag, json.dumps(value)]
        else:
            argv += [item.flag, str(value)]
    return argv


def test_every_setting_is_declared_once_with_help_and_a_unique_flag_and_parameter() -> None:
    flags = [item.flag for item in LEAVES]
    labels = [item.parameter_label for item in LEAVES]
    assert len(set(flags)) == len(flags) and len(set(labels)) == len(labels)
    assert all(item.spec.help for item in LEAVES)
    assert {"--mixup", "--lr", "--gate-margin", "--processes-per-node", "--strategy"} <= set(flags)


def test_every_setting_survives_the_cli_the_config_file_the_parameters_and_the_worker(tmp_path: Path) -> None:
    config = changed_config()
    assert (
        all(
            other == value
            for other, value in zip(config.to_mapping().values(), RunConfig().to_mapping().values(), strict=True)
            if not isinstance(value, dict)
        )
        is False
    )  # something changed at the top level (the seed)
    # The command line: every flag given.
    args = build_parser().parse_args(["run", *flags_of(config)])
    assert resolve_config(args) == config
    # OUTPUT/config.yaml read back by --config.
    path = write_config(config, tmp_path)
    assert resolve_config(build_parser().parse_args(["run", "--config", str(path)])) == config
    # Pipeline parameters (what submit sends, what components receive).
    assert from_parameters(to_parameters(config)) == config
    # KFP hands numbers inside dict parameters over as floats and lists as JSON strings.
    parameters = to_parameters(config)
    parameters["train_settings"] = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                                    for k, v in parameters["train_settings"].items()}  # fmt: skip
    parameters["backbones"] = json.dumps(parameters["backbones"])
    assert from_parameters(parameters) == config
    # The torchrun worker's one JSON argument.
    from tlops.steps.fine_tune import worker_request

    request = json.loads(worker_request(tmp_path / "d", tmp_path / "p", tmp_path / "o", config))
    assert RunConfig.from_mapping(request["config"]) == config
    assert config.train.seed == config.split.seed == config.seed != 0


def test_flags_override_the_config_file_and_unknown_keys_are_named(tmp_path: Path) -> None:
    saved = tmp_path / "saved.yaml"
    saved.write_text(yaml.safe_dump({"train": {"epochs": 7, "mixup": 0.2}, "gate": {"margin": 0.01}}))
    config = resolve_config(build_parser().parse_args(["run", "--config", str(saved), "--epochs", "2"]))
    assert (config.train.epochs, config.train.mixup, config.gate.margin) == (2, 0.2, 0.01)

    saved.write_text(yaml.safe_dump({"train": {"mixupp": 0.2}}))
    with pytest.raises(TlopsError, match=r"unknown setting train\.mixupp \(in .*saved\.yaml\); did you mean mixup\?"):
        resolve_config(build_parser().parse_args(["run", "--config", str(saved)]))
    saved.write_text("train: [unclosed")
    with pytest.raises(TlopsError, match=r"not valid YAML at line 1"):
        resolve_config(build_parser().parse_args(["run", "--config", str(saved)]))
    with pytest.raises(TlopsError, match=r"cannot be read"):
        resolve_config(build_parser().parse_args(["run", "--config", str(tmp_path / "missing.yaml")]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mixup", "-1"], "--mixup must be >= 0, got -1.0"),
        (["--processes-per-node", "0"], "--processes-per-node must be positive, got 0"),
        (["--swa-epochs", "5"], "--swa-epochs must be between 0 and --epochs (3), got 5"),
        (["--batch-size", "30", "--grad-accumulation", "4"],
         "--batch-size 30 is not a multiple of --grad-accumulation 4"),
        (["--epochs", "two"], "--epochs must be a whole number, got 'two'"),
        (["--gate-confidence", "1"], "--gate-confidence must be in (0, 1), got 1.0"),
        (["--val-fraction", "0.5", "--test-fraction", "0.45"],
         "--val-fraction + --test-fraction must leave at least 10% for training; lower them"),
        (["--strategy", "parial"], "--strategy must be one of auto, linear-probe, mlp-probe, partial, surgical, lp-ft, "
                                   "gradual, frozen, lora, full, got 'parial' (did you mean partial?)"),
    ],
)  # fmt: skip
def test_the_command_line_names_a_bad_setting_by_its_flag(argv: list[str], message: str) -> None:
    args = build_parser().parse_args(["run", *argv])
    with pytest.raises(TlopsError) as error:
        resolve_config(args)
    assert str(error.value) == message or message in str(error.value)


def test_kubeflow_names_a_bad_setting_by_its_parameter() -> None:
    with pytest.raises(TlopsError, match=r"^parameter train_settings\.mixup must be >= 0, got -1\.0$"):
        from_parameters({"train_settings": {"mixup": -1}})
    with pytest.raises(TlopsError, match=r"^parameter processes_per_node must be positive, got 0$"):
        from_parameters({"processes_per_node": 0})
    with pytest.raises(TlopsError, match=r"^parameter gate_settings: unknown setting 'margn'; did you mean margin\?$"):
        from_parameters({"gate_settings": {"margn": 0.1}})


def test_every_component_input_has_a_default_except_the_data_and_the_tracking_server() -> None:
    from tlops.pipeline.components import ALL_COMPONENTS

    defaults = parameter_defaults()
    required_by_design = {"data_uri", "tracking_uri", "status"}  # the data, the registry, set by KFP
    for component in ALL_COMPONENTS:
        for name, spec in component.component_spec.inputs.items():
            is_artifact = not hasattr(spec, "type") or spec.type not in ("String", "Integer", "Float", "Boolean",
                                                                         "JsonObject", "JsonArray", "List", "Dict",
                                                                         "PipelineTaskFinalStatus")  # fmt: skip
            if name in defaults:
                assert spec.optional and spec.default == defaults[name], (component.name, name)
            elif not is_artifact and name not in required_by_design:
                assert spec.optional, (component.name, name)


def test_register_receives_every_setting_so_the_whole_config_is_logged() -> None:
    from tlops.pipeline.components import register

    settings = {name for name in parameter_defaults() if not name.startswith("gpu_")}
    assert settings <= set(register.component_spec.inputs)


def test_the_pipeline_has_the_config_parameters_and_requires_only_data_and_tracking() -> None:
    from tlops.pipeline.pipeline import pipeline_signature

    signature = pipeline_signature()
    required = [name for name, p in signature.parameters.items() if p.default is p.empty]
    assert required == ["data_uri", "tracking_uri"]
    assert set(signature.parameters) == {"data_uri", "tracking_uri", "credentials_secret", *parameter_defaults()}
    # Rarely changed settings travel in one dict per section; 31 with the extraction shard size and the audit exclusion.
    assert len(signature.parameters) <= 32


def test_an_empty_config_file_is_the_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert resolve_config(build_parser().parse_args(["run", "--config", str(empty)])) == RunConfig()
    assert replace(RunConfig(), seed=3).train.seed == 3


def test_a_setting_found_wrong_during_a_step_is_named_by_each_edge() -> None:
    """More blocks than the backbone has: --unfreeze-blocks on the command line, train_settings.* on Kubeflow."""
    from tlops.settings import SettingError
    from tlops.steps.config import cli_name, parameter_name
    from tlops.train.strategies import STRATEGIES

    with pytest.raises(SettingError) as error:
        STRATEGIES.get("partial").trained_blocks(4, RunConfig.from_mapping({"train": {"unfreeze_blocks": 9}}).train)
    assert error.value.render(cli_name) == (
        "--unfreeze-blocks 9 is more than the backbone's 4 blocks: use at most 4 (or --strategy lp-ft to train every "
        "block)"
    )
    assert error.value.render(parameter_name).startswith("train_settings.unfreeze_blocks 9 is more than")
    assert "(or strategy lp-ft" in error.value.render(parameter_name)
