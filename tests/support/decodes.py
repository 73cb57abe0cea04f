"""Counting decodes: a small three-class ImageFolder and how many images a call decoded.

Counts come from :func:`tlops.data.images.decode_count` (every ``decode_image`` call in this process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from images import image_bytes, write_images
from tlops.data.images import decode_count

CLASSES = {"cat": 4, "dog": 4, "eel": 4}

IMAGES = sum(CLASSES.values())

IMAGE_SIZE = 16


def png16(seed: int, size: int = IMAGE_SIZE) -> bytes:
    """Bytes of a 16 x 16 random RGB PNG, distinct for each seed."""
    return image_bytes(seed, "PNG", size)


def imagefolder(root: Path, classes: dict[str, int] = CLASSES) -> Path:
    """``classes[label]`` distinct PNGs in each class folder, named ``00.png``, ``01.png``, ..."""
    return write_images(root, classes, size=IMAGE_SIZE, digits=2)


def decodes(call: Any, *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """What ``call`` returned and how many images it decoded."""
    before = decode_count()
    result = call(*args, **kwargs)
    return result, decode_count() - before
