"""Small images for tests: the bytes of one random image, folders of them, any tree of files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def image_bytes(seed: int, fmt: str = "PNG", size: int = 8) -> bytes:
    """Bytes of a ``size`` x ``size`` random RGB image in ``fmt``, distinct for each seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def write_images(
    root: Path,
    folders: dict[str, int],
    seed: int = 0,
    fmt: str = "PNG",
    ext: str = ".png",
    size: int = 8,
    digits: int = 3,
) -> Path:
    """``folders[relative folder]`` distinct images in each folder, named ``000.png``, ``001.png``, ...

    Args:
        root: The folder to write under (created as needed).
        folders: How many images each folder (relative to ``root``) gets.
        seed: The seed of the first image; each next image takes the next seed.
        fmt: The image format (a PIL format name).
        ext: The file extension, whatever the format.
        size: The side of each square image, in pixels.
        digits: The width of the zero-padded file number.

    Returns:
        ``root``.
    """
    for folder, n in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / folder / f"{i:0{digits}d}{ext}").write_bytes(image_bytes(seed, fmt, size))
            seed += 1
    return root


def write_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    """Each ``files[relative path]`` written under ``root`` (text as UTF-8); returns ``root``."""
    for relpath, content in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def solid_image_folder(root: Path, classes: dict[str, int]) -> Path:
    """``classes[name]`` 8 x 8 single-colour PNGs in each class folder (``0.png``, ``1.png``, ...), all distinct."""
    for index, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = np.full((8, 8, 3), (index * 60 + i * 7) % 256, np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root
