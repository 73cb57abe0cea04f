"""Built-in text demo data: the first paragraph of the docstrings of installed libraries, labelled by library.

The source is the Python source code of libraries tlops already depends on (numpy, pandas, scipy, scikit-learn and
matplotlib, as installed): each public top-level function and class of their public modules, parsed with :mod:`ast`
(nothing is imported, no network), gives one text, the first paragraph of its docstring. The task is to tell which
library a docstring comes from. Order and sampling are deterministic for a seed; texts that are short, or that two
libraries share, are left out.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import inspect
import random
from pathlib import Path

DEMO_LIBRARIES = ("numpy", "pandas", "scipy", "sklearn", "matplotlib")
DEMO_FILE = "docstrings.csv"
MIN_WORDS = 6  # a shorter first paragraph ("Return self.") says little about its library
_SCAN_FACTOR = 3  # candidates gathered per text kept, before sampling


def _first_paragraph(docstring: str) -> str:
    paragraph = inspect.cleandoc(docstring).split("\n\n", 1)[0]
    return " ".join(paragraph.split())


def _module_files(library: str) -> list[Path]:
    """The library's public module files (no tests, no private modules), sorted."""
    spec = importlib.util.find_spec(library)
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations)))
    return sorted(
        path
        for path in root.rglob("*.py")
        if not any(part.startswith("_") and part != "__init__.py" for part in path.relative_to(root).parts)
        and not any(part in ("tests", "testing", "conftest.py") for part in path.relative_to(root).parts)
    )


def _docstrings(library: str, wanted: int, seed: int) -> list[str]:
    """Up to ``wanted`` first paragraphs from ``library``, read from files in a seeded order until there are enough."""
    files = _module_files(library)
    random.Random(f"{seed}-{library}").shuffle(files)
    found: dict[str, None] = {}
    for path in files:
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) or node.name[0] == "_":
                continue
            docstring = ast.get_docstring(node, clean=False)
            text = _first_paragraph(docstring) if docstring else ""
            if len(text.split()) >= MIN_WORDS:
                found[text] = None
        if len(found) >= wanted:
            break
    return list(found)


def write_text_demo(folder: Path, per_class: int = 60, seed: int = 0) -> Path:
    """Write ``folder/docstrings.csv`` (columns ``text,label``): ``per_class`` docstrings of each library.

    Args:
        folder: Where the CSV is written (created if needed).
        per_class: Texts per library (fewer when a library has fewer usable docstrings).
        seed: Which files are read and which texts are kept.

    Returns:
        The CSV's path. The same arguments and installed libraries write the same file.
    """
    gathered = {library: _docstrings(library, per_class * _SCAN_FACTOR, seed) for library in DEMO_LIBRARIES}
    seen: dict[str, int] = {}
    for texts in gathered.values():
        for text in texts:
            seen[text] = seen.get(text, 0) + 1
    rows = []
    for library, texts in gathered.items():
        unique = sorted(text for text in texts if seen[text] == 1)  # a text two libraries share has no one label
        kept = random.Random(f"{seed}-{library}-sample").sample(unique, min(per_class, len(unique)))
        rows += [(text, library) for text in sorted(kept)]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DEMO_FILE
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path
