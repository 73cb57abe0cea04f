"""Dataset sources and layouts: archives (zip-slip safe), pre-split folders, CSV manifests, leakage, imbalance."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from archives import archive_folder as _archive_folder
from archives import make_tar as _tar
from archives import make_zip as _zip
from images import image_bytes as _png
from images import write_images as _write
from refusals import one_line as _one_line
from splits import PRESPLIT
from splits import split_config as _config
from tlops.cli import main
from tlops.data.archives import extract_archive
from tlops.data.prepare import (
    MANIFEST_FILE,
    REPORT_FILE,
    SPLITS,
    SUMMARY_FILE,
    check_dataset,
    load_prepared,
    prepare_data,
    split_counts,
)
from tlops.errors import TlopsError


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / MANIFEST_FILE, dtype={"label": str})


# --- archives: zip-slip and friends -----------------------------------------------------------------------------


GOOD_MEMBERS = {f"{label}/{i}.png": _png(10 * ord(label) + i) for label in "ab" for i in range(3)}


@pytest.mark.parametrize(
    ("name", "build", "member", "why"),
    [
        ("slip.zip", lambda p: _zip(p, GOOD_MEMBERS | {"../../etc/passwd": b"x"}), "../../etc/passwd", "'..'"),
        ("abs.zip", lambda p: _zip(p, GOOD_MEMBERS | {"/tmp/evil.png": b"x"}), "/tmp/evil.png", "absolute path"),
        ("link.zip", lambda p: _zip(p, GOOD_MEMBERS, {"a/etc": "/etc"}), "a/etc", "'/etc'"),
        ("abs.tar", lambda p: _tar(p, GOOD_MEMBERS | {"/etc/cron.d/x.png": b"x"}), "/etc/cron.d/x.png", "absolute"),
        ("dots.tgz", lambda p: _tar(p, GOOD_MEMBERS | {"a/../../x.png": b"x"}), "a/../../x.png", "'..'"),
        ("symlink.tar", lambda p: _tar(p, GOOD_MEMBERS, {"a/etc": (tarfile.SYMTYPE, "/etc")}), "a/etc", "'/etc'"),
        (
            "uplink.tar.gz",
            lambda p: _tar(p, GOOD_MEMBERS, {"a/up": (tarfile.SYMTYPE, "../../..")}),
            "a/up",
            "outside the extraction folder",
        ),
        (
            "hardlink.tar",
            lambda p: _tar(p, GOOD_MEMBERS, {"a/h.png": (tarfile.LNKTYPE, "../etc/passwd")}),
            "a/h.png",
            "outside the extraction folder",
        ),
    ],
)
def test_unsafe_archive_rejected_and_nothing_extracted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, build: Any, member: str, why: str
) -> None:
    archive = build(tmp_path / name)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where check_dataset's temporary extraction goes

    with pytest.raises(TlopsError) as error:
        prepare_data(str(archive), tmp_path / "out", _config())
    _one_line(error, f"unsafe member {member!r}", name, why, "zip-slip")
    assert not (tmp_path / "out").exists()

    with pytest.raises(TlopsError, match="unsafe member"):
        check_dataset(str(archive))
    assert list(scratch.iterdir()) == []

    with pytest.raises(TlopsError, match="unsafe member"):
        extract_archive(archive, tmp_path / "into" / "files")
    assert list((tmp_path / "into").iterdir()) == []  # no partial folder left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "scratch", "into"])


@pytest.mark.parametrize("name", ["data.zip", "data.tar"])
def test_unreadable_archive(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"this is not an archive at all" * 40)
    with pytest.raises(TlopsError, match=f"{name} is not a readable"):
        prepare_data(str(tmp_path / name), tmp_path / "out", _config())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("name", "wrapper"), [("flowers.zip", "flowers"), ("flowers.tar.gz", ""), ("f.tgz", "a/b")])
def test_valid_archive_of_an_imagefolder(tmp_path: Path, name: str, wrapper: str) -> None:
    folder = _write(tmp_path / "folder", {"daisy": 5, "rose": 4})
    archive = _archive_folder(folder, tmp_path / name, wrapper)

    from_folder = prepare_data(str(folder), tmp_path / "from-folder", _config())
    out = tmp_path / "out"
    result = prepare_data(str(archive), out, _config())

    assert result.layout == "image-folder"
    assert result.digest == from_folder.digest  # same files, labels and split as the unpacked folder
    manifest = _manifest(out)
    assert (manifest["uri"].str.startswith("files/")).all()  # relative: the files travel with the output
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial extraction left
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    loaded, prepared = load_prepared(moved)
    assert prepared.digest == result.digest
    for row in loaded.itertuples():
        assert Path(row.uri).is_relative_to(moved)
        assert Path(row.uri).read_bytes() == (folder / row.relpath).read_bytes()

    assert len(check_dataset(str(archive)).files) == 9


# --- pre-split folders ------------------------------------------------------------------------------------------


def test_presplit_layout_kept_exactly(tmp_path: Path) -> None:
    data = _write(tmp_path / "data", PRESPLIT)
    (data / "train" / "loose.png").write_bytes(_png(999))  # a file directly under a split folder: not listed

    result = prepare_data(str(data), tmp_path / "out", _config())
    other_seed = prepare_data(str(data), tmp_path / "out2", _config(seed=5))

    assert result.layout == "pre-split"
    assert result.classes == ["cat", "dog"]
    manifest = _manifest(tmp_path / "out")
    assert len(manifest) == sum(PRESPLIT.values())
    assert (manifest["split"] == manifest["relpath"].str.split("/").str[0]).all()
    assert (manifest["label"] == manifest["relpath"].str.split("/").str[1]).all()
    assert result.counts == {s: {c: PRESPLIT[f"{s}/{c}"] for c in ("cat", "dog")} for s in SPLITS}
    assert other_seed.digest == result.digest  # given splits do not depend on the seed
    assert len(check_dataset(str(data)).files) == sum(PRESPLIT.values())


def test_presplit_without_val_carves_it_from_train(tmp_path: Path) -> None:
    data = _write(tmp_path / "data", {"train/cat": 14, "train/dog": 7, "test/cat": 2, "test/dog": 2})

    first = prepare_data(str(data), tmp_path / "a", _config(seed=1))
    again = prepare_data(str(data), tmp_path / "b", _config(seed=1))
    a, b = _manifest(tmp_path / "a"), _manifest(tmp_path / "b")

    assert first.layout == "pre-split"
    assert again.digest == first.digest
    assert a.equals(b)
    expected = {c: max(1, round(n * 0.15)) for c, n in (("cat", 14), ("dog", 7))}
    assert first.counts["val"] == expected == {"cat": 2, "dog": 1}
    assert first.counts["train"] == {"cat": 12, "dog": 6}
    assert first.counts["test"] == {"cat": 2, "dog": 2}
    assert a[a["split"] == "val"]["relpath"].str.startswith("train/").all()
    assert (a[a["relpath"].str.startswith("test/")]["split"] == "test").all()
    # Another seed carves other images, in the same numbers.
    picked = {seed: set(_carved(data, tmp_path / f"seed{seed}", seed)) for seed in (2, 3, 4)}
    assert len({frozenset(v) for v in picked.values()} | {frozenset(a[a["split"] == "val"]["relpath"])}) > 1


def _carved(data: Path, out: Path, seed: int) -> list[str]:
    prepare_data(str(data), out, _config(seed=seed))
    manifest = _manifest(out)
    return list(manifest[manifest["split"] == "val"]["relpath"])


@pytest.mark.parametrize(
    ("folders", "needles"),
    [
        ({"train/cat": 3, "test/cat": 1, "dog": 3}, ["mixes split folders (train/, test/)", "(dog)"]),
        ({"train/cat": 3, "train/dog": 3, "val/cat": 1, "val/dog": 1}, ["has train/, val/ but no test/"]),
        ({"test/cat": 3, "test/dog": 3}, ["no train/"]),
    ],
)
def test_presplit_layout_errors(tmp_path: Path, folders: dict[str, int], needles: list[str]) -> None:
    data = _write(tmp_path / "data", folders)
    with pytest.raises(TlopsError) as error:
        check_dataset(str(data))
    _one_line(error, *needles)


# --- CSV manifests ----------------------------------------------------------------------------------------------


def test_csv_manifest_with_split_column(tmp_path: Path) -> None:
    data = _write(tmp_path / "data", {"images": 9})
    rows = [
        ("images/000.png", "7", "train"),
        ("images/001.png", "7", "train"),
        ("./images/002.png", "7", "val"),
        ("images/003.png", "7", "test"),
        ("images/004.png", "10", "train"),
        ("images/005.png", "10", "val"),
        ("images/006.png", "10", "test"),
        ("images/007.png", "10", "TEST "),
    ]
    csv = data / "my-labels.csv"
    csv.write_text("path,label,split\n" + "".join(",".join(row) + "\n" for row in rows))

    result = prepare_data(str(csv), tmp_path / "out", _config())

    assert result.layout == "csv-manifest"
    assert result.classes == ["10", "7"]  # labels are strings, sorted
    manifest = _manifest(tmp_path / "out")
    given = {path.removeprefix("./"): (label, split.strip().lower()) for path, label, split in rows}
    assert {r.relpath: (r.label, r.split) for r in manifest.itertuples()} == given
    assert all(
        Path(uri) == (data / rel).resolve() for uri, rel in zip(manifest["uri"], manifest["relpath"], strict=True)
    )
    assert result.counts == {"train": {"10": 1, "7": 2}, "val": {"10": 1, "7": 1}, "test": {"10": 2, "7": 1}}


@pytest.mark.parametrize("csv_name", ["manifest.csv", "labels.csv"])
def test_csv_manifest_at_the_root_without_split(tmp_path: Path, csv_name: str) -> None:
    # Folders named like classes, but the CSV at the root decides the labels.
    data = _write(tmp_path / "data", {"x": 6, "y": 5})
    listed = [f"x/{i:03d}.png,red" for i in range(6)] + [f"y/{i:03d}.png,blue" for i in range(5)]
    (data / csv_name).write_text("path,label\n" + "\n".join(listed) + "\n")

    result = prepare_data(str(data), tmp_path / "out", _config())

    assert result.layout == "csv-manifest"
    assert result.classes == ["blue", "red"]
    assert {s: result.counts[s]["red"] for s in SPLITS} == split_counts(6, _config())
    assert {s: result.counts[s]["blue"] for s in SPLITS} == split_counts(5, _config())
    assert check_dataset(str(data)).kind == "csv-manifest"


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("file,label\na/0.png,a\n", ["no path column", "path,label[,split]"]),
        ("path,label,split\nimg/000.png,a,dev\n", ["row 1", "split 'dev'"]),
        ("path,label\nimg/000.png,a\n../outside.png,b\n", ["row 2", "'../outside.png'", "leaves the CSV's folder"]),
        ("path,label\n/etc/passwd,a\n", ["row 1", "'/etc/passwd'"]),
        ("path,label\nimg/000.png,\n", ["row 1", "empty label"]),
        ("path,label,split\nimg/000.png,a,train\nimg/001.png,b,val\n", ["no test rows"]),
        ("", ["manifest.csv is empty"]),
    ],
)
def test_csv_manifest_errors(tmp_path: Path, content: str, needles: list[str]) -> None:
    data = _write(tmp_path / "data", {"img": 2})
    (data / "manifest.csv").write_text(content)
    with pytest.raises(TlopsError) as error:
        prepare_data(str(data), tmp_path / "out", _config())
    _one_line(error, *needles)
    assert not (tmp_path / "out").exists()


def test_csv_missing_file_quarantined(tmp_path: Path) -> None:
    data = _write(tmp_path / "data", {"img": 8})
    rows = [f"img/{i:03d}.png,{'ab'[i % 2]}" for i in range(8)] + ["img/missing.png,a"]
    (data / "manifest.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    result = prepare_data(str(data), tmp_path / "out", _config())
    assert [q["path"] for q in result.quarantined] == ["img/missing.png"]
    assert "No such file" in result.quarantined[0]["reason"]
    assert sum(result.num_images.values()) == 8


# --- leakage: duplicates and label conflicts --------------------------------------------------------------------


def test_identical_image_across_splits_kept_in_test_only(tmp_path: Path) -> None:
    data = _write(tmp_path / "data", PRESPLIT)
    shutil.copyfile(data / "test/cat/000.png", data / "train/cat/copy-of-test.png")
    shutil.copyfile(data / "test/dog/001.png", data / "val/dog/copy-of-test.png")
    shutil.copyfile(data / "train/dog/002.png", data / "train/dog/again.png")  # within one split

    result = prepare_data(str(data), tmp_path / "out", _config())

    manifest = _manifest(tmp_path / "out")
    assert manifest["sha256"].is_unique
    assert not {"train/cat/copy-of-test.png", "val/dog/copy-of-test.png", "train/dog/again.png"} & set(
        manifest["relpath"]
    )
    assert result.counts["train"] == {"cat": 6, "dog": 5}
    assert result.counts["val"] == {"cat": 2, "dog": 2}
    assert result.duplicates_removed == 3
    by_kept = {d["kept"]: d for d in result.duplicates}
    assert by_kept["test/cat/000.png"]["removed"] == ["train/cat/copy-of-test.png"]
    assert by_kept["test/cat/000.png"]["across_splits"] is True
    assert by_kept["test/dog/001.png"]["removed"] == ["val/dog/copy-of-test.png"]
    assert (
        by_kept["train/dog/002.png"] | {"removed": ["train/dog/again.png"], "across_splits": False}
        == by_kept["train/dog/002.png"]
    )
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert summary["duplicates_removed"] == 3
    assert {d["kept"] for d in summary["duplicates"]} == set(by_kept)
    assert all(set(d) >= {"sha256", "kept", "removed"} for d in summary["duplicates"])
    report = (tmp_path / "out" / REPORT_FILE).read_text()
    assert "## Duplicates" in report
    assert "`train/cat/copy-of-test.png`" in report


def test_same_image_under_two_labels_quarantined(tmp_path: Path) -> None:
    data = _write(tmp_path / "data", {"a": 4, "b": 4, "c": 4})
    shutil.copyfile(data / "a/000.png", data / "b/looks-like-b.png")
    shutil.copyfile(data / "a/000.png", data / "a/again.png")

    result = prepare_data(str(data), tmp_path / "out", _config())

    reason = "same image labelled a and b"
    assert result.quarantined == [
        {"path": "a/000.png", "reason": reason},
        {"path": "a/again.png", "reason": reason},
        {"path": "b/looks-like-b.png", "reason": reason},
    ]
    manifest = _manifest(tmp_path / "out")
    assert not {q["path"] for q in result.quarantined} & set(manifest["relpath"])
    assert {label: sum(result.counts[s][label] for s in SPLITS) for label in "abc"} == {"a": 3, "b": 4, "c": 4}
    assert reason in (tmp_path / "out" / REPORT_FILE).read_text()


# --- class imbalance --------------------------------------------------------------------------------------------


def test_class_weights_and_imbalance_in_report(tmp_path: Path) -> None:
    folders = {"train/a": 12, "train/b": 3, "train/c": 3} | {f"{s}/{c}": 1 for s in ("val", "test") for c in "abc"}
    data = _write(tmp_path / "data", folders)

    result = prepare_data(str(data), tmp_path / "out", _config())

    assert result.imbalance == {"ratio": 4.0, "class_weights": {"a": 0.5, "b": 2.0, "c": 2.0}}  # 18 / (3 * n)
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert summary["imbalance"] == result.imbalance
    report = (tmp_path / "out" / REPORT_FILE).read_text()
    assert "**Imbalanced:** `a` has 12 training images, `b` 3 (4.0x" in report
    assert "| b | 3 | 2.0000 |" in report

    balanced = prepare_data(str(_write(tmp_path / "balanced", PRESPLIT)), tmp_path / "out2", _config())
    assert balanced.imbalance["ratio"] == 1.2
    assert balanced.imbalance["class_weights"] == {"cat": round(11 / 12, 6), "dog": 1.1}
    assert "Imbalanced" not in (tmp_path / "out2" / REPORT_FILE).read_text()


# --- minimum per split ------------------------------------------------------------------------------------------


def test_class_short_in_one_split(tmp_path: Path) -> None:
    data = _write(tmp_path / "data", PRESPLIT | {"train/owl": 3, "test/owl": 1})

    with pytest.raises(TlopsError) as error:
        prepare_data(str(data), tmp_path / "out", _config())
    message = _one_line(error, "short of images", "'owl' has train 3, val 0, test 1", "add images or remove")
    assert "'cat'" not in message and "'dog'" not in message
    assert not (tmp_path / "out").exists()
    with pytest.raises(TlopsError, match="'owl' has train 3, val 0, test 1"):
        check_dataset(str(data))


def test_class_short_when_val_is_carved(tmp_path: Path) -> None:
    data = _write(tmp_path / "data", {"train/cat": 5, "train/dog": 1, "test/cat": 1, "test/dog": 1})
    with pytest.raises(TlopsError) as error:
        check_dataset(str(data))
    _one_line(error, "'dog' has train 1, test 1", "carved out for val")


def test_class_short_after_deduplication(tmp_path: Path) -> None:
    data = _write(tmp_path / "data", PRESPLIT | {"val/dog": 1})
    shutil.copyfile(data / "test/dog/000.png", data / "val/dog/000.png")  # val's only dog is a test image
    check_dataset(str(data))  # the listing alone looks fine
    with pytest.raises(TlopsError) as error:
        prepare_data(str(data), tmp_path / "out", _config())
    _one_line(error, "'dog' has train 5, val 0, test 3", "distinct")


# --- the tlops run preflight ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["short-split", "zip-slip"])
def test_run_preflight_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    if case == "short-split":
        data, needle = _write(tmp_path / "data", PRESPLIT | {"train/owl": 3, "test/owl": 1}), "'owl' has train 3"
    else:
        data, needle = _zip(tmp_path / "data.zip", GOOD_MEMBERS | {"../../etc/passwd": b"x"}), "'../../etc/passwd'"
    output = tmp_path / "out"

    status = main(["run", "--data", str(data), "--output", str(output), "--tracking-uri", "sqlite:///x.db"])

    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tlops: error: ") and needle in lines[0], lines
    assert not output.exists()


# --- archives inside archives -----------------------------------------------------------------------------------


def _inner_zip(path: Path) -> Path:
    """A valid ImageFolder zip (two classes of three PNGs)."""
    with zipfile.ZipFile(path, "w") as zipped:
        for i in range(6):
            zipped.writestr(f"{('cat', 'dog')[i % 2]}/{i}.png", _png(i))
    return path


def test_a_zip_inside_a_zip_is_named(tmp_path: Path) -> None:
    inner = _inner_zip(tmp_path / "inner.zip")
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as zipped:
        zipped.write(inner, "inner.zip")
        zipped.writestr("__MACOSX/._inner.zip", b"junk")

    with pytest.raises(TlopsError) as error:
        check_dataset(str(outer))

    _one_line(error, "found only the archive inner.zip inside outer.zip", "extract outer.zip", "directly")
    assert "no images found" not in str(error.value)
    assert len(check_dataset(str(inner)).files) == 6  # given directly, it is read


def test_a_folder_holding_only_archives_names_them(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    _inner_zip(folder / "train.zip")
    _inner_zip(folder / "test.zip")

    with pytest.raises(TlopsError) as error:
        check_dataset(str(folder))

    _one_line(error, "found only 2 archives (test.zip, train.zip)", f"--data {folder}/test.zip")
