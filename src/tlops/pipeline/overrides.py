"""``--param NAME=VALUE``: pipeline parameters set directly, typed by the compiled pipeline's parameter types."""

from __future__ import annotations

import json
from typing import Any

from tlops.errors import TlopsError

# KFP parameter type -> (what the value must be, an example), for the JSON-typed ones.
_JSON_TYPES: dict[str, tuple[str, str]] = {
    "NUMBER_INTEGER": ("a whole number", "7"),
    "NUMBER_DOUBLE": ("a number", "0.5"),
    "BOOLEAN": ("true or false", "true"),
    "LIST": ("a JSON list", '\'["a", "b"]\''),
    "STRUCT": ("a JSON object", '\'{"key": "value"}\''),
}


def _fits(kind: str, value: Any) -> bool:
    if kind == "NUMBER_INTEGER":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "NUMBER_DOUBLE":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    return isinstance(value, list if kind == "LIST" else dict)


def parse_value(name: str, text: str, kind: str) -> Any:
    """The value of parameter ``name`` of KFP type ``kind`` given as ``text`` (JSON unless a string).

    Raises:
        TlopsError: when ``text`` is not a value of that type.
    """
    if kind not in _JSON_TYPES:
        return text
    wanted, example = _JSON_TYPES[kind]
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise TlopsError(
            f"--param {name}={text}: not JSON ({error.msg}); {name} takes {wanted}, e.g. --param {name}={example}"
        ) from None
    if not _fits(kind, value):
        raise TlopsError(f"--param {name}={text}: {name} takes {wanted}, e.g. --param {name}={example}")
    return float(value) if kind == "NUMBER_DOUBLE" else value


def parse_overrides(texts: list[str], inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The parameters ``--param NAME=VALUE`` options set.

    Args:
        texts: The options' values, in order (a later one wins).
        inputs: The pipeline's input parameters (``root.inputDefinitions.parameters`` of the compiled spec).

    Raises:
        TlopsError: for an option without ``=``, a name the pipeline does not have (listing the names it has), or
            a value not of the parameter's type.
    """
    overrides: dict[str, Any] = {}
    for text in texts:
        name, equals, value = text.partition("=")
        name = name.strip()
        if not equals or not name:
            raise TlopsError(f"--param {text!r}: give NAME=VALUE, e.g. --param epochs=7")
        if name not in inputs:
            raise TlopsError(
                f"--param {name}: the pipeline has no parameter {name!r}; its parameters: {', '.join(sorted(inputs))}"
            )
        overrides[name] = parse_value(name, value, inputs[name].get("parameterType", "STRING"))
    return overrides
