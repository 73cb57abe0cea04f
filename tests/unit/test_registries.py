"""Strategies, backbone families, tasks and steps are registered objects: each entry is tested by being registered."""

from __future__ import annotations

import pytest

from tlops.cli import build_parser
from tlops.cli.listing import listing
from tlops.cli.settings import resolve_config
from tlops.errors import TlopsError
from tlops.models.names import BACKBONE_FAMILIES, check_backbone_name
from tlops.registry import Registry
from tlops.steps.entries import STEPS
from tlops.tasks import TASKS
from tlops.train.config import TrainConfig
from tlops.train.strategies import STRATEGIES


def test_a_lookup_names_the_close_entries_and_a_second_entry_of_one_name_is_refused() -> None:
    registry: Registry[int] = Registry("colour", "--colour")
    registry.add("red", 1, aliases=("crimson",))
    registry.add("green", 2)
    assert registry.get("crimson") == 1 and registry.canonical("crimson") == "red" and "crimson" in registry
    with pytest.raises(TlopsError, match=r"^unknown colour 'gren' for --colour: did you mean green\?$"):
        registry.get("gren")
    with pytest.raises(TlopsError, match=r"^unknown colour 'blue' for --colour: choose one of red, green$"):
        registry.get("blue")
    with pytest.raises(ValueError, match="registered twice"):
        registry.add("red", 3)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_is_a_choice_of_the_command_line_and_listed(name: str) -> None:
    strategy = STRATEGIES.get(name)
    config = resolve_config(build_parser().parse_args(["run", "--strategy", name]))
    assert config.train.strategy == name and config.train.strategy_entry is strategy
    assert any(line.startswith(name) for line in listing("strategies"))
    assert strategy.kind in ("feature-based", "parameter-based", "decides")
    assert strategy.trains_backbone == (strategy.kind == "parameter-based")
    if name == "frozen":  # object detection: the pyramid and heads train, no backbone block
        assert strategy.tasks == ("object-detection",)
        assert strategy.trained_blocks(8, TrainConfig(), epoch=1) == []
    elif strategy.trains_backbone:
        blocks = strategy.trained_blocks(8, TrainConfig(unfreeze_blocks=2), epoch=1)
        assert blocks and all(0 <= block < 8 for block in blocks) and blocks == sorted(set(blocks))
        assert strategy.trained_blocks(8, TrainConfig(unfreeze_blocks=2), epoch=8)  # every epoch trains some
    else:
        with pytest.raises(ValueError, match="does not fine-tune"):
            strategy.trained_blocks(8, TrainConfig())


def test_full_is_read_as_lp_ft() -> None:
    assert TrainConfig(strategy="full").strategy == "lp-ft"


@pytest.mark.parametrize("name", BACKBONE_FAMILIES.names())
def test_every_backbone_family_has_a_loader_and_a_valid_example(name: str) -> None:
    from tlops.models.backbones import LOADERS

    family = BACKBONE_FAMILIES.get(name)
    assert name in LOADERS
    check_backbone_name(family.example)  # no error
    assert any(family.example.split(":")[0] in line for line in listing("backbones"))


def test_the_loaders_are_the_families() -> None:
    from tlops.models.backbones import LOADERS

    assert LOADERS.names() == BACKBONE_FAMILIES.names()


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_implements_the_protocol_and_is_listed(name: str) -> None:
    import numpy as np

    task = TASKS.get(name)
    assert task.name == name and task.summary
    for method in ("prepare", "build_model", "metrics", "gate_statistic", "serving_signature"):
        assert callable(getattr(task, method)), method
    targets, probabilities = np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    assert task.gate_statistic(targets, probabilities).tolist() == [True, True, False]
    assert any(line.startswith(name) for line in listing("tasks"))


@pytest.mark.parametrize("name", STEPS.names())
def test_every_step_has_a_command_with_its_settings_and_a_component(name: str) -> None:
    from tlops.pipeline import components

    entry = STEPS.get(name)
    parser = build_parser()
    argv = [name, "--output", "out"] + [f"--{folder.name}" for folder in entry.folders if folder.required]
    argv = [part for flag in argv for part in ([flag, "x"] if flag.startswith("--") and flag != "--output" else [flag])]
    if name == "prepare-data":
        argv += ["--data", "d"]
    args = parser.parse_args(argv)
    assert args.command == name
    if name == "select-backbone":  # on Kubeflow: one score-backbone task per candidate, gathered by select-backbone
        component, scoring = components.select_backbone, components.score_backbone
        assert {"dataset", "backbone"} <= set(
            scoring.component_spec.inputs
        ) and "scores" in component.component_spec.inputs
        return
    component = getattr(components, name.replace("-", "_"))
    assert component.component_spec.name == name
    for folder in entry.folders:
        assert folder.name in component.component_spec.inputs, (name, folder.name)
        assert component.component_spec.inputs[folder.name].optional == (not folder.required), (name, folder.name)
