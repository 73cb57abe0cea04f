"""One definition per setting: name, type, default, range and help text, in a dataclass field.

Every user setting of tlops is a field of a frozen dataclass (a *section*: the split, selection, training, gate,
tracking, storage and resources of :class:`tlops.steps.config.RunConfig`), declared with :func:`setting`. The edges
read that one definition and nothing else: the CLI generates its flags from it (``tlops.cli.settings``), the KFP
pipeline its parameters and the components their defaults (``tlops.pipeline.parameters``), ``--config FILE.yaml``
and ``OUTPUT/config.yaml`` are its mapping (:func:`to_mapping`, :func:`from_mapping`), and the torchrun worker gets
it as one JSON document.

Validation lives here too: :func:`check_ranges` checks each field against its declared choices and range, and
raises :class:`SettingError`, which names settings by their path (``gate.margin``) so that each edge can say the
name the user typed (``--gate-margin`` on the command line, ``gate_settings.margin`` on Kubeflow).

No third-party import: the CLI reads this before torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tlops.errors import TlopsError

_KEY = "tlops"


@dataclass(frozen=True)
class Spec:
    """What a setting declares besides its name, type and default.

    Attributes:
        help: One sentence for ``--help``, the component docs and the KFP UI.
        choices: The values it accepts (``None``: any of its type).
        minimum: Smallest value (``None``: no bound); ``open_min`` excludes it.
        maximum: Largest value (``None``: no bound); ``open_max`` excludes it.
        flag: CLI flag without the dashes (default: the section's flag prefix plus the name, ``_`` as ``-``).
        aliases: Other CLI flags accepted for it.
        parameter: A pipeline parameter and component input of its own; otherwise it travels in its section's
            dict parameter (settings users rarely change).
        user: ``False`` for a field the code fills in (a worker count, the run's seed copied into a section).
    """

    help: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    open_min: bool = False
    open_max: bool = False
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    parameter: bool = False
    user: bool = True

    def describe_range(self) -> str:
        """The accepted values in words, e.g. ``in (0, 1]`` or ``>= 0``."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f"in {'(' if self.open_min else '['}{low:g}, {high:g}{')' if self.open_max else ']'}"
        if low is not None:
            return f"{'>' if self.open_min else '>='} {low:g}"
        if high is not None:
            return f"{'<' if self.open_max else '<='} {high:g}"
        return ""


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    open_min: bool = False,
    open_max: bool = False,
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    parameter: bool = False,
) -> Any:
    """A user setting: a dataclass field carrying its :class:`Spec` (lists and dicts get a copy per instance)."""
    spec = Spec(help, choices, minimum, maximum, open_min, open_max, flag, aliases, parameter)
    if isinstance(default, list | dict):
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata={_KEY: spec})
    return field(default=default, metadata={_KEY: spec})


def internal(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None) -> Any:
    """A field the code fills in, not a user setting (no flag, no parameter, not in a config file)."""
    spec = Spec(user=False)
    if factory is not None:
        return field(default_factory=factory, metadata={_KEY: spec})
    return field(default=default, metadata={_KEY: spec})


def section(cls: type) -> Any:
    """A nested section of settings (a dataclass whose fields are settings), defaulting to its defaults."""
    return field(default_factory=cls, metadata={_KEY: Spec(help=(cls.__doc__ or "").split("\n")[0])})


def spec_of(item: dataclasses.Field) -> Spec:
    """The :class:`Spec` of a field (an undeclared field is internal)."""
    return item.metadata.get(_KEY, Spec(user=False))


def default_name(path: str) -> str:
    """A setting's name where no edge renders it: its flag by the common rule (``train.lr`` -> ``--lr``)."""
    return "--" + path.rpartition(".")[2].replace("_", "-")


class SettingError(TlopsError):
    """A setting out of its range, or settings that contradict each other.

    ``template`` names the settings as ``{0}``, ``{1}``, ... so that each edge renders them as its users name
    them; ``paths`` are their dotted paths in the run config (``gate.margin``).
    """

    def __init__(self, paths: tuple[str, ...], template: str) -> None:
        self.paths, self.template = paths, template
        super().__init__(self.render(default_name))

    def render(self, name: Callable[[str], str]) -> str:
        """The message with each setting named by ``name(path)``."""
        return self.template.format(*(name(path) for path in self.paths))

    def within(self, section: str) -> SettingError:
        """The same error with its paths prefixed by ``section``."""
        return SettingError(tuple(f"{section}.{path}" for path in self.paths), self.template)


def user_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a section that users set (declared with :func:`setting`), in order."""
    return [item for item in dataclasses.fields(cls) if spec_of(item).user]


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type annotation of each field of ``cls``."""
    return typing.get_type_hints(cls)


def check_ranges(instance: Any) -> None:
    """Check each user field of a section against its declared choices and range.

    Raises:
        SettingError: naming the first setting out of range, what it accepts and what it got.
    """
    for item in user_fields(type(instance)):
        spec, value = spec_of(item), getattr(instance, item.name)
        if spec.choices is not None:
            ok = value in spec.choices
        elif isinstance(value, int | float) and not isinstance(value, bool):
            ok = not (
                (spec.minimum is not None and (value < spec.minimum or (spec.open_min and value == spec.minimum)))
                or (spec.maximum is not None and (value > spec.maximum or (spec.open_max and value == spec.maximum)))
            )
        else:
            ok = True
        if not ok:
            close = difflib.get_close_matches(str(value), list(map(str, spec.choices or ())), n=2)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            whole = isinstance(value, int) and spec.minimum == 1 and not spec.open_min
            positive = spec.maximum is None and (whole or (spec.minimum == 0 and spec.open_min))
            allowed = "positive" if positive and spec.choices is None else spec.describe_range()
            raise SettingError((item.name,), "{0} must be " + allowed + f", got {value!r}{hint}")


def coerce(value: Any, kind: Any, path: str) -> Any:
    """``value`` as ``kind`` (the field's type), from what a YAML file, a JSON string or KFP hands over.

    KFP passes numbers inside dict parameters as floats (``3.0``) and ``tuple`` settings arrive as lists or
    comma-separated strings.

    Raises:
        SettingError: when the value is not of that type.
    """
    origin = typing.get_origin(kind) or kind
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        kind = next(arg for arg in args if arg is not type(None))
        return coerce(value, kind, path)
    problem = None
    if origin is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool):
            return value
        problem = "true or false"
    elif origin is int:
        if isinstance(value, str):
            value = value.strip()
            with contextlib.suppress(ValueError):
                value = float(value) if any(c in value for c in ".eE") else int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problem = "a whole number"
    elif origin is float:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        problem = "a number"
    elif origin is str:
        if isinstance(value, str):
            return value
        problem = "a string"
    elif origin is tuple:
        if isinstance(value, str) and value.lstrip().startswith("["):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            return tuple(value)
        problem = "a list of names (or one comma-separated string)"
    elif origin in (dict, list):
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        if isinstance(value, origin):
            return value
        problem = f"a JSON {origin.__name__}"
    else:
        return value
    raise SettingError((path,), "{0} must be " + f"{problem}, got {value!r}")


def from_mapping(cls: type, mapping: Mapping[str, Any], path: str = "") -> Any:
    """A section (or the whole run config) from a mapping of setting names to values; missing ones default.

    Nested sections are mappings of their own. Values are coerced to the field types (:func:`coerce`).

    Raises:
        SettingError: for a name the section does not have (with the close names) or a value of the wrong type
            or out of range, naming it by its full path.
    """
    if not isinstance(mapping, Mapping):
        raise SettingError((path or "the config",), "{0} must be a mapping of setting names to values, got "
                           f"{type(mapping).__name__}")  # fmt: skip
    fields = {item.name: item for item in user_fields(cls)}
    types = field_types(cls)
    values = {}
    for name, value in mapping.items():
        full = f"{path}.{name}" if path else str(name)
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; known: {', '.join(fields)}"
            raise SettingError((full,), "unknown setting {0}" + hint)
        kind = types[name]
        if dataclasses.is_dataclass(kind):
            values[name] = from_mapping(kind, value or {}, full)
        else:
            values[name] = coerce(value, kind, full)
    try:
        return cls(**values)
    except SettingError as error:
        raise error.within(path) if path else error from None


def to_mapping(instance: Any) -> dict[str, Any]:
    """The user settings of a section (or run config) as plain data: tuples as lists, sections nested."""
    result: dict[str, Any] = {}
    for item in user_fields(type(instance)):
        value = getattr(instance, item.name)
        if dataclasses.is_dataclass(value):
            result[item.name] = to_mapping(value)
        elif isinstance(value, tuple):
            result[item.name] = list(value)
        else:
            result[item.name] = value
    return result


def walk(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any, type]]:
    """Every leaf setting of a (nested) config class: ``(path, field, type, owning class)``, in order."""
    types = field_types(cls)
    leaves = []
    for item in user_fields(cls):
        path = f"{prefix}{item.name}"
        if dataclasses.is_dataclass(types[item.name]):
            leaves += walk(types[item.name], path + ".")
        else:
            leaves.append((path, item, types[item.name], cls))
    return leaves


def default_of(item: dataclasses.Field) -> Any:
    """A field's default value (calling its factory)."""
    if item.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return item.default_factory()  # type: ignore[misc]
    return item.default
