"""Text classification sets built offline from text that ships on this machine, in the ``text,label`` CSV layout.

Each set is deterministic (:data:`SOURCE_SEED`): :data:`PER_CLASS` texts a class, deduplicated (a text found under
two labels is dropped), the first :data:`TEST_PER_CLASS` of each class the fixed test set, the rest the training pool
that :func:`training_set` draws a run's training examples from (nested across sizes, by the run's seed).

* ``docstrings`` (topic, code prose): the first paragraph of the docstrings of public functions and classes in the
  ``.py`` sources of installed libraries (numpy, scipy, pandas, torch, matplotlib, sklearn, sympy), labelled by
  library; read with :mod:`ast`, nothing imported (public names of private modules count: scipy keeps most of its
  code there). Tests, vendored code and names starting with ``_`` skipped.
* ``manpages`` (genre): the NAME line and the first DESCRIPTION paragraph of English man pages under
  ``/usr/share/man/man{1,2,3,5,7,8}``, labelled by section (user commands, system calls, library functions, file
  formats, overviews, administration); roff macros and escapes stripped, ``.so`` redirections skipped.
* ``language`` (language identification of short UI strings, where character n-grams should win): translated
  ``msgstr`` strings (20..200 characters, not equal to their ``msgid``) of the gettext catalogues under
  ``/usr/share/locale/<lang>/LC_MESSAGES/*.mo``, read with :mod:`gettext`, for de, es, fr, it, nl and pt.
* ``aws`` (fine-grained topic, API reference prose): the first paragraph of the operation, shape and member
  documentation of six services in botocore's bundled service models (``botocore/data/<service>/<latest>/
  service-2.json.gz``), HTML tags stripped, labelled by service.
"""

from __future__ import annotations

import ast
import csv
import gettext
import gzip
import html
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

SOURCE_SEED = 1234  # the sets themselves; a run's seed only picks its training subset
TEST_PER_CLASS = 30
PER_CLASS = 160  # 30 to test, 130 in the training pool (size 100 leaves room for seeds to differ)
CANDIDATES = 600  # stop reading a class's sources once this many candidates are found (keeps builders fast)
MAX_CHARS = 500

LIBRARIES = ("numpy", "scipy", "pandas", "torch", "matplotlib", "sklearn", "sympy")
MAN_SECTIONS = {"1": "commands", "2": "syscalls", "3": "library", "5": "formats", "7": "overview", "8": "admin"}
LANGUAGES = ("de", "es", "fr", "it", "nl", "pt")
AWS_SERVICES = ("s3", "ec2", "iam", "lambda", "dynamodb", "rds")
MAN_ROOT = Path("/usr/share/man")
LOCALE_ROOT = Path("/usr/share/locale")


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()[:MAX_CHARS]


def _shuffled(paths: list[Path], rng: np.random.Generator) -> list[Path]:
    paths = sorted(paths)
    return [paths[i] for i in rng.permutation(len(paths))]


# --- sources -------------------------------------------------------------------------------------------------------


def _site_packages() -> Path:
    import numpy

    return Path(numpy.__file__).resolve().parent.parent


def _docstrings(rng: np.random.Generator) -> dict[str, list[str]]:
    site = _site_packages()
    per_class: dict[str, list[str]] = {}
    for library in LIBRARIES:
        found: list[str] = []
        root = site / library
        files = [
            p
            for p in root.rglob("*.py")
            if not any(part in ("tests", "testing", "_vendor", "_vendored") for part in p.relative_to(root).parts)
            and not p.name.startswith("test")
        ]
        for path in _shuffled(files, rng):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and not node.name.startswith(
                    "_"
                ):
                    doc = ast.get_docstring(node)
                    if doc:
                        text = _clean(doc.split("\n\n")[0])
                        if len(text) >= 25:
                            found.append(text)
            if len(found) >= CANDIDATES:
                break
        per_class[library] = found
    return per_class


_ROFF_ESCAPES = [
    (re.compile(r"\\f(\(..|\[[^]]*\]|.)"), ""),  # font changes
    (re.compile(r"\\\*(\(..|\[[^]]*\]|.)"), ""),  # string registers
    (re.compile(r"\\\((em|en|hy)"), "-"),
    (re.compile(r"\\\(lq|\\\(rq|\\\(dq"), '"'),
    (re.compile(r"\\\((oq|cq|aq)"), "'"),
    (re.compile(r"\\\(..|\\\[[^]]*\]"), ""),
    (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\[&|^%:]"), ""),
    (re.compile(r"\\s[-+]?\d"), ""),
    (re.compile(r"\\(.)"), r"\1"),
]


def _roff_text(line: str) -> str:
    """A roff line's visible text: font macros (.B, .IR, ...) keep their arguments, other macros are dropped."""
    if line.startswith((".", "'")):
        macro, _, rest = line[1:].partition(" ")
        if macro not in ("B", "I", "BR", "RB", "IR", "RI", "BI", "IB", "SM", "SB"):
            return ""
        line = rest.replace('"', "")
    for pattern, repl in _ROFF_ESCAPES:
        line = pattern.sub(repl, line)
    return line


def _man_page(path: Path) -> str | None:
    """NAME line and first DESCRIPTION paragraph of one man page, or None (a ``.so`` link, no NAME)."""
    try:
        lines = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace").splitlines()
    except (OSError, EOFError):
        return None
    section, name, description = "", [], []
    for raw in lines:
        if raw.startswith(('.\\"', "'\\\"", '.\\\\"')) or raw.strip() == ".":
            continue
        if raw.startswith(".so "):
            return None
        if raw.startswith((".SH", ".Sh")):
            if section == "DESCRIPTION" and description:
                break
            section = raw[3:].strip().strip('"').upper()
            continue
        if section == "DESCRIPTION" and description and raw.startswith((".PP", ".P", ".LP", ".IP", ".TP", ".Pp")):
            break
        text = _roff_text(raw)
        if section == "NAME":
            name.append(text)
        elif section == "DESCRIPTION":
            description.append(text)
    if not name:
        return None
    return _clean(" ".join(name) + ". " + " ".join(description))


def _manpages(rng: np.random.Generator) -> dict[str, list[str]]:
    per_class: dict[str, list[str]] = {}
    for section, label in MAN_SECTIONS.items():
        found: list[str] = []
        for path in _shuffled(list((MAN_ROOT / f"man{section}").glob("*.gz")), rng):
            text = _man_page(path)
            if text and len(text) >= 40:
                found.append(text)
            if len(found) >= CANDIDATES:
                break
        per_class[label] = found
    return per_class


def _language(rng: np.random.Generator) -> dict[str, list[str]]:
    per_class: dict[str, list[str]] = {}
    for language in LANGUAGES:
        found: list[str] = []
        for path in sorted((LOCALE_ROOT / language / "LC_MESSAGES").glob("*.mo")):
            try:
                with path.open("rb") as handle:
                    catalog = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
            except (OSError, UnicodeDecodeError, ValueError):
                continue
            for msgid, msgstr in catalog.items():
                if isinstance(msgid, str) and msgid and isinstance(msgstr, str) and msgstr != msgid:
                    text = _clean(msgstr)
                    if 20 <= len(text) <= 200:
                        found.append(text)
        per_class[language] = found
    return per_class


def _aws_paragraphs(model: dict) -> Iterator[str]:
    docs = [op.get("documentation", "") for op in model.get("operations", {}).values()]
    for shape in model.get("shapes", {}).values():
        docs.append(shape.get("documentation", ""))
        docs += [m.get("documentation", "") for m in shape.get("members", {}).values()]
    for doc in docs:
        first = re.split(r"</p>|\n\n", doc, maxsplit=1)[0]
        yield _clean(html.unescape(re.sub(r"<[^>]+>", " ", first)))


def _aws(rng: np.random.Generator) -> dict[str, list[str]]:
    import botocore

    data = Path(botocore.__file__).parent / "data"
    per_class: dict[str, list[str]] = {}
    for service in AWS_SERVICES:
        latest = sorted(p for p in (data / service).iterdir() if p.is_dir())[-1]
        model = json.loads(gzip.decompress((latest / "service-2.json.gz").read_bytes()))
        per_class[service] = [t for t in _aws_paragraphs(model) if len(t) >= 30]
    return per_class


BUILDERS: dict[str, Callable[[np.random.Generator], dict[str, list[str]]]] = {
    "docstrings": _docstrings,
    "manpages": _manpages,
    "language": _language,
    "aws": _aws,
}
DATASETS = tuple(BUILDERS)


# --- sets ----------------------------------------------------------------------------------------------------------


def build(name: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The set ``name`` as (test, pool) lists of (text, label): :data:`TEST_PER_CLASS` a class to test, the rest pool.

    Raises:
        ValueError: a class has fewer than :data:`PER_CLASS` distinct texts on this machine.
    """
    rng = np.random.default_rng(SOURCE_SEED)
    per_class = BUILDERS[name](rng)
    labels_of: dict[str, set[str]] = {}
    for label, texts in per_class.items():
        for text in texts:
            labels_of.setdefault(text, set()).add(label)
    test: list[tuple[str, str]] = []
    pool: list[tuple[str, str]] = []
    for label in sorted(per_class):
        unique = sorted({t for t in per_class[label] if len(labels_of[t]) == 1})
        if len(unique) < PER_CLASS:
            raise ValueError(f"{name}: class {label!r} has {len(unique)} distinct texts here, {PER_CLASS} needed")
        chosen = [unique[i] for i in rng.permutation(len(unique))[:PER_CLASS]]
        test += [(t, label) for t in chosen[:TEST_PER_CLASS]]
        pool += [(t, label) for t in chosen[TEST_PER_CLASS:]]
    return test, pool


def training_set(pool: list[tuple[str, str]], size: int, seed: int) -> list[tuple[str, str]]:
    """``size`` examples a class from the pool: the first ``size`` of a per-class permutation drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, str]] = []
    for label in sorted({label for _, label in pool}):
        rows = [row for row in pool if row[1] == label]
        chosen += [rows[i] for i in rng.permutation(len(rows))[:size]]
    return chosen


def write_csv(rows: list[tuple[str, ...]], path: Path, columns: tuple[str, ...] = ("text", "label")) -> Path:
    """Write ``rows`` as the ``text,label`` CSV a user brings (``columns``: with a ``split`` column too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(columns))
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle)]


def source(name: str, workdir: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The set's (test, pool), built once and kept as ``WORKDIR/sources/<name>/{test,pool}.csv``."""
    folder = workdir / "sources" / name
    if not (folder / "pool.csv").exists():
        test, pool = build(name)
        write_csv(test, folder / "test.csv")
        write_csv(pool, folder / "pool.csv")
    return read_csv(folder / "test.csv"), read_csv(folder / "pool.csv")


if __name__ == "__main__":
    import sys
    import time

    for dataset in sys.argv[1:] or DATASETS:
        began = time.perf_counter()
        test_rows, pool_rows = build(dataset)
        labels = sorted({label for _, label in test_rows})
        print(f"{dataset}: {len(labels)} classes {labels}, {time.perf_counter() - began:.1f} s")
        for text, label in test_rows[:: TEST_PER_CLASS * 2]:
            print(f"  [{label}] {text[:150]}")
