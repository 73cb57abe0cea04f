"""Data for the bad-input tests: small images and folders of them, zips, and a tree whose file names lie."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd

from archives import make_zip
from images import image_bytes, write_images
from tlops.data.prepare import MANIFEST_FILE, REPORT_FILE

IMAGE_SIZE = 12


def image(seed: int, fmt: str = "PNG", size: int = IMAGE_SIZE) -> bytes:
    """Bytes of a small random RGB image in ``fmt``, distinct for each seed."""
    return image_bytes(seed, fmt, size)


def folder(root: Path, sizes: dict[str, int], seed: int = 0, fmt: str = "PNG", ext: str = ".png") -> Path:
    """``sizes[relative folder]`` distinct images in each folder."""
    return write_images(root, sizes, seed, fmt, ext, IMAGE_SIZE)


def deflated_zip(path: Path, members: dict[str, bytes]) -> Path:
    """A compressed zip of ``members`` (a run of zeros shrinks as a zip bomb's does)."""
    return make_zip(path, members, compression=zipfile.ZIP_DEFLATED)


def svg() -> bytes:
    """A tiny SVG document: text, not an image tlops reads."""
    return b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>\n'


def mislabelled_tree(root: Path) -> Path:
    """cats/dogs PNGs, a JPEG named .heic, an SVG, a class of SVGs only, junk; wrapped in ``images/``."""
    data = folder(root / "images", {"cats": 4, "dogs": 4})
    (data / "cats" / "photo.heic").write_bytes(image(50, "JPEG"))
    (data / "dogs" / "logo.svg").write_bytes(svg())
    (data / "dogs" / "notes.txt").write_text("good dogs\n")
    for junk in (".DS_Store", "Thumbs.db", "desktop.ini", ".hidden.png"):
        (data / "cats" / junk).write_bytes(b"\0junk")
    (data / "__MACOSX" / "cats").mkdir(parents=True)
    (data / "__MACOSX" / "cats" / "._000.png").write_bytes(b"\0junk")
    return root


def quarantined(out: Path) -> dict[str, str]:
    """``{path: reason}`` of each file the prepared data in ``out`` set aside."""
    summary = json.loads((out / "prepare_summary.json").read_text())
    return {q["path"]: q["reason"] for q in summary["quarantined"]}


def check_mislabelled(out: Path) -> None:
    """What :func:`mislabelled_tree` prepared into ``out`` must be: judged by content, nothing vanished unsaid."""
    manifest = pd.read_csv(out / MANIFEST_FILE, dtype=str)
    assert "cats/photo.heic" in set(manifest["relpath"])  # a JPEG, whatever its name says
    reasons = quarantined(out)
    assert set(reasons) == {"dogs/logo.svg", "dogs/notes.txt"}  # junk is skipped; nothing else vanishes
    assert reasons["dogs/logo.svg"].startswith("not an image (SVG)")
    assert reasons["dogs/notes.txt"].startswith("not an image (text)")
    report = (out / REPORT_FILE).read_text()
    assert "`dogs/logo.svg`" in report and "not an image (SVG)" in report
