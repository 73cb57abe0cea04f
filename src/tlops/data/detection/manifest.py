"""The object-detection manifest: its columns, and its ``boxes`` column written and read back as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable

from tlops.data.prepared import OBJECT_DETECTION

TASK = OBJECT_DETECTION
MANIFEST_COLUMNS = ("uri", "relpath", "sha256", "label", "split", "width", "height", "boxes")


def format_boxes(boxes: Iterable[tuple[str, list[float]]]) -> str:
    """The ``boxes`` cell of an image: JSON ``[{"label": ..., "box": [x1, y1, x2, y2]}, ...]`` (``[]``: a negative)."""
    return json.dumps([{"label": label, "box": [float(v) for v in box]} for label, box in boxes])


def parse_boxes(text: str) -> list[tuple[str, list[float]]]:
    """The boxes of a manifest's ``boxes`` cell: ``(class name, [x1, y1, x2, y2])`` in original-image pixels."""
    return [(str(entry["label"]), [float(v) for v in entry["box"]]) for entry in json.loads(text or "[]")]
