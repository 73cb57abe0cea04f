"""Bad input found by a new user (issue 6), the cases the data functions meet: files judged by content, archive
limits, wrapper folders, CSV rows. Each is a one-line ``TlopsError`` or works as documented, and nothing is left
half-written.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bad_input import check_mislabelled as _check_mislabelled
from bad_input import deflated_zip as _zip
from bad_input import folder as _folder
from bad_input import image as _image
from bad_input import mislabelled_tree as _mislabelled_tree
from bad_input import svg as _svg
from splits import split_config as _config
from tlops.data.archives import ArchiveLimits, extract_archive
from tlops.data.prepare import MANIFEST_FILE, REPORT_FILE, prepare_data
from tlops.errors import TlopsError

URL_REASON = "http(s) URLs are not supported: download the images or use s3://"


# --- 4. files are judged by content, not by extension ---------------------------------------------------------


def test_files_judged_by_content_in_a_folder_and_an_archive(tmp_path: Path) -> None:
    root = _mislabelled_tree(tmp_path / "tree")
    folder = prepare_data(str(root), tmp_path / "from-folder", _config())
    _check_mislabelled(tmp_path / "from-folder")

    members = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    archived = prepare_data(str(_zip(tmp_path / "tree.zip", members)), tmp_path / "from-zip", _config())
    _check_mislabelled(tmp_path / "from-zip")
    assert archived.digest == folder.digest  # the same dataset, wrapper stripped alike

    (root / "images" / "cats" / "photo.heic").unlink()
    assert prepare_data(str(root), tmp_path / "without", _config()).digest != folder.digest


def test_a_class_of_unreadable_files_does_not_vanish(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data", {"cats": 4, "dogs": 4})
    (data / "vectors").mkdir()
    for i in range(3):
        (data / "vectors" / f"{i}.svg").write_bytes(_svg())
    with pytest.raises(TlopsError) as error:
        prepare_data(str(data), tmp_path / "out", _config())
    assert "'vectors' has 0 (3 quarantined" in str(error.value) and "not an image (SVG)" in str(error.value)
    assert not (tmp_path / "out").exists()


# --- 6. archive limits ----------------------------------------------------------------------------------------


def _tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


ZEROS = b"\0" * (8 * 2**20)
IMAGES = {f"{c}/{i}.png": _image(10 * ord(c) + i) for c in "ab" for i in range(3)}


@pytest.mark.parametrize(
    ("build", "limits", "needles"),
    [
        (lambda p: _zip(p / "a.zip", IMAGES | {"a/z.png": ZEROS}), ArchiveLimits(), ["'a/z.png'", "limit of 100x"]),
        (lambda p: _tar_gz(p / "a.tar.gz", IMAGES | {"a/z.png": ZEROS}), ArchiveLimits(), ["limit of 100x"]),
        (lambda p: _zip(p / "a.zip", IMAGES), ArchiveLimits(max_total_bytes=100), ["more than 100 bytes"]),
        (lambda p: _tar_gz(p / "a.tar.gz", IMAGES), ArchiveLimits(max_total_bytes=100), ["more than 100 bytes"]),
        (lambda p: _zip(p / "a.zip", IMAGES), ArchiveLimits(max_members=5), ["more than 5 members"]),
        (lambda p: _tar_gz(p / "a.tar.gz", IMAGES), ArchiveLimits(max_members=5), ["TLOPS_ARCHIVE_MAX_MEMBERS"]),
    ],
)
def test_archive_limits(tmp_path: Path, build: Any, limits: ArchiveLimits, needles: list[str]) -> None:
    archive = build(tmp_path)
    with pytest.raises(TlopsError) as error:
        extract_archive(archive, tmp_path / "into" / "files", limits)
    for needle in [*needles, "likely archive bomb", "nothing was kept"]:
        assert needle in str(error.value)
    assert list((tmp_path / "into").iterdir()) == []


def test_prepare_data_refuses_a_bomb_and_an_output_inside_the_data(tmp_path: Path) -> None:
    # The same checks as the CLI cases of tlops run (run-bomb-total, run-output-in-data), for prepare_data.
    bomb = _zip(tmp_path / "bomb.zip", IMAGES | {"a/zeros.png": ZEROS})
    with pytest.raises(TlopsError, match=r"bomb\.zip member 'a/zeros\.png' expands .* over the limit of 100x"):
        prepare_data(str(bomb), tmp_path / "out", _config())
    assert not (tmp_path / "out").exists()
    data = _folder(tmp_path / "data", {"cats": 4, "dogs": 4})
    for output in (data, data / "prepared", data / "cats" / "prepared"):
        with pytest.raises(TlopsError, match="the dataset folder"):
            prepare_data(str(data), output, _config())
    with pytest.raises(TlopsError, match="is inside --output"):
        prepare_data(str(data), tmp_path, _config())
    assert sorted(p.name for p in data.rglob("*") if p.is_dir()) == ["cats", "dogs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip", "data"]


def test_archive_limits_from_the_environment(tmp_path: Path) -> None:
    assert ArchiveLimits.from_environment({}) == ArchiveLimits()
    assert ArchiveLimits().max_total_bytes == 20 * 2**30 and ArchiveLimits().max_ratio == 100
    limits = ArchiveLimits.from_environment(
        {"TLOPS_ARCHIVE_MAX_BYTES": "1000", "TLOPS_ARCHIVE_MAX_RATIO": "2.5", "TLOPS_ARCHIVE_MAX_MEMBERS": "7"}
    )
    assert (limits.max_total_bytes, limits.max_ratio, limits.max_members) == (1000, 2.5, 7)
    with pytest.raises(TlopsError, match="TLOPS_ARCHIVE_MAX_RATIO='-1' is not a positive number"):
        ArchiveLimits.from_environment({"TLOPS_ARCHIVE_MAX_RATIO": "-1"})
    # A genuine, highly compressible archive goes through once its limit is raised.
    archive = _zip(tmp_path / "a.zip", IMAGES | {"a/z.png": ZEROS})
    extract_archive(archive, tmp_path / "files", ArchiveLimits(max_ratio=1e6))
    assert (tmp_path / "files" / "a" / "z.png").stat().st_size == len(ZEROS)


def test_archive_whose_headers_lie_is_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"a/z.png": b"\0" * 3000} | IMAGES)
    data = bytearray(archive.read_bytes())
    central = data.index(b"PK\x01\x02")  # the first central directory entry: a/z.png
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")  # declares 10 bytes instead of 3000
    archive.write_bytes(bytes(data))
    with pytest.raises(TlopsError, match=r"a\.zip is not a readable zip archive"):
        prepare_data(str(archive), tmp_path / "out", _config())
    assert not (tmp_path / "out").exists()


# --- 8. wrapper folders stripped alike for folders, archives and S3 ---------------------------------------------


def test_wrapped_folder_behaves_like_the_wrapped_archive(tmp_path: Path) -> None:
    root = _folder(tmp_path / "root" / "images", {"cats": 4, "dogs": 4}).parent
    members = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    from_folder = prepare_data(str(root), tmp_path / "a", _config())
    from_zip = prepare_data(str(_zip(tmp_path / "root.zip", members)), tmp_path / "b", _config())
    assert from_folder.classes == from_zip.classes == ["cats", "dogs"]
    assert from_folder.digest == from_zip.digest


# --- 9. CSV rows: absolute paths inside the CSV's folder, http(s) URLs ----------------------------------------------


def test_csv_absolute_paths_inside_its_folder_and_urls(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data", {"img": 6})
    rows = [f"{(data / 'img' / f'{i:03d}.png').resolve()},{'ab'[i % 2]}" for i in range(3)]
    rows += [f"img/{i:03d}.png,{'ab'[i % 2]}" for i in range(3, 6)]
    rows += ["https://example.com/cat.jpg,a", "HTTP://example.com/dog.jpg,b"]
    (data / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")

    result = prepare_data(str(data / "labels.csv"), tmp_path / "out", _config())

    assert sorted(pd.read_csv(tmp_path / "out" / MANIFEST_FILE)["relpath"]) == [f"img/{i:03d}.png" for i in range(6)]
    assert {q["path"]: q["reason"] for q in result.quarantined} == {
        "https://example.com/cat.jpg": URL_REASON,
        "HTTP://example.com/dog.jpg": URL_REASON,
    }
    assert URL_REASON in (tmp_path / "out" / REPORT_FILE).read_text()

    (data / "labels.csv").write_text(f"path,label\n{tmp_path / 'elsewhere.png'},a\n")
    with pytest.raises(TlopsError, match="leaves the CSV's folder"):
        prepare_data(str(data / "labels.csv"), tmp_path / "out2", _config())
