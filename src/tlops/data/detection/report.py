"""The Markdown report of a prepared detection dataset: images and boxes per split and class, box sizes, negatives.

Quarantine, skipped files, duplicates and the class balance (of training boxes) are the image report's sections.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from tlops.data.report import cell, duplicate_lines, imbalance_lines, quarantine_lines, skipped_lines
from tlops.data.splits import SPLITS

if TYPE_CHECKING:
    from tlops.data.prepared import PreparedData

BOX_WORDS = ("box", "boxes")


def render_detection_report(prepared: PreparedData) -> str:
    """Facts, images per split, boxes per class and split, images per class, box sizes, quarantine, duplicates."""
    details = prepared.details
    lines = _header_lines(prepared, details) + _image_lines(details) + _class_lines(prepared, details)
    lines += _size_lines(details.get("box_sizes") or {}) + imbalance_lines(prepared, BOX_WORDS)
    lines += _reason_lines(prepared) + quarantine_lines(prepared, "Quarantined images and boxes", "file")
    lines += skipped_lines(prepared) + duplicate_lines(prepared)
    return "\n".join(lines) + "\n"


def _header_lines(prepared: PreparedData, details: dict[str, Any]) -> list[str]:
    images = details.get("images") or {}
    return [
        "# Dataset report",
        "",
        f"- source: `{prepared.source}`",
        f"- format: {details.get('format', '?')}",
        f"- layout: {prepared.layout}" + (" (the export's splits)" if prepared.layout == "pre-split" else ""),
        f"- digest: `{prepared.digest}`",
        f"- classes: {len(prepared.classes)}",
        "- images: " + ", ".join(f"{split} {images.get(split, 0)}" for split in SPLITS),
        "- boxes: " + ", ".join(f"{split} {sum(per_class.values())}" for split, per_class in prepared.counts.items()),
        f"- boxes clipped to their image: {details.get('boxes_clipped', 0)}",
        f"- boxes dropped: {details.get('boxes_dropped', 0)} (listed under quarantine)",
        f"- duplicates removed: {prepared.duplicates_removed}",
        f"- quarantined: {len(prepared.quarantined)}",
        f"- skipped: {prepared.num_skipped}" + (" (hidden and system files, listed below)" if prepared.skipped else ""),
    ]


def _image_lines(details: dict[str, Any]) -> list[str]:
    images, negatives = details.get("images") or {}, details.get("negatives") or {}
    lines = ["", "## Images", "", "| split | images | negatives (no object) |", "|---|---:|---:|"]
    return lines + [f"| {split} | {images.get(split, 0)} | {negatives.get(split, 0)} |" for split in SPLITS]


def _class_lines(prepared: PreparedData, details: dict[str, Any]) -> list[str]:
    per_class = details.get("images_per_class") or {}
    lines = ["", "## Boxes per class", "", "| class | " + " | ".join(SPLITS) + " | images |"]
    lines.append("|---|" + "---:|" * (len(SPLITS) + 1))
    return lines + [
        f"| {cell(label)} | "
        + " | ".join(str(prepared.counts[s][label]) for s in SPLITS)
        + f" | {per_class.get(label, 0)} |"
        for label in prepared.classes
    ]


def _size_lines(sizes: dict[str, Any]) -> list[str]:
    if not sizes:
        return []
    coco, relative = sizes.get("coco") or {}, sizes.get("relative") or {}
    lines = [
        "",
        "## Box sizes",
        "",
        "COCO's sizes by area: small under 32x32 pixels, medium under 96x96, large above.",
        "",
    ]
    lines += ["| split | small | medium | large |", "|---|---:|---:|---:|"]
    lines += [
        f"| {split} | " + " | ".join(str(coco.get(split, {}).get(b, 0)) for b in ("small", "medium", "large")) + " |"
        for split in SPLITS
    ]
    lines += ["", "Side relative to the image's, sqrt(box area / image area):", "", "| relative side | boxes |"]
    return lines + ["|---|---:|"] + [f"| {name} | {n} |" for name, n in relative.items()]


def _reason_lines(prepared: PreparedData) -> list[str]:
    """How many were quarantined for each kind of reason (its words before the first number or colon)."""
    if not prepared.quarantined:
        return []
    reasons = Counter(_kind(q["reason"]) for q in prepared.quarantined)
    lines = ["", "## Quarantine reasons", "", "| reason | count |", "|---|---:|"]
    return lines + [f"| {cell(reason)} | {n} |" for reason, n in sorted(reasons.items(), key=lambda r: (-r[1], r[0]))]


def _kind(reason: str) -> str:
    for kind in (
        "zero or negative area",
        "entirely outside",
        "unknown class",
        "unknown category",
        "label file without",
    ):
        if kind in reason:
            return kind
    return reason.split(":")[0].split(" (")[0]
