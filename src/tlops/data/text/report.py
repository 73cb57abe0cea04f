"""The Markdown report of a prepared text dataset: the image report's sections, plus columns, encodings, lengths."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from tlops.data.report import (
    cell,
    class_lines,
    duplicate_lines,
    header_lines,
    imbalance_lines,
    quarantine_lines,
    skipped_lines,
)

if TYPE_CHECKING:
    from tlops.data.prepared import PreparedData

TEXT_WORDS = ("text", "texts")


def render_text_report(prepared: PreparedData) -> str:
    """Layout, columns used, encodings, counts per class and split, length histograms, quarantine and duplicates."""
    details = prepared.details
    lines = header_lines(prepared, prepared.layout, TEXT_WORDS)
    columns = details.get("columns") or {}
    if columns:
        used = ", ".join(f"{role} from `{cell(name)}`" for role, name in columns.items() if name is not None)
        lines.append(f"- columns: {used}" + ("" if columns.get("split") else " (no split column: split here)"))
    encodings = details.get("encodings") or {}
    if encodings:
        lines.append("- encodings: " + ", ".join(f"{name} ({n} file{'s' * (n != 1)})" for name, n in encodings.items()))
    lines += class_lines(prepared) + imbalance_lines(prepared, TEXT_WORDS) + _length_lines(details.get("lengths"))
    lines += _reason_lines(prepared) + quarantine_lines(prepared, "Quarantined texts", "file or row")
    lines += skipped_lines(prepared) + duplicate_lines(prepared, "Identical texts after normalisation (same sha256)")
    return "\n".join(lines) + "\n"


def _length_lines(lengths: dict[str, Any] | None) -> list[str]:
    if not lengths:
        return []
    lines = ["", "## Text lengths", ""]
    for unit in ("chars", "words"):
        stats = lengths[unit]
        name = "characters" if unit == "chars" else "words"
        lines += [
            f"{name.capitalize()}: min {stats['min']}, median {stats['median']:g}, mean {stats['mean']:g}, "
            f"max {stats['max']}.",
            "",
            f"| {name} | texts |",
            "|---|---:|",
        ]
        lines += [
            f"| {b['from']}-{b['below'] - 1} | {b['texts']} |" if b["below"] else f"| {b['from']}+ | {b['texts']} |"
            for b in stats["histogram"]
        ]
        lines.append("")
    return lines[:-1]


def _reason_lines(prepared: PreparedData) -> list[str]:
    """How many were quarantined for each reason (the reason's first clause: a length or file name varies)."""
    if not prepared.quarantined:
        return []
    reasons = Counter(q["reason"].split(":")[0].split(" (")[0] for q in prepared.quarantined)
    lines = ["", "## Quarantine reasons", "", "| reason | count |", "|---|---:|"]
    return lines + [f"| {cell(reason)} | {n} |" for reason, n in sorted(reasons.items(), key=lambda r: (-r[1], r[0]))]
