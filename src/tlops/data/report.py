"""The Markdown report of a prepared dataset: counts, quarantined and skipped files, duplicates, class imbalance."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlops.data.splits import SPLITS

if TYPE_CHECKING:
    from tlops.data.prepare import PreparedData

IMBALANCE_WARNING_RATIO = 3.0


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_report(prepared: PreparedData) -> str:
    """A Markdown report: counts per class and split, quarantined files, duplicates and class imbalance."""
    lines = [
        "# Dataset report",
        "",
        f"- source: `{prepared.source}`",
        f"- layout: {prepared.layout or 'image-folder'}",
        f"- digest: `{prepared.digest}`",
        f"- classes: {len(prepared.classes)}",
        "- images: " + ", ".join(f"{split} {n}" for split, n in prepared.num_images.items()),
        f"- duplicates removed: {prepared.duplicates_removed}",
        f"- quarantined: {len(prepared.quarantined)}",
        f"- skipped: {prepared.num_skipped}" + (" (hidden and system files, listed below)" if prepared.skipped else ""),
        "",
        "| class | " + " | ".join(SPLITS) + " |",
        "|---|" + "---:|" * len(SPLITS),
    ]
    lines += [
        f"| {_cell(label)} | " + " | ".join(str(prepared.counts[s][label]) for s in SPLITS) + " |"
        for label in prepared.classes
    ]
    lines += _imbalance_lines(prepared)
    if prepared.quarantined:
        lines += ["", "## Quarantined files", "", "| file | reason |", "|---|---|"]
        lines += [f"| `{_cell(q['path'])}` | {_cell(q['reason'])} |" for q in prepared.quarantined]
    if prepared.skipped:
        lines += ["", "## Skipped files", "", "| file or folder | files | reason |", "|---|---:|---|"]
        lines += [f"| `{_cell(q['path'])}` | {q.get('files', 1)} | {_cell(q['reason'])} |" for q in prepared.skipped]
    if prepared.duplicates:
        lines += ["", "## Duplicates", "", "Exact copies (same sha256); one is kept, test before val before train.", ""]
        lines += ["| kept | split | removed | sha256 |", "|---|---|---|---|"]
        lines += [
            f"| `{_cell(d['kept'])}` | {d['kept_split'] or '-'} | "
            + ", ".join(f"`{_cell(path)}`" for path in d["removed"])
            + f" | `{d['sha256'][:12]}` |"
            for d in prepared.duplicates
        ]
    return "\n".join(lines) + "\n"


def _imbalance_lines(prepared: PreparedData) -> list[str]:
    if not prepared.imbalance:
        return []
    ratio, weights = prepared.imbalance["ratio"], prepared.imbalance["class_weights"]
    train = prepared.counts["train"]
    lines = ["", "## Class balance", "", f"Largest over smallest class in train: {ratio:.2f}."]
    if ratio > IMBALANCE_WARNING_RATIO:
        largest, smallest = max(train, key=train.__getitem__), min(train, key=train.__getitem__)
        lines += [
            "",
            f"**Imbalanced:** `{_cell(largest)}` has {train[largest]} training images, `{_cell(smallest)}` "
            f"{train[smallest]} ({ratio:.1f}x, over {IMBALANCE_WARNING_RATIO:.0f}x). Consider the balanced class "
            "weights below (also in prepare_summary.json), resampling, or more images of the small classes.",
        ]
    lines += ["", "| class | train | weight |", "|---|---:|---:|"]
    lines += [f"| {_cell(label)} | {train[label]} | {weight:.4f} |" for label, weight in weights.items()]
    return lines
