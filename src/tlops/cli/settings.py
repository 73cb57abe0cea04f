"""The command line's settings flags and ``--config FILE.yaml``, generated from the run config's one definition.

Each setting of :class:`~tlops.steps.config.RunConfig` becomes a flag (:attr:`Leaf.flag`), in a group per
section, with the setting's help text and default. Flags that are not given keep the value of ``--config``,
else the default: :func:`resolve_config` layers them (defaults < config file < flags) and checks the result,
naming a bad setting by its flag.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tlops.errors import TlopsError
from tlops.settings import SettingError
from tlops.steps.config import Leaf, RunConfig, cli_name, leaves

DEST_PREFIX = "setting:"
CONFIG_FILE = "config.yaml"
SECTION_TITLES = {
    "": "run",
    "split": "data split",
    "selection": "backbone selection",
    "train": "fine-tuning",
    "gate": "promotion gate",
    "tracking": "tracking",
    "storage": "storage",
    "audit": "data-quality audit",
    "export": "export for serving (ONNX, int8), gated on test accuracy",
    "resources": "GPU node pool and processes (Kubeflow; kfp.local ignores the node pool)",
}
GATE_DESCRIPTION = (
    "The new version replaces the champion only when every check passes: the paired-bootstrap confidence interval "
    "of the score difference clears the margin, the paired test is significant, no class loses more test images "
    "net than allowed, and calibration does not get worse than allowed."
)


def _matches(item: Leaf, paths: Iterable[str]) -> bool:
    return any(item.path == path or (path.endswith(".*") and item.section == path[:-2]) for path in paths)


def _default_text(item: Leaf) -> str:
    value = item.default
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return ",".join(value)
    if isinstance(value, dict | list):
        import json

        return json.dumps(value)
    return "''" if value == "" else str(value)


def _metavar(item: Leaf) -> str:
    if item.spec.choices is not None:
        return "{" + ",".join(str(choice) for choice in item.spec.choices if choice != "full") + "}"
    kind = getattr(item.type, "__origin__", item.type)
    return {int: "N", float: "X", tuple: "A,B", dict: "JSON", list: "JSON"}.get(kind, "TEXT")


def add_settings(parser: argparse.ArgumentParser, paths: Iterable[str] | None = None) -> None:
    """Add a flag for each setting (all of them, or those at ``paths``; ``section.*`` takes a whole section).

    The flags default to "not given" so that :func:`resolve_config` can layer them over ``--config``.
    """
    chosen = [item for item in leaves() if paths is None or _matches(item, list(paths))]
    groups: dict[str, argparse._ArgumentGroup] = {}
    for item in chosen:
        if item.section not in groups:
            description = GATE_DESCRIPTION if item.section == "gate" else None
            groups[item.section] = parser.add_argument_group(SECTION_TITLES[item.section], description)
        help_text = f"{item.spec.help} (default: {_default_text(item)})".replace("%", "%%")
        flags = [item.flag, *(f"--{alias}" for alias in item.spec.aliases)]
        options: dict[str, Any] = {"dest": DEST_PREFIX + item.path, "default": argparse.SUPPRESS, "help": help_text}
        if item.type is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["metavar"] = _metavar(item)
        groups[item.section].add_argument(*flags, **options)


def add_config_file(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE.yaml``: saved settings that the flags override (``OUTPUT/config.yaml`` repeats a run)."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.yaml",
        help="settings saved in YAML, sections as in OUTPUT/config.yaml (which every run writes, so "
        "`--config OUTPUT/config.yaml` repeats a run); flags given as well override the file",
    )


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags: dotted path -> value as typed."""
    return {dest[len(DEST_PREFIX) :]: value for dest, value in vars(args).items() if dest.startswith(DEST_PREFIX)}


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings of a ``--config`` YAML file.

    Raises:
        TlopsError: when the file is missing, not YAML, or not a mapping.
    """
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise TlopsError(f"--config {path}: cannot be read ({error.strerror or error}); give a YAML file") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise TlopsError(
            f"--config {path}: not valid YAML{where}; fix the file or start from a run's config.yaml"
        ) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise TlopsError(f"--config {path}: expected a mapping of sections to settings, got {type(loaded).__name__}")
    return loaded


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The run config: the defaults, then ``--config``, then the flags given.

    Raises:
        TlopsError: naming the flag (or the file's key) of a setting that is unknown, mistyped or out of range.
    """
    config_file = getattr(args, "config", None)
    mapping = read_config_file(config_file) if config_file is not None else {}
    for path, value in given_settings(args).items():
        target = mapping
        *sections, name = path.split(".")
        for part in sections:
            existing = target.get(part)
            target[part] = existing if isinstance(existing, dict) else {}
            target = target[part]
        target[name] = value
    try:
        return RunConfig.from_mapping(mapping)
    except SettingError as error:
        given = given_settings(args)

        def name(path: str) -> str:
            if path in given or config_file is None:
                return cli_name(path)
            return f"{path} (in {config_file})" if path in _paths(mapping) else cli_name(path)

        raise TlopsError(error.render(name)) from None


def _paths(mapping: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in mapping.items():
        paths |= _paths(value, f"{prefix}{key}.") if isinstance(value, dict) and key != "gpu_node_selector" else set()
        paths.add(f"{prefix}{key}")
    return paths


def write_config(config: RunConfig, folder: Path) -> Path:
    """Write the resolved settings to ``folder/config.yaml`` (what ``--config`` reads) and return its path."""
    import yaml

    path = folder / CONFIG_FILE
    header = "# tlops settings of this run; repeat it with: tlops run --config config.yaml --data ... \n"
    path.write_text(header + yaml.safe_dump(config.to_mapping(), sort_keys=False), encoding="utf-8")
    return path
