"""prepare-data: listing, decode-checking, quarantine, de-duplication, the stratified split, manifest and digest."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tlops.data.demo import DIGIT_NAMES, write_digits_imagefolder
from tlops.data.prepare import (
    MANIFEST_FILE,
    REPORT_FILE,
    SPLITS,
    SUMMARY_FILE,
    SplitConfig,
    assign_splits,
    check_class_sizes,
    dataset_digest,
    list_image_folder,
    load_prepared,
    prepare_data,
    split_counts,
)
from tlops.errors import TlopsError

MANIFEST_COLUMNS = ["uri", "relpath", "sha256", "label", "split", "width", "height"]


def _image_bytes(seed: int, fmt: str = "PNG", size: int = 16) -> bytes:
    """Bytes of a small random RGB image, distinct for each seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def _write_classes(root: Path, sizes: dict[str, int], fmt: str = "PNG", ext: str = ".png") -> Path:
    """An ImageFolder with ``sizes[label]`` distinct random images per class."""
    seed = 0
    for label, n in sizes.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / f"{i:03d}{ext}").write_bytes(_image_bytes(seed, fmt))
            seed += 1
    return root


def _config(seed: int = 0) -> SplitConfig:
    return SplitConfig(seed=seed, workers=2)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten classes of twelve real handwritten-digit PNGs (32x32)."""
    return write_digits_imagefolder(tmp_path_factory.mktemp("digits"), per_class=12)


@pytest.fixture(scope="module")
def prepared_digits(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, pd.DataFrame, Path]:
    out = tmp_path_factory.mktemp("prepared")
    result = prepare_data(str(digits), out, _config())
    manifest = pd.read_csv(out / MANIFEST_FILE, dtype={"label": str})
    return result, manifest, out


# --- manifest, summary and report -------------------------------------------------------------------------------


def test_manifest_columns_hashes_and_sizes(digits: Path, prepared_digits: tuple[Any, pd.DataFrame, Path]) -> None:
    result, manifest, _out = prepared_digits
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == 120
    assert result.classes == sorted(DIGIT_NAMES)
    assert result.quarantined == []
    assert result.duplicates_removed == 0
    for row in manifest.itertuples(index=False):
        path = Path(row.uri)
        assert path.is_absolute()
        assert path == (digits / row.relpath).resolve()
        assert row.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert row.label == row.relpath.split("/")[0]
        assert (row.width, row.height) == (32, 32)
    assert manifest["relpath"].is_unique


def test_summary_json_and_report(prepared_digits: tuple[Any, pd.DataFrame, Path]) -> None:
    result, manifest, out = prepared_digits
    summary = json.loads((out / SUMMARY_FILE).read_text())
    for key in ("digest", "classes", "counts", "quarantined", "duplicates_removed"):
        assert key in summary
    assert summary["digest"] == result.digest == dataset_digest(manifest)
    assert len(summary["digest"]) == 64
    assert summary["classes"] == result.classes
    assert set(summary["counts"]) == set(SPLITS)
    for split in SPLITS:
        expected = manifest[manifest["split"] == split]["label"].value_counts().to_dict()
        assert summary["counts"][split] == {label: expected.get(label, 0) for label in result.classes}
    assert summary["quarantined"] == []
    assert summary["duplicates_removed"] == 0

    report = (out / REPORT_FILE).read_text()
    assert result.digest in report
    for label in result.classes:
        counts = " | ".join(str(result.counts[s][label]) for s in SPLITS)
        assert f"| {label} | {counts} |" in report

    loaded_manifest, loaded = load_prepared(out)
    assert loaded == result
    pd.testing.assert_frame_equal(loaded_manifest, manifest)


# --- the split --------------------------------------------------------------------------------------------------


def test_split_is_stratified_and_disjoint(prepared_digits: tuple[Any, pd.DataFrame, Path]) -> None:
    result, manifest, _out = prepared_digits
    assert set(manifest["split"]) == set(SPLITS)
    assert not manifest["relpath"].duplicated().any()  # no file in two splits
    assert not manifest["sha256"].duplicated().any()
    for label in result.classes:
        per_split = manifest[manifest["label"] == label]["split"].value_counts().to_dict()
        assert per_split == split_counts(12, _config())
        assert all(per_split[split] >= 1 for split in SPLITS)


@pytest.mark.parametrize(
    ("val", "test"),
    [(0.15, 0.15), (0.1, 0.1), (0.3, 0.3), (0.4, 0.4), (0.45, 0.44), (0.1, 0.7), (0.05, 0.05)],
)
def test_split_counts_leave_every_split_nonempty(val: float, test: float) -> None:
    config = SplitConfig(val_fraction=val, test_fraction=test)
    for n in range(3, 60):
        sizes = split_counts(n, config)
        assert sum(sizes.values()) == n, (n, sizes)
        assert min(sizes.values()) >= 1, f"n={n} with val={val}, test={test} gives {sizes}"


def test_small_classes_split_one_each(tmp_path: Path) -> None:
    data = _write_classes(tmp_path / "data", {"a": 3, "b": 4, "c": 5})
    result = prepare_data(str(data), tmp_path / "out", SplitConfig(val_fraction=0.4, test_fraction=0.4, workers=2))
    for split in SPLITS:
        assert all(result.counts[split][label] >= 1 for label in ("a", "b", "c")), result.counts


def _rows(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest[["uri", "relpath", "sha256", "label"]].reset_index(drop=True)


def test_split_deterministic_for_seed_and_independent_of_order(
    prepared_digits: tuple[Any, pd.DataFrame, Path],
) -> None:
    _result, manifest, _out = prepared_digits
    rows = _rows(manifest)
    first = dict(zip(rows["relpath"], assign_splits(rows, _config(seed=7)), strict=True))
    again = dict(zip(rows["relpath"], assign_splits(rows, _config(seed=7)), strict=True))
    assert first == again

    for shuffle_seed in (1, 2):
        shuffled = rows.sample(frac=1.0, random_state=shuffle_seed)
        shuffled.index = np.random.default_rng(shuffle_seed).permutation(len(shuffled)) + 1000
        assert not shuffled["relpath"].equals(rows["relpath"])
        reordered = dict(zip(shuffled["relpath"], assign_splits(shuffled, _config(seed=7)), strict=True))
        assert reordered == first

    other = dict(zip(rows["relpath"], assign_splits(rows, _config(seed=8)), strict=True))
    assert other != first
    # Another seed still stratifies the same way.
    for label in rows["label"].unique():
        mine = [first[p] for p in rows[rows["label"] == label]["relpath"]]
        theirs = [other[p] for p in rows[rows["label"] == label]["relpath"]]
        assert sorted(mine) == sorted(theirs)


def test_prepare_is_deterministic_and_seed_sensitive(digits: Path, tmp_path: Path) -> None:
    # A copy whose files were created in reverse order, at another path: same relpaths, same content.
    copy = tmp_path / "copy"
    for source in sorted(digits.rglob("*.png"), reverse=True):
        target = copy / source.relative_to(digits)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)

    a = prepare_data(str(digits), tmp_path / "a", _config(seed=3))
    b = prepare_data(str(copy), tmp_path / "b", _config(seed=3))
    c = prepare_data(str(digits), tmp_path / "c", _config(seed=4))
    manifest_a = pd.read_csv(tmp_path / "a" / MANIFEST_FILE)
    manifest_b = pd.read_csv(tmp_path / "b" / MANIFEST_FILE)
    manifest_c = pd.read_csv(tmp_path / "c" / MANIFEST_FILE)

    assert a.digest == b.digest
    assert a.counts == b.counts
    assert manifest_a.drop(columns="uri").equals(manifest_b.drop(columns="uri"))
    assert c.digest != a.digest
    assert not manifest_a["split"].equals(manifest_c["split"])
    assert c.counts == a.counts  # a different seed picks other files, in the same stratified proportions


# --- the digest -------------------------------------------------------------------------------------------------


def test_dataset_digest_ignores_row_order_and_uri(prepared_digits: tuple[Any, pd.DataFrame, Path]) -> None:
    _result, manifest, _out = prepared_digits
    digest = dataset_digest(manifest)
    assert dataset_digest(manifest.sample(frac=1.0, random_state=0)) == digest
    moved = manifest.assign(uri="s3://elsewhere/" + manifest["relpath"])
    assert dataset_digest(moved) == digest
    relabelled = manifest.copy()
    relabelled.loc[relabelled.index[0], "split"] = "val" if relabelled["split"].iloc[0] != "val" else "test"
    assert dataset_digest(relabelled) != digest


def test_digest_stable_on_rerun_and_changes_with_one_byte(tmp_path: Path) -> None:
    data = _write_classes(tmp_path / "data", {"cat": 5, "dog": 5}, fmt="BMP", ext=".bmp")
    first = prepare_data(str(data), tmp_path / "out1", _config())
    rerun = prepare_data(str(data), tmp_path / "out2", _config())
    assert rerun.digest == first.digest
    assert (tmp_path / "out1" / MANIFEST_FILE).read_bytes() == (tmp_path / "out2" / MANIFEST_FILE).read_bytes()

    target = data / "dog" / "002.bmp"
    content = bytearray(target.read_bytes())
    content[-1] ^= 0xFF  # one byte of pixel data: still a valid image
    target.write_bytes(bytes(content))
    changed = prepare_data(str(data), tmp_path / "out3", _config())
    assert changed.quarantined == []
    assert changed.num_images == first.num_images
    assert changed.digest != first.digest


# --- quarantine, duplicates and what is listed ------------------------------------------------------------------


def test_broken_files_quarantined_and_the_rest_proceeds(tmp_path: Path) -> None:
    data = write_digits_imagefolder(tmp_path / "data", per_class=5)
    png = _image_bytes(100, "PNG", size=64)
    jpeg = _image_bytes(101, "JPEG", size=64)
    (data / "zero" / "truncated.png").write_bytes(png[: len(png) // 2])
    (data / "one" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (data / "two" / "notes.png").write_text("this is not an image\n")
    (data / "three" / "empty.png").write_bytes(b"")
    (data / "four" / "really-a-png.jpg").write_bytes(_image_bytes(102, "PNG"))

    result = prepare_data(str(data), tmp_path / "out", _config())

    reasons = {q["path"]: q["reason"] for q in result.quarantined}
    assert set(reasons) == {"zero/truncated.png", "one/truncated.jpg", "two/notes.png", "three/empty.png"}
    assert all(reason.strip() for reason in reasons.values())
    assert "truncated" in reasons["zero/truncated.png"]
    assert "truncated" in reasons["one/truncated.jpg"].lower()
    assert "empty" in reasons["three/empty.png"]
    assert "not an image" in reasons["two/notes.png"]

    manifest = pd.read_csv(tmp_path / "out" / MANIFEST_FILE, dtype={"label": str})
    assert not set(reasons) & set(manifest["relpath"])
    assert "four/really-a-png.jpg" in set(manifest["relpath"])
    assert len(manifest) == 10 * 5 + 1
    assert sum(result.num_images.values()) == 51
    assert sum(result.counts[s]["four"] for s in SPLITS) == 6

    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert {q["path"] for q in summary["quarantined"]} == set(reasons)
    assert all(set(q) == {"path", "reason"} for q in summary["quarantined"])
    report = (tmp_path / "out" / REPORT_FILE).read_text()
    assert "## Quarantined files" in report
    assert "`two/notes.png`" in report


def test_exact_duplicates_within_a_class_collapsed(tmp_path: Path) -> None:
    data = _write_classes(tmp_path / "data", {"a": 4, "b": 4})
    shutil.copyfile(data / "a" / "000.png", data / "a" / "copy-of-000.png")
    shutil.copyfile(data / "a" / "001.png", data / "a" / "zz-copy-of-001.png")
    (data / "b" / "sub").mkdir()
    shutil.copyfile(data / "b" / "002.png", data / "b" / "sub" / "dup.png")

    result = prepare_data(str(data), tmp_path / "out", _config())

    assert result.duplicates_removed == 3
    manifest = pd.read_csv(tmp_path / "out" / MANIFEST_FILE)
    assert len(manifest) == 8
    assert manifest["sha256"].is_unique
    assert {sum(result.counts[s][label] for s in SPLITS) for label in ("a", "b")} == {4}
    assert json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())["duplicates_removed"] == 3


def test_junk_skipped_root_files_and_non_images_quarantined(tmp_path: Path) -> None:
    data = _write_classes(tmp_path / "data", {"a": 3, "b": 3})
    (data / "root.png").write_bytes(_image_bytes(50))
    (data / "a" / ".hidden.png").write_bytes(_image_bytes(51))
    (data / "a" / ".DS_Store").write_bytes(b"\x00\x01")
    (data / "a" / "Thumbs.db").write_bytes(b"\x00\x01")
    (data / ".cache").mkdir()
    (data / ".cache" / "x.png").write_bytes(_image_bytes(52))
    (data / "b" / ".thumbs").mkdir()
    (data / "b" / ".thumbs" / "y.png").write_bytes(_image_bytes(53))
    (data / "b" / "readme.txt").write_text("labels")
    (data / "b" / "UPPER.PNG").write_bytes(_image_bytes(54))

    listed = list_image_folder(str(data))

    assert [f.relpath for f in listed] == ["a/000.png", "a/001.png", "a/002.png", "b/000.png", "b/001.png",
                                           "b/002.png", "b/UPPER.PNG", "b/readme.txt"]  # fmt: skip
    assert {f.label for f in listed} == {"a", "b"}
    result = prepare_data(str(data), tmp_path / "out", _config())
    assert result.classes == ["a", "b"]
    reasons = {q["path"]: q["reason"] for q in result.quarantined}
    assert set(reasons) == {"root.png", "b/readme.txt"}  # junk is skipped; every other file is used or quarantined
    assert "outside any class folder" in reasons["root.png"]
    assert reasons["b/readme.txt"].startswith("not an image (text)")
    assert sum(result.num_images.values()) == 7
    # Junk is not quarantined, but counted and listed with the reason: nothing vanishes without a word.
    skipped = {entry["path"]: entry for entry in result.skipped}
    assert set(skipped) == {".cache/", "a/.DS_Store", "a/.hidden.png", "a/Thumbs.db", "b/.thumbs/"}
    assert (
        skipped["a/.hidden.png"]["reason"].startswith("hidden file") and "rename" in skipped["a/.hidden.png"]["reason"]
    )
    assert skipped[".cache/"]["reason"].startswith("hidden folder") and skipped[".cache/"]["files"] == 1
    assert result.num_skipped == 5
    report = (tmp_path / "out" / REPORT_FILE).read_text()
    assert "- quarantined: 2" in report and "- skipped: 5 (hidden and system files, listed below)" in report
    assert "## Skipped files" in report and "| `a/.hidden.png` | 1 | hidden file" in report
    assert load_prepared(tmp_path / "out")[1].skipped == result.skipped


def test_junk_folders_are_counted_once_with_their_files(tmp_path: Path) -> None:
    import zipfile

    data = _write_classes(tmp_path / "data", {"a": 3, "b": 3})
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(data.rglob("*.png")):
            zipped.write(path, path.relative_to(data).as_posix())
        for name in ("__MACOSX/a/._000.png", "__MACOSX/a/._001.png", "__MACOSX/b/._000.png", ".git/HEAD"):
            zipped.writestr(name, b"\0junk")

    result = prepare_data(str(archive), tmp_path / "out", _config())

    assert result.skipped == [
        {"path": ".git/", "reason": "hidden folder: skipped (rename it to use its files)", "files": 1},
        {"path": "__MACOSX/", "reason": "macOS archive metadata folder: skipped", "files": 3},
    ]
    assert result.num_skipped == 4 and result.quarantined == []
    assert "- skipped: 4 " in (tmp_path / "out" / REPORT_FILE).read_text()


def test_symlinks_leaving_the_root_not_followed(tmp_path: Path) -> None:
    data = _write_classes(tmp_path / "data", {"a": 3, "b": 3})
    outside = _write_classes(tmp_path / "outside", {"secret": 3})
    os.symlink(outside / "secret" / "000.png", data / "a" / "link.png")
    os.symlink(outside / "secret", data / "c", target_is_directory=True)
    os.symlink(tmp_path / "missing.png", data / "b" / "dangling.png")

    listed = list_image_folder(str(data))

    relpaths = [f.relpath for f in listed]
    assert "a/link.png" not in relpaths
    assert not any(p.startswith("c/") for p in relpaths)
    assert "b/dangling.png" not in relpaths
    assert all(Path(f.uri).is_relative_to(data.resolve()) for f in listed)
    result = prepare_data(str(data), tmp_path / "out", _config())
    assert result.classes == ["a", "b"]
    assert sum(result.num_images.values()) == 6


# --- errors -----------------------------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(TlopsError, match="does not exist") as info:
        prepare_data(str(tmp_path / "nope"), tmp_path / "out", _config())
    assert "nope" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_path_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "image.png"
    file.write_bytes(_image_bytes(0))
    with pytest.raises(TlopsError, match="not a directory"):
        prepare_data(str(file), tmp_path / "out", _config())


@pytest.mark.parametrize("contents", ["nothing", "empty class folders", "no images"])
def test_empty_folder(tmp_path: Path, contents: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if contents == "empty class folders":
        (data / "a").mkdir()
        (data / "b").mkdir()
    elif contents == "no images":
        (data / "a").mkdir()
        (data / "a" / "notes.txt").write_text("x")
        (data / "root.png").write_bytes(_image_bytes(0))
    # Files are judged by content, so a lone folder holding a text file is a (single) class until it is read.
    expected = r"only one class \('a', 1 file\)" if contents == "no images" else "no images found"
    with pytest.raises(TlopsError, match=expected) as info:
        prepare_data(str(data), tmp_path / "out", _config())
    assert str(data) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_single_class(tmp_path: Path) -> None:
    data = _write_classes(tmp_path / "data", {"only": 6})
    with pytest.raises(TlopsError, match="only one class") as info:
        prepare_data(str(data), tmp_path / "out", _config())
    assert "'only'" in str(info.value)
    assert "two" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_class_too_small(tmp_path: Path) -> None:
    data = _write_classes(tmp_path / "data", {"big": 6, "tiny": 2, "ok": 3})
    with pytest.raises(TlopsError, match="too small") as info:
        prepare_data(str(data), tmp_path / "out", _config())
    message = str(info.value)
    assert "'tiny' has 2" in message
    assert "'big'" not in message and "'ok'" not in message
    assert "at least 3" in message
    assert "\n" not in message
    assert not (tmp_path / "out").exists()


def test_class_too_small_after_quarantine_and_dedup(tmp_path: Path) -> None:
    data = _write_classes(tmp_path / "data", {"a": 5, "b": 2, "c": 3})
    (data / "b" / "broken.png").write_bytes(b"not a png")
    shutil.copyfile(data / "c" / "000.png", data / "c" / "002.png")  # c: 3 files, 2 distinct

    with pytest.raises(TlopsError, match="too small") as info:
        prepare_data(str(data), tmp_path / "out", _config())
    assert "'b' has 2" in str(info.value)
    assert "'c' has 2" in str(info.value)


def test_class_with_no_decodable_image_is_named(tmp_path: Path) -> None:
    data = _write_classes(tmp_path / "data", {"a": 4, "b": 4})
    (data / "broken").mkdir()
    for i in range(3):
        (data / "broken" / f"{i}.jpg").write_bytes(b"")
    with pytest.raises(TlopsError, match="too small") as info:
        prepare_data(str(data), tmp_path / "out", _config())
    assert "'broken' has 0" in str(info.value)


def test_check_class_sizes_messages() -> None:
    config = _config()
    check_class_sizes({"a": 3, "b": 3}, config, "src")
    with pytest.raises(TlopsError, match="no images found in 'src'"):
        check_class_sizes({}, config, "src")
    with pytest.raises(TlopsError, match=r"only one class \('a'\)"):
        check_class_sizes({"a": 10}, config, "src")
    with pytest.raises(TlopsError, match="'a' has 1, 'c' has 0"):
        check_class_sizes({"c": 0, "b": 5, "a": 1}, config, "src")


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.15), (0.15, 1.0), (0.5, 0.4), (-0.1, 0.1)])
def test_split_config_rejects_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(TlopsError, match="fraction"):
        SplitConfig(val_fraction=val, test_fraction=test)


# --- S3 ---------------------------------------------------------------------------------------------------------


def test_s3_source_without_client(tmp_path: Path) -> None:
    with pytest.raises(TlopsError, match="no S3 client"):
        prepare_data("s3://bucket/data", tmp_path / "out", _config())
