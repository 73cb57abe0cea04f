"""The source fingerprint that keys the cache: it changes exactly when a file does, an archive or a CSV stands for
its folder, and a missing or empty source is refused.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from images import solid_image_folder as _image_folder
from tlops.data.fingerprint import source_fingerprint
from tlops.errors import TlopsError


def test_the_fingerprint_changes_exactly_when_a_file_does(tmp_path: Path) -> None:
    data = _image_folder(tmp_path / "data", {"cat": 3, "dog": 3})
    first = source_fingerprint(str(data))
    assert first.startswith("6-") and source_fingerprint(str(data)) == first
    assert source_fingerprint(str(data) + "/") == first
    (data / ".DS_Store").write_bytes(b"junk")  # what an OS leaves behind is not data
    assert source_fingerprint(str(data)) == first

    added = data / "dog" / "new.png"
    added.write_bytes((data / "dog" / "0.png").read_bytes())
    assert source_fingerprint(str(data)) not in (first,)
    added.unlink()
    assert source_fingerprint(str(data)) == first  # removed again: the same files, the same fingerprint

    changed = data / "cat" / "1.png"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))  # rewritten in place
    assert source_fingerprint(str(data)) != first


def test_an_archive_or_a_csv_stands_for_its_folder(tmp_path: Path) -> None:
    data = _image_folder(tmp_path / "shared" / "images", {"a": 2, "b": 2})
    archive = tmp_path / "shared" / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(data, arcname="images")
    manifest = tmp_path / "shared" / "labels.csv"
    manifest.write_text("path,label\nimages/a/0.png,a\nimages/b/0.png,b\n")
    folder = source_fingerprint(str(tmp_path / "shared"))
    assert source_fingerprint(str(archive)) == folder == source_fingerprint(str(manifest))
    manifest.write_text("path,label\nimages/a/0.png,a\nimages/b/1.png,b\n")  # the manifest changed
    assert source_fingerprint(str(manifest)) != folder


@pytest.mark.parametrize(("make", "needle"), [("missing", "does not exist"), ("empty", "holds no files")])
def test_a_missing_or_empty_source_is_refused(tmp_path: Path, make: str, needle: str) -> None:
    source = tmp_path / make
    if make == "empty":
        source.mkdir()
    with pytest.raises(TlopsError, match=needle):
        source_fingerprint(str(source))
