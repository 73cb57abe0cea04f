"""Bad text input at the command line (docs/text.md, "Bad input"): one ``tlops: error:`` line, exit status 2,
nothing registered and nothing written, before any step runs.

Every case runs the installed ``tlops`` console script in a subprocess, all started at once by one fixture; each
fails in the preflight (seconds). The folder cases judge ``.txt`` files by their content: a binary one is
quarantined, and a class folder of nothing else leaves no text to train on.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from refusals import one_error_line

TLOPS = Path(sys.executable).parent / "tlops"
CLI_TIMEOUT_S = 180
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))  # NUL bytes: not text, whatever its name


@dataclass(frozen=True)
class Case:
    """``tlops run`` arguments (``{root}`` is the scratch folder) and what the error line must name."""

    args: tuple[str, ...]
    needles: tuple[str, ...]


CASES: dict[str, Case] = {
    # A table whose columns name no text, with the task told: the columns it has, and the names it looks for.
    "no-text-column": Case(
        ("--task", "text-classification", "--data", "{root}/no_text.csv"),
        ("no_text.csv has no text column (it has body, label)", "name the column of texts text (or sentence"),
    ),
    # The same table with the task recognised from the data (the default): still one line naming its columns.
    "no-text-column-auto": Case(("--data", "{root}/no_text.csv"), ("no_text.csv", "(it has body, label)")),
    "one-class": Case(
        ("--data", "{root}/one_class.csv"), ("only one class ('cats')", "a classifier needs at least two")
    ),
    # Class folders whose every .txt is binary: each quarantined, nothing left to train on.
    "all-binary": Case(
        ("--data", "{root}/binary_texts"),
        ("every one of the 8 texts", "was quarantined", "binary file (NUL bytes), not text"),
    ),
    # A strategy that is for images only.
    "image-strategy": Case(
        ("--data", "{root}/texts.csv", "--strategy", "partial"),
        ("--strategy partial is for image-classification and object-detection runs", "use one of auto, linear-probe"),
    ),
    # An image-only training setting on a text run: refused before any step runs, not in the fine-tune step.
    "image-setting": Case(
        ("--data", "{root}/texts.csv", "--strategy", "lora", "--mixup", "0.2"),
        ("--mixup applies to images only", "leave it at 0 for text"),
    ),
}
# A folder that is not a Hugging Face model, as the text encoder: refused before any step runs.
NOT_A_MODEL = Case(
    ("--data", "{root}/texts.csv", "--backbones", "./not_a_model"),
    ("not_a_model", "has no config.json", "not a Hugging Face model folder"),
)


def _texts(label: str, count: int) -> list[tuple[str, str]]:
    return [(f"A short note number {i} about {label}, written for the bad input tests.", label) for i in range(count)]


def _write_table(path: Path, header: tuple[str, str], rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([header, *rows])


def _write_inputs(root: Path) -> None:
    _write_table(root / "no_text.csv", ("body", "label"), _texts("cats", 6) + _texts("dogs", 6))
    _write_table(root / "one_class.csv", ("text", "label"), _texts("cats", 12))
    _write_table(root / "texts.csv", ("text", "label"), _texts("cats", 6) + _texts("dogs", 6))
    for label in ("cats", "dogs"):
        (root / "binary_texts" / label).mkdir(parents=True)
        for i in range(4):
            (root / "binary_texts" / label / f"{i}.txt").write_bytes(BINARY + bytes([i]) + label.encode())
    (root / "not_a_model").mkdir()
    (root / "not_a_model" / "README.md").write_text("weights will go here\n")


def _env(root: Path) -> dict[str, str]:
    """This environment without tracking or S3 settings, offline, its caches in the scratch folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "HF_"))}
    return env | {"TLOPS_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "TLOPS_CACHE_DIR": str(root / "cache")}


def _run(case: Case, root: Path, name: str) -> subprocess.CompletedProcess[str]:
    args = [arg.replace("{root}", str(root)) for arg in case.args]
    output = ["--output", str(root / f"out-{name}")]
    try:
        return subprocess.run(
            [str(TLOPS), "run", *args, *output], cwd=root, env=_env(root), capture_output=True, text=True,
            timeout=CLI_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired as error:
        return subprocess.CompletedProcess(error.cmd, -9, str(error.stdout), f"timed out: {error.stderr}")


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, subprocess.CompletedProcess[str]], Path]:
    """Every case's result, and the scratch folder they ran in."""
    root = tmp_path_factory.mktemp("text-bad-input")
    _write_inputs(root)
    cases = CASES | {"not-a-model": NOT_A_MODEL}
    with ThreadPoolExecutor(max_workers=max(2, min(6, os.cpu_count() or 2))) as pool:
        results = dict(zip(cases, pool.map(lambda item: _run(item[1], root, item[0]), cases.items()), strict=True))
    return results, root


def _nothing_written(root: Path, name: str) -> None:
    assert not (root / f"out-{name}").exists(), sorted(p.name for p in (root / f"out-{name}").iterdir())
    assert not (root / "mlflow.db").exists() and not (root / "mlruns").exists()  # nothing tracked or registered


@pytest.mark.parametrize("name", list(CASES))
def test_bad_text_input_is_one_line(cli: tuple[dict[str, subprocess.CompletedProcess[str]], Path], name: str) -> None:
    results, root = cli
    one_error_line(results[name], *(needle.replace("{root}", str(root)) for needle in CASES[name].needles))
    _nothing_written(root, name)


def test_a_table_without_a_text_column_names_the_text_column(
    cli: tuple[dict[str, subprocess.CompletedProcess[str]], Path],
) -> None:
    results, _root = cli
    one_error_line(
        results["no-text-column-auto"], "no_text.csv", "text,label[,split] for texts", "name the column of texts text"
    )


def test_an_encoder_folder_that_is_not_a_model_is_refused_first(
    cli: tuple[dict[str, subprocess.CompletedProcess[str]], Path],
) -> None:
    results, root = cli
    one_error_line(results["not-a-model"], *NOT_A_MODEL.needles)
    _nothing_written(root, "not-a-model")
