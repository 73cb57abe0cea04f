"""A contact sheet: thumbnails of flagged images in a grid, each captioned (given -> suggested label)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLUMNS = 6


def contact_sheet_figure(images: list[Path], captions: list[str], columns: int = COLUMNS) -> Figure:
    """A grid of the images at ``images`` (decoded with Pillow, shown as RGB), each with its caption below.

    Args:
        images: Local image files.
        captions: One line per image.
        columns: Thumbnails per row.
    """
    from matplotlib.figure import Figure
    from PIL import Image

    columns = max(1, min(columns, len(images)))
    rows = max(1, math.ceil(len(images) / columns))
    figure = Figure(figsize=(2.0 * columns, 2.3 * rows), layout="constrained")
    for position, (path, caption) in enumerate(zip(images, captions, strict=True)):
        axes = figure.add_subplot(rows, columns, position + 1)
        with Image.open(path) as image:
            axes.imshow(image.convert("RGB"))
        axes.set_title(caption, fontsize=8)
        axes.axis("off")
    return figure


def write_contact_sheet(path: Path, images: list[Path], captions: list[str]) -> None:
    """Save :func:`contact_sheet_figure` as a PNG at ``path``."""
    contact_sheet_figure(images, captions).savefig(path, dpi=80)
