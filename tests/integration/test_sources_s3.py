"""Dataset sources and layouts: archives (zip-slip safe), pre-split folders, CSV manifests, leakage, imbalance."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tlops.data.prepare import (
    SplitConfig,
    check_dataset,
    prepare_data,
)
from tlops.errors import TlopsError


def _png(seed: int, size: int = 8) -> bytes:
    """Bytes of a small random RGB PNG, distinct for each seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _write(root: Path, folders: dict[str, int], seed: int = 0) -> Path:
    """``folders[relative folder]`` distinct PNGs in each folder, named 000.png, 001.png, ..."""
    for folder, n in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / folder / f"{i:03d}.png").write_bytes(_png(seed))
            seed += 1
    return root


def _config(seed: int = 0) -> SplitConfig:
    return SplitConfig(seed=seed, workers=2)


def _one_line(error: pytest.ExceptionInfo[TlopsError], *needles: str) -> str:
    message = str(error.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


PRESPLIT = {"train/cat": 6, "train/dog": 5, "val/cat": 2, "val/dog": 2, "test/cat": 2, "test/dog": 3}


# --- archives: zip-slip and friends -----------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # a symlink, as Info-ZIP stores one
            archive.writestr(info, target)
    return path


def _tar(path: Path, members: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith((".tar.gz", ".tgz")) else "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            archive.addfile(info)
    return path


def _archive_folder(folder: Path, archive: Path, wrapper: str = "") -> Path:
    """Pack ``folder`` into a zip or tar.gz, under ``wrapper/`` when given."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    names = {f"{wrapper}/{p.relative_to(folder).as_posix()}".lstrip("/"): p.read_bytes() for p in files}
    return _zip(archive, names) if archive.suffix == ".zip" else _tar(archive, names)


@pytest.mark.integration
def test_archives_on_s3(s3_env: Any, s3_client: Any, bucket: str, tmp_path: Path) -> None:
    from tlops.io.storage import make_s3_client

    imagefolder = _write(tmp_path / "imagefolder", {"daisy": 4, "rose": 4})
    presplit = _write(tmp_path / "presplit", PRESPLIT)
    s3_client.upload_file(str(_archive_folder(imagefolder, tmp_path / "a.zip", "data")), bucket, "in/flowers.zip")
    s3_client.upload_file(str(_archive_folder(presplit, tmp_path / "b.tar.gz")), bucket, "in/pets.tar.gz")
    s3 = make_s3_client()

    flowers = prepare_data(f"s3://{bucket}/in/flowers.zip", tmp_path / "flowers", _config(), s3)
    pets = prepare_data(f"s3://{bucket}/in/pets.tar.gz", tmp_path / "pets", _config(), s3)

    assert flowers.digest == prepare_data(str(imagefolder), tmp_path / "flowers-local", _config()).digest
    assert pets.layout == "pre-split"
    assert pets.digest == prepare_data(str(presplit), tmp_path / "pets-local", _config()).digest
    assert len(check_dataset(f"s3://{bucket}/in/flowers.zip", s3=s3).files) == 8
    with pytest.raises(TlopsError, match="does not exist"):
        check_dataset(f"s3://{bucket}/in/missing.zip", s3=s3)


@pytest.mark.integration
@pytest.mark.parametrize("prefix", ["", "/datasets/x"])
def test_empty_bucket(s3_env: Any, bucket: str, tmp_path: Path, prefix: str) -> None:
    from tlops.io.storage import make_s3_client

    uri = f"s3://{bucket}{prefix}"
    with pytest.raises(TlopsError) as error:
        check_dataset(uri, s3=make_s3_client())
    _one_line(error, "no images found", repr(uri))
    with pytest.raises(TlopsError, match="no images found"):
        prepare_data(uri, tmp_path / "out", _config(), make_s3_client())
    assert not (tmp_path / "out").exists()


# --- pre-split folders ------------------------------------------------------------------------------------------


# --- CSV manifests ----------------------------------------------------------------------------------------------


# --- leakage: duplicates and label conflicts --------------------------------------------------------------------


# --- class imbalance --------------------------------------------------------------------------------------------


# --- minimum per split ------------------------------------------------------------------------------------------


# --- the tlops run preflight ------------------------------------------------------------------------------------
