"""What the summary records of a detection dataset beyond box counts: images, negatives, sizes, classes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from tlops.data.detection.boxes import relative_bin, relative_bins, size_bin
from tlops.data.splits import SPLITS


def detection_details(frame: pd.DataFrame) -> dict[str, Any]:
    """Images and negatives per split, the box-size histogram and images per class of a split frame.

    Args:
        frame: One row per image with ``split``, ``width``, ``height`` and ``boxes`` (``(label, corners)`` pairs).

    Returns:
        ``images``, ``negatives`` (per split), ``box_sizes`` (``coco``: small/medium/large per split;
        ``relative``: boxes per bin of ``sqrt(box area / image area)``) and ``images_per_class``.
    """
    images = {split: int((frame["split"] == split).sum()) for split in SPLITS}
    empty = frame["boxes"].map(len) == 0
    negatives = {split: int(((frame["split"] == split) & empty).sum()) for split in SPLITS}
    coco = {split: dict.fromkeys(("small", "medium", "large"), 0) for split in SPLITS}
    relative = dict.fromkeys(relative_bins(), 0)
    per_class: Counter[str] = Counter()
    for split, width, height, boxes in zip(
        frame["split"], frame["width"], frame["height"], frame["boxes"], strict=True
    ):
        per_class.update({label for label, _box in boxes})
        for _label, box in boxes:
            coco[split][size_bin(box)] += 1
            relative[relative_bin(box, int(width), int(height))] += 1
    return {
        "images": images,
        "negatives": negatives,
        "box_sizes": {"coco": coco, "relative": relative},
        "images_per_class": dict(sorted(per_class.items())),
    }
