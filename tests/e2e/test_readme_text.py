"""The text classification commands and snippet of docs/text.md and README.md, run as a user types them.

Part of the README contract of ``test_readme.py``: the commands are read and declared through its
:func:`~test_readme.readme_command`, :func:`~test_readme.readme_snippet` and :func:`~test_readme.covers`, and its
``test_every_readme_command_is_run_or_excused`` imports this module, so one check sees every ``@covers``. Kept in a
file of its own so that pytest-xdist runs it beside ``test_readme.py`` (``--dist loadfile``).

Two whole text runs, started together: the built-in demo (20 docstrings a library) and ``tlops run --data
./texts.csv`` on a table of real text (the docstrings of three libraries, written as UTF-16 with synonym column
names and a split column). The data step alone runs on class folders of ``.txt`` files in three encodings, with a
binary file, an empty one, a duplicate and a label conflict.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from repository import REPO
from test_readme import (
    PARALLEL_RUNS,
    SHORT_TIMEOUT_S,
    _report_wall_times,  # noqa: F401  (prints this module's wall times too)
    base_env,
    covers,
    manifest_rows,
    printed_json,
    readme_command,
    readme_snippet,
    run,
    succeeded,
)
from tlops.data.text.decoding import normalise_text
from tlops.data.text.demo import DEMO_LIBRARIES, write_text_demo

DEMO_TEXT = "tlops run --demo text"
TEXTS_CSV = "tlops run --data ./texts.csv"
PREPARE_TEXTS = "tlops prepare-data --data ./my_texts --output ./prepared"
DEMO_PER_CLASS = "20"
TABLE_LIBRARIES = ("matplotlib", "numpy", "pandas")
TABLE_SPLITS = {"test": 4, "val": 3, "train": 13}  # per class, in this order; val written as "validation"
TFIDF_NAME = "char n-gram TF-IDF"  # what the summary calls the no-transfer text baseline

# docs/text.md, after a text run: the champion of the run's local store answers strings, and an empty one with its
# own error.
SNIPPET = """\
import mlflow
import pandas as pd

mlflow.set_tracking_uri("sqlite:///tlops-run/mlflow.db")
model = mlflow.pyfunc.load_model("models:/tlops-classifier@champion")
texts = ["Plot y versus x as lines and markers.", "Return the cumulative sum of the elements along an axis.", ""]
print(model.predict(pd.DataFrame({"text": texts}))[["label", "probability", "error"]])
"""
# Run after the snippet, in the same process: every column of its answer, as JSON.
ANSWER = '\nprint("ANSWER " + model.predict(pd.DataFrame({"text": texts})).to_json(orient="records"))\n'


def write_texts_csv(path: Path) -> dict[str, int]:
    """``texts.csv``: 20 docstrings of each of three libraries, columns ``Document,Category,split``, in UTF-16.

    Returns:
        The texts written per split (over all classes).
    """
    demo = write_text_demo(path.parent / "docstrings", per_class=sum(TABLE_SPLITS.values()), seed=1)
    with demo.open(newline="", encoding="utf-8") as file:
        rows = [row for row in csv.DictReader(file) if row["label"] in TABLE_LIBRARIES]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["Document", "Category", "split"])
    counts = dict.fromkeys(TABLE_SPLITS, 0)
    for library in TABLE_LIBRARIES:
        texts = [row["text"] for row in rows if row["label"] == library]
        assert len(texts) == sum(TABLE_SPLITS.values()), (library, len(texts))
        start = 0
        for split, count in TABLE_SPLITS.items():
            for text in texts[start : start + count]:
                writer.writerow([text, library, "validation" if split == "val" else split])
            start += count
            counts[split] += count
    path.write_bytes(buffer.getvalue().encode("utf-16"))  # with its byte-order mark
    return counts


@dataclass
class TextRun:
    cwd: Path
    given: dict[str, int]
    result: subprocess.CompletedProcess[str] | None = None


# test name -> (the command as shown, what it needs in its folder, extra environment)
TEXT_RUNS = {
    "test_text_demo_run": (DEMO_TEXT, lambda cwd: {}, {"TLOPS_DEMO_IMAGES_PER_CLASS": DEMO_PER_CLASS}),
    "test_text_run_on_a_table": (TEXTS_CSV, lambda cwd: write_texts_csv(cwd / "texts.csv"), {}),
}


@pytest.fixture(scope="module")
def text_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TextRun]:
    """The whole text runs the selected tests check, started together (PARALLEL_RUNS at a time)."""
    selected = {item.name for item in request.session.items if item.module is sys.modules[__name__]}
    runs: dict[str, TextRun] = {}
    jobs = []
    for name, (text, write, env) in TEXT_RUNS.items():
        if name in selected:
            cwd = tmp_path_factory.mktemp(name.removeprefix("test_"))
            runs[name] = TextRun(cwd, write(cwd))
            jobs.append((name, readme_command(text), env))

    def start(job: tuple[str, Any, dict[str, str]]) -> None:
        name, command, env = job
        runs[name].result = run(command, runs[name].cwd, env)

    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        list(pool.map(start, jobs))
    return runs


def check_text_run(run_: TextRun, classes: list[str]) -> dict[str, Any]:
    """A first text run into a fresh local registry: version 1, champion, selected between minilm and TF-IDF."""
    stdout = succeeded(run_.result)
    assert "tlops run finished" in stdout
    output = run_.cwd / "tlops-run"
    summary = json.loads((output / "run_summary.json").read_text())
    dataset = summary["dataset"]
    assert dataset["layout"] == "text-table" and dataset["classes"] == classes
    assert dataset["quarantined"] == 0
    assert summary["registered_model"] == "tlops-classifier" and summary["version"] == 1
    assert sorted(summary["aliases"]) == ["challenger", "champion"]
    assert summary["strategy"] in ("linear-probe", "mlp-probe"), summary["strategy_reasons"]  # auto on small data
    accuracy = summary["metrics"]["test_accuracy"]
    assert 1 / len(classes) < accuracy <= 1, summary["metrics"]
    assert summary["metrics"]["test_images"] == dataset["num_test"]
    # Selection: the bundled encoder against the TF-IDF baseline on the same folds; the better one is shipped.
    selection = summary["selection"]
    ranking = {row["name"]: row for row in selection["ranking"]}
    assert set(ranking) == {"minilm", "tfidf"}
    assert selection["chosen"] == summary["backbone"] in ("minilm", "tfidf")
    assert ranking[summary["backbone"]]["status"] == "chosen"
    better = max(ranking, key=lambda name: ranking[name]["probe_accuracy"])
    assert summary["backbone"] == better, selection["reasons"]  # --ship-baseline is the default
    assert any(f"minilm {ranking['minilm']['probe_accuracy']:.3f} vs {TFIDF_NAME}" in r for r in selection["reasons"])
    assert " minilm " in stdout and TFIDF_NAME in stdout and selection["reasons"][-1] in stdout
    if summary["backbone"] == "tfidf":
        assert "shipping the no-transfer baseline" in stdout
    # The registry: version 1 is the champion.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    assert int(client.get_model_version_by_alias("tlops-classifier", "champion").version) == 1
    return summary


def check_snippet(cwd: Path, classes: list[str]) -> None:
    """The docs' snippet in a text run's folder: a label for each string, its own error for the empty one."""
    result = subprocess.run(
        [sys.executable, "-c", readme_snippet(SNIPPET) + ANSWER],
        cwd=cwd,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=SHORT_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed, answer = result.stdout.split("ANSWER ")
    header, *lines = printed.strip().splitlines()
    assert header.split() == ["label", "probability", "error"] and len(lines) == 3, printed
    rows = json.loads(answer)
    assert len(rows) == 3
    for index, row in enumerate(rows[:2]):
        assert row["error"] is None and row["label"] in classes, row
        assert sorted(row["probabilities"]) == classes
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert row["probability"] == pytest.approx(max(row["probabilities"].values()))
        assert row["top_k"][0] == {"label": row["label"], "probability": row["probability"]}, row["top_k"]
        printed_row = lines[index].split()  # index, label, probability, error
        assert printed_row[1] == row["label"] and printed_row[3] == "None", printed
        assert float(printed_row[2]) == pytest.approx(row["probability"], abs=1e-5)
    empty = rows[2]
    assert empty["label"] is None and empty["probability"] is None
    assert empty["error"].startswith("the row's text is empty"), empty
    assert lines[2].split()[1:3] == ["None", "None"], printed


@pytest.mark.pipeline
@covers(DEMO_TEXT, SNIPPET)
def test_text_demo_run(text_runs: dict[str, TextRun]) -> None:
    demo = text_runs["test_text_demo_run"]
    classes = sorted(DEMO_LIBRARIES)
    summary = check_text_run(demo, classes)
    assert "using the built-in text demo" in demo.result.stdout
    per_class = int(DEMO_PER_CLASS)
    csv_file = demo.cwd / "tlops-run" / "demo-data" / "docstrings.csv"
    with csv_file.open(newline="", encoding="utf-8") as file:
        labels = [row["label"] for row in csv.DictReader(file)]
    assert sorted(set(labels)) == classes and all(labels.count(c) == per_class for c in classes)
    dataset = summary["dataset"]
    assert dataset["num_train"] + dataset["num_val"] + dataset["num_test"] == len(labels)
    check_snippet(demo.cwd, classes)


@pytest.mark.pipeline
@covers(TEXTS_CSV, SNIPPET)
def test_text_run_on_a_table(text_runs: dict[str, TextRun]) -> None:
    """UTF-16 with a byte-order mark, columns found by their synonyms (any case), the given splits kept."""
    table = text_runs["test_text_run_on_a_table"]
    summary = check_text_run(table, list(TABLE_LIBRARIES))
    dataset = summary["dataset"]
    assert {split: dataset[f"num_{split}"] for split in TABLE_SPLITS} == table.given
    (report,) = (table.cwd / "tlops-run" / "pipeline_root").rglob("report.md")
    text = report.read_text()
    assert "columns: text from `Document`, label from `Category`, split from `split`" in text
    assert "encodings: utf-16 (1 file)" in text
    written = (table.cwd / "texts.csv").read_bytes().decode("utf-16")
    expected = {
        (normalise_text(row["Document"]), row["Category"], "val" if row["split"] == "validation" else row["split"])
        for row in csv.DictReader(io.StringIO(written))
    }
    rows = manifest_rows(table.cwd / "tlops-run" / "pipeline_root")
    assert {(row["text"], row["label"], row["split"]) for row in rows} == expected
    check_snippet(table.cwd, list(TABLE_LIBRARIES))


def write_my_texts(root: Path) -> None:
    """Class folders of .txt files: cp1252, UTF-8 and UTF-16 texts, a binary file, an empty one, a Markdown file,
    a copy within a class and one text under both labels."""
    french = [
        "Le café numéro {i} est très agréable, à côté de l'hôtel.",
        "Où est la gare ? Elle est à {i} kilomètres d'ici, près du marché.",
    ]
    english = [
        "The coffee shop number {i} is next to the hotel.",
        "Where is the station? It is {i} miles from here, near the market.",
    ]
    (root / "french").mkdir(parents=True)
    (root / "english").mkdir()
    for i in range(6):
        (root / "french" / f"{i}.txt").write_bytes(french[i % 2].format(i=i).encode("cp1252"))
        (root / "english" / f"{i}.txt").write_text(english[i % 2].format(i=i) + "\r\n", encoding="utf-8")
    (root / "english" / "utf16.txt").write_bytes("A text about the harbour and its ships.".encode("utf-16"))
    (root / "english" / "copy.txt").write_text(english[0].format(i=0))  # collapsed with 0.txt
    (root / "english" / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (root / "english" / "empty.txt").write_text("  \n")
    (root / "english" / "notes.md").write_text("# notes\n")
    (root / "french" / "conflict.txt").write_text(english[1].format(i=1))  # english/1.txt's text, labelled french


@covers(PREPARE_TEXTS)
def test_prepare_data_on_text_folders(tmp_path: Path) -> None:
    write_my_texts(tmp_path / "my_texts")
    stdout = succeeded(run(readme_command(PREPARE_TEXTS), tmp_path, timeout=SHORT_TIMEOUT_S))
    assert printed_json(stdout)["classes"] == ["english", "french"]
    prepared = tmp_path / "prepared"
    summary = json.loads((prepared / "prepare_summary.json").read_text())
    assert summary["task"] == "text-classification" and summary["layout"] == "text-folder"
    reasons = {q["path"]: q["reason"] for q in summary["quarantined"]}
    assert reasons["english/photo.txt"].startswith("binary file")
    assert reasons["english/empty.txt"].startswith("empty text")
    assert reasons["english/notes.md"].startswith("not a .txt file")
    assert reasons["english/1.txt"] == reasons["french/conflict.txt"] == "same text labelled english and french"
    assert len(reasons) == 5
    assert summary["duplicates_removed"] == 1
    encodings = summary["details"]["encodings"]
    assert encodings["cp1252"] == 6 and encodings["utf-16"] == 1, encodings
    rows = manifest_rows(prepared)
    texts = {row["relpath"]: row["text"] for row in rows}
    assert texts["french/0.txt"] == "Le café numéro 0 est très agréable, à côté de l'hôtel."  # decoded, not mojibake
    (kept,) = {path for path in texts if path in ("english/0.txt", "english/copy.txt")}
    assert texts[kept] == "The coffee shop number 0 is next to the hotel."  # CRLF and surrounding space gone
    assert texts["english/utf16.txt"] == "A text about the harbour and its ships."
    assert len(rows) == 12 and len({row["sha256"] for row in rows}) == 12  # one copy of each text, in one split
    for label in ("english", "french"):
        assert {row["split"] for row in rows if row["label"] == label} == {"train", "val", "test"}
    report = (prepared / "report.md").read_text()
    assert "`english/photo.txt`" in report and "encodings: cp1252 (6 files)" in report


# --- the text benchmarks (bench/README.md) --------------------------------------------------------------------------

BENCH_SPELLING = "tlops run --data texts.csv"  # bench/README.md's mention: the same command without ./
TEXT_EMBEDDING = (
    "python bench/text_embedding.py --texts 256 --repeats 2 --output /tmp/tlops-bench-text/text_embedding.json"
)
TEXT_EMBEDDING_USAGE = "python bench/text_embedding.py [--texts N] [--batch-size B] [--repeats R] [--output FILE]"
TEXT_TRANSFER_USAGE = (
    "python bench/text_transfer.py [--workdir DIR] [--sizes 10,30,100] [--seeds 0,1] [--arms LIST] [--json FILE] "
    "[--merge FILE]"
)


@covers(BENCH_SPELLING)
def test_the_bench_readme_names_the_documented_table_command() -> None:
    """bench/README.md's `tlops run --data texts.csv` is test_text_run_on_a_table's command, spelled without ./."""
    shown = readme_command(BENCH_SPELLING).argv
    assert shown == [word.removeprefix("./") for word in readme_command(TEXTS_CSV).argv]


@covers(TEXT_EMBEDDING, TEXT_EMBEDDING_USAGE)
def test_bench_text_embedding(tmp_path: Path) -> None:
    """Both forms on 8 texts, one pair (instead of 256 texts, two pairs)."""
    shown = readme_command(TEXT_EMBEDDING, {"/tmp/tlops-bench-text": str(tmp_path / "bench")})
    shown.argv += ["--texts", "8", "--repeats", "1"]
    usage = readme_command(
        TEXT_EMBEDDING_USAGE,
        {"[--texts N] [--batch-size B] [--repeats R]": "--texts 8 --batch-size 4 --repeats 1"}
        | {"[--output FILE]": f"--output {tmp_path / 'usage.json'}"},
    )
    for command, report in ((shown, tmp_path / "bench" / "text_embedding.json"), (usage, tmp_path / "usage.json")):
        stdout = succeeded(run(command, REPO, timeout=SHORT_TIMEOUT_S))
        assert "| batches | tokens | padded tokens | forward (texts/s) | embed_texts (texts/s) | ratio |" in stdout
        result = json.loads(report.read_text())
        assert result["texts"] == 8 and result["results"]


@covers(TEXT_TRANSFER_USAGE)
def test_bench_text_transfer(tmp_path: Path) -> None:
    """The usage form, TF-IDF alone on the language set at 10 a class (no encoder runs), then merged into itself."""
    first = readme_command(
        TEXT_TRANSFER_USAGE,
        {"[--workdir DIR]": f"--workdir {tmp_path / 'bench'}", "[--json FILE]": f"--json {tmp_path / 'first.json'}"}
        | {"[--sizes 10,30,100] [--seeds 0,1] [--arms LIST]": "--sizes 10 --seeds 0 --arms tfidf"}
        | {"[--merge FILE]": "--datasets language"},
    )
    stdout = succeeded(run(first, REPO, timeout=SHORT_TIMEOUT_S))
    assert "| language | 10 |" in stdout
    rows = json.loads((tmp_path / "first.json").read_text())["rows"]
    assert [(row["dataset"], row["size"], row["arm"]) for row in rows] == [("language", 10, "tfidf")]
    assert 1 / 6 < rows[0]["test_accuracy"] <= 1  # six languages
    merged = readme_command(
        TEXT_TRANSFER_USAGE,
        {"[--workdir DIR]": f"--workdir {tmp_path / 'bench'}", "[--json FILE]": f"--json {tmp_path / 'merged.json'}"}
        | {"[--sizes 10,30,100] [--seeds 0,1] [--arms LIST]": "--arms none"}
        | {"[--merge FILE]": f"--merge {tmp_path / 'first.json'}"},
    )
    assert "| language | 10 |" in succeeded(run(merged, REPO, timeout=SHORT_TIMEOUT_S))
    assert json.loads((tmp_path / "merged.json").read_text())["rows"] == rows
