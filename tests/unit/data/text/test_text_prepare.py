"""Text data preparation: layouts, encodings, quarantine, duplicates, splits, bad input, detection and the demo."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from tlops.data.config import SplitConfig
from tlops.data.prepare import load_prepared, read_manifest
from tlops.data.prepared import MANIFEST_FILE
from tlops.data.text.decoding import text_sha256
from tlops.data.text.demo import DEMO_LIBRARIES, write_text_demo
from tlops.data.text.detect import is_text_source, text_layout_kind
from tlops.data.text.prepare import prepare_text_data
from tlops.errors import TlopsError

CONFIG = SplitConfig(workers=2)


def _csv(path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...] = ("text", "label")) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def _rows(n: int = 4) -> list[tuple[str, str]]:
    return [(f"{label} example number {i}", label) for label in ("ham", "spam") for i in range(n)]


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for relpath, data in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(data)
    return root


def _bad(tmp_path: Path, source: Path | str, *needles: str, config: SplitConfig = CONFIG) -> None:
    out = tmp_path / "out"
    with pytest.raises(TlopsError) as raised:
        prepare_text_data(str(source), out, config)
    message = str(raised.value)
    assert "\n" not in message and all(needle in message for needle in needles), message
    assert not out.exists()


def test_csv_table_round_trips_texts_exactly(tmp_path: Path) -> None:
    tricky = 'He said "hi, there"\nthen left'
    rows = [*_rows(), (tricky, "ham"), ("NA", "spam"), ("  café\r\nnext  ", "ham")]
    prepared = prepare_text_data(str(_csv(tmp_path / "t.csv", rows)), tmp_path / "out", CONFIG)
    manifest, summary = load_prepared(tmp_path / "out")
    assert summary.task == "text-classification" and summary.layout == "text-table"
    assert list(manifest.columns) == ["uri", "relpath", "sha256", "label", "split", "text", "chars"]
    texts = set(manifest["text"])
    assert {tricky, "NA", "café\nnext"} <= texts  # NFC, CRLF -> LF, stripped; NA stays a string
    row = manifest[manifest["text"] == "NA"].iloc[0]
    assert row["sha256"] == text_sha256("NA") and row["chars"] == 2 and row["uri"].endswith("t.csv#row=10")
    assert prepared.details["columns"] == {"text": "text", "label": "label", "split": None}
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert (tmp_path / "out" / "report.md").read_text().count("## Text lengths") == 1


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".json", ".parquet"])
def test_other_table_formats_with_synonym_columns(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame({"Sentence": [t for t, _ in _rows()], "Category": [label for _, label in _rows()]})
    path = tmp_path / f"t{suffix}"
    if suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")) + "\n")
    prepared = prepare_text_data(str(path), tmp_path / "out", CONFIG)
    assert prepared.details["columns"] == {"text": "Sentence", "label": "Category", "split": None}
    assert sum(prepared.num_images.values()) == 8
    assert "text from `Sentence`, label from `Category`" in (tmp_path / "out" / "report.md").read_text()


def test_split_column_honoured_and_duplicates_never_straddle_splits(tmp_path: Path) -> None:
    rows = [(t, label, "train") for t, label in _rows()]
    rows += [("ham validation", "ham", "validation"), ("spam valid", "spam", "VALID")]
    rows += [("ham example number 0", "ham", "test"), ("spam test", "spam", "test")]  # a train text copied to test
    path = _csv(tmp_path / "t.csv", rows, ("text", "label", "split"))
    prepared = prepare_text_data(str(path), tmp_path / "out", CONFIG)
    manifest = read_manifest(tmp_path / "out")
    assert prepared.counts == {
        "train": {"ham": 3, "spam": 4},
        "val": {"ham": 1, "spam": 1},
        "test": {"ham": 1, "spam": 1},
    }
    assert manifest.loc[manifest["text"] == "ham example number 0", "split"].tolist() == ["test"]
    assert prepared.duplicates[0]["across_splits"] and prepared.duplicates_removed == 1


def test_quarantine_reasons_and_conflicts(tmp_path: Path) -> None:
    rows = [*_rows(), ("   ", "ham"), ("no label", ""), ("x" * 51, "ham"), ("both", "ham"), ("both", "spam")]
    prepare_text_data(str(_csv(tmp_path / "t.csv", rows)), tmp_path / "out", SplitConfig(max_text_chars=50))
    summary = load_prepared(tmp_path / "out")[1]
    reasons = {q["path"]: q["reason"] for q in summary.quarantined}
    assert reasons["t.csv#row=9"].startswith("empty text")
    assert reasons["t.csv#row=10"].startswith("empty label")
    assert reasons["t.csv#row=11"].startswith("too long: 51 characters, over max_text_chars 50")
    assert reasons["t.csv#row=12"] == reasons["t.csv#row=13"] == "same text labelled ham and spam"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| same text labelled ham and spam | 2 |" in report and "| too long | 1 |" in report


def test_folder_of_txt_files_each_encoding_recorded(tmp_path: Path) -> None:
    files = {f"ham/{i}.txt": f"ham number {i}".encode() for i in range(3)}
    files |= {f"spam/{i}.txt": f"spam number {i}".encode() for i in range(3)}
    files["ham/bom.txt"] = "\ufeffham with bom".encode("utf-8").replace(b"\xef\xbb\xbf\xef\xbb\xbf", b"\xef\xbb\xbf")
    files["ham/utf16.txt"] = "ham in utf-16 ünïcode".encode("utf-16")
    files["spam/latin1.txt"] = ("spam déjà vu, naïve café crème brûlée " * 3).encode("latin-1")
    files["spam/crlf.txt"] = b"spam line one\r\nline two\r\n"
    files["spam/binary.txt"] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    files["spam/notes.md"] = b"not a txt"
    _folder(tmp_path / "data", files)
    prepared = prepare_text_data(str(tmp_path / "data"), tmp_path / "out", CONFIG)
    manifest = read_manifest(tmp_path / "out")
    assert prepared.layout == "text-folder"
    encodings = prepared.details["encodings"]
    assert encodings["utf-8"] == 7 and encodings["utf-8-sig"] == 1 and encodings["utf-16"] == 1
    assert sum(encodings.values()) == 10  # the latin-1 file with charset-normalizer's name for it
    texts = set(manifest["text"])
    assert {"ham with bom", "ham in utf-16 ünïcode", "spam line one\nline two"} <= texts
    assert any(t.startswith("spam déjà vu, naïve café") for t in texts)
    reasons = {q["path"]: q["reason"] for q in prepared.quarantined}
    assert reasons["spam/binary.txt"].startswith("binary file") and reasons["spam/notes.md"].startswith("not a .txt")


def test_pre_split_folders_and_a_zip(tmp_path: Path) -> None:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for split, n in (("train", 2), ("test", 1)):
            for label in ("ham", "spam"):
                for i in range(n):
                    bundle.writestr(f"wrap/{split}/{label}/{i}.txt", f"{split} {label} {i}")
    assert text_layout_kind(str(archive)) == "text-pre-split"
    prepared = prepare_text_data(str(archive), tmp_path / "out", CONFIG)
    assert prepared.layout == "text-pre-split"
    assert prepared.counts["val"] == {"ham": 1, "spam": 1} and prepared.counts["test"] == {"ham": 1, "spam": 1}
    manifest, _ = load_prepared(tmp_path / "out")
    assert all(Path(uri).is_file() for uri in manifest["uri"])


def test_bad_input_one_line_and_nothing_written(tmp_path: Path) -> None:
    _bad(tmp_path, _csv(tmp_path / "a.csv", [("x", "y")], ("body", "label")), "no text column", "it has body, label")
    _bad(tmp_path, _csv(tmp_path / "b.csv", [(f"t{i}", "only") for i in range(5)]), "only one class ('only')")
    _bad(tmp_path, _csv(tmp_path / "c.csv", [(" ", "a"), ("t", "")]), "every one of the 2 texts", "quarantined")
    _bad(tmp_path, _csv(tmp_path / "d.csv", [(f"t{i}", "") for i in range(4)] + [("u", "b")]), "only one class")
    (tmp_path / "e.parquet").write_bytes(b"PAR1 not really")
    _bad(tmp_path, tmp_path / "e.parquet", "e.parquet is not a readable parquet file")
    _bad(
        tmp_path,
        _csv(
            tmp_path / "f.csv",
            [(t, label, "train") for t, label in _rows()] + [("z", "ham", "later")],
            ("text", "label", "split"),
        ),
        "row 9",
        "'later'",
    )
    _bad(tmp_path, tmp_path / "missing.jsonl", "does not exist")
    _bad(tmp_path, _folder(tmp_path / "imgs", {"a/1.png": b"x", "b/1.png": b"y"}), "no .txt files")


def test_a_huge_row_is_quarantined_not_slow(tmp_path: Path) -> None:
    rows = [*_rows(), ("y" * 5_000_000, "ham")]
    path = _csv(tmp_path / "t.csv", rows)
    prepared = prepare_text_data(str(path), tmp_path / "out", SplitConfig(max_text_chars=1000))
    [entry] = prepared.quarantined
    assert entry["reason"].startswith("too long: 5,000,000 characters")


def test_detection_is_cheap_and_says_no_to_images(tmp_path: Path) -> None:
    assert is_text_source(str(_csv(tmp_path / "t.csv", _rows())))
    assert not is_text_source(str(_csv(tmp_path / "m.csv", [("a.png", "x")], ("path", "label"))))
    assert text_layout_kind(str(_folder(tmp_path / "f", {"a/1.txt": b"x", "b/2.txt": b"y"}))) == "text-folder"
    assert not is_text_source(str(_folder(tmp_path / "g", {"a/1.txt": b"x", "b/2.png": b"y"})))
    assert not is_text_source(str(tmp_path / "nothing"))


def test_demo_is_deterministic_with_every_library(tmp_path: Path) -> None:
    first = write_text_demo(tmp_path / "one", per_class=3)
    second = write_text_demo(tmp_path / "two", per_class=3)
    assert first.read_bytes() == second.read_bytes()
    frame = pd.read_csv(first, keep_default_na=False)
    assert list(frame.columns) == ["text", "label"] and frame["text"].is_unique
    assert frame["label"].value_counts().to_dict() == dict.fromkeys(DEMO_LIBRARIES, 3)
    prepared = prepare_text_data(str(first), tmp_path / "out", CONFIG)
    assert sorted(prepared.classes) == sorted(DEMO_LIBRARIES) and (tmp_path / "out" / MANIFEST_FILE).is_file()
