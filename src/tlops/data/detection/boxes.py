"""An image's boxes made pixel corners inside it: clipped when partly outside, dropped with the reason otherwise."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tlops.data.detection.records import RawBox

SMALL_AREA, MEDIUM_AREA = 32**2, 96**2  # COCO's small / medium / large thresholds, in pixels
RELATIVE_BINS = (0.05, 0.1, 0.25, 0.5)  # sqrt(box area / image area)


@dataclass
class CheckedBoxes:
    """The usable boxes of an image, how many were clipped, and why the others were dropped."""

    boxes: list[tuple[str, list[float]]] = field(default_factory=list)
    clipped: int = 0
    dropped: list[str] = field(default_factory=list)


def check_boxes(raw: list[RawBox], width: int, height: int) -> CheckedBoxes:
    """Convert boxes to pixel corners of a ``width`` x ``height`` image and keep the usable ones.

    A box with zero or negative area (or a coordinate that is no number) is dropped; one partly outside the
    image is clipped to it; one entirely outside is dropped.
    """
    checked = CheckedBoxes()
    for box in raw:
        corners = [v * (width if i % 2 == 0 else height) if box.normalised else v for i, v in enumerate(box.box)]
        x1, y1, x2, y2 = corners
        shown = "[" + ", ".join(f"{v:g}" for v in corners) + "]"
        if not all(math.isfinite(v) for v in corners) or x2 <= x1 or y2 <= y1:
            checked.dropped.append(f"box {shown} of {box.label!r} has zero or negative area: dropped (image kept)")
            continue
        clipped = [
            min(max(x1, 0.0), width),
            min(max(y1, 0.0), height),
            min(max(x2, 0.0), width),
            min(max(y2, 0.0), height),
        ]
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            checked.dropped.append(
                f"box {shown} of {box.label!r} lies entirely outside the {width}x{height} image: dropped (image kept)"
            )
            continue
        if clipped != [float(v) for v in corners]:
            checked.clipped += 1
        checked.boxes.append((box.label, [round(v, 4) for v in clipped]))
    return checked


def size_bin(box: list[float]) -> str:
    """COCO's size of a box: ``small`` (area under 32^2 pixels), ``medium`` (under 96^2) or ``large``."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    return "small" if area < SMALL_AREA else "medium" if area < MEDIUM_AREA else "large"


def relative_bin(box: list[float], width: int, height: int) -> str:
    """The box's side relative to the image's, ``sqrt(box area / image area)``, as a bin such as ``5-10%``."""
    side = math.sqrt((box[2] - box[0]) * (box[3] - box[1]) / (width * height))
    edges = (0.0, *RELATIVE_BINS)
    for low, high in zip(edges, (*RELATIVE_BINS, math.inf), strict=True):
        if side < high:
            return f"{low:.0%}-{high:.0%}" if high != math.inf else f"{low:.0%}+"
    return f"{RELATIVE_BINS[-1]:.0%}+"


def relative_bins() -> list[str]:
    """The relative-size bins in order (the report's rows)."""
    edges = (0.0, *RELATIVE_BINS)
    return [f"{low:.0%}-{high:.0%}" for low, high in zip(edges, RELATIVE_BINS, strict=False)] + [
        f"{RELATIVE_BINS[-1]:.0%}+"
    ]
