"""Built-in demo data: real images that ship with a dependency, written out as an ImageFolder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_digits_imagefolder(root: Path, per_class: int | None = None, scale: int = 4) -> Path:
    """Write scikit-learn's handwritten digits (8x8, 1,797 images, 10 classes) as PNG files, one folder a class.

    Args:
        root: Target directory; class folders are created inside it.
        per_class: Keep at most this many images per class (all when ``None``).
        scale: Nearest-neighbour upscaling factor, so the files are viewable.

    Returns:
        ``root``. Existing files with the same names are overwritten with identical content.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts: dict[int, int] = {}
    for index, (image, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        label = int(target)
        if per_class is not None and counts.get(label, 0) >= per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        pixels = (image * (255.0 / 16.0)).round().astype(np.uint8)
        folder = root / DIGIT_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").resize((8 * scale, 8 * scale), Image.NEAREST).save(
            folder / f"{index:04d}.png"
        )
    return root
