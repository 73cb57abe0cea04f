"""The examples of the generated ``components/<name>.md`` pages, read and run as written."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from repository import COMPONENTS


def example(name: str) -> str:
    """The Python example of ``components/<name>.md``."""
    page = (COMPONENTS / f"{name}.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    return code


def load_example(name: str, folder: Path) -> Callable:
    """Run the example of ``components/<name>.md`` in ``folder`` (it compiles there) and return its pipeline."""
    namespace: dict[str, Any] = {}
    # dont_inherit: not this module's `from __future__ import annotations` (KFP reads the annotations as types)
    exec(compile(example(name), f"components/{name}.md", "exec", dont_inherit=True), namespace)
    assert (folder / f"with_{name}.yaml").is_file(), "the example compiles its pipeline"
    return namespace[f"with_{name}"]
