"""The Markdown report of a prepared dataset: counts, quarantined and skipped files, duplicates, class imbalance.

:func:`render_report` is the images' report; its sections are public so that another task's report (text:
:mod:`tlops.data.text.report`) is built from the same parts, saying its own word for an example.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlops.data.splits import SPLITS

if TYPE_CHECKING:
    from tlops.data.prepare import PreparedData

IMAGE_WORDS = ("image", "images")  # what an example is called, singular and plural
IMBALANCE_WARNING_RATIO = 3.0


def cell(text: object) -> str:
    """``text`` made safe for a Markdown table cell (pipes escaped, newlines as spaces)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_report(prepared: PreparedData) -> str:
    """A Markdown report: counts per class and split, quarantined files, duplicates and class imbalance."""
    lines = header_lines(prepared, prepared.layout or "image-folder") + class_lines(prepared)
    lines += imbalance_lines(prepared) + quarantine_lines(prepared) + skipped_lines(prepared)
    return "\n".join(lines + duplicate_lines(prepared)) + "\n"


def header_lines(prepared: PreparedData, layout: str, words: tuple[str, str] = IMAGE_WORDS) -> list[str]:
    """The title and the one-line facts: source, layout, digest, classes, counts, duplicates, quarantine, skipped."""
    return [
        "# Dataset report",
        "",
        f"- source: `{prepared.source}`",
        f"- layout: {layout}",
        f"- digest: `{prepared.digest}`",
        f"- classes: {len(prepared.classes)}",
        f"- {words[1]}: " + ", ".join(f"{split} {n}" for split, n in prepared.num_images.items()),
        f"- duplicates removed: {prepared.duplicates_removed}",
        f"- quarantined: {len(prepared.quarantined)}",
        f"- skipped: {prepared.num_skipped}" + (" (hidden and system files, listed below)" if prepared.skipped else ""),
    ]


def class_lines(prepared: PreparedData) -> list[str]:
    """The table of counts per class and split."""
    lines = ["", "| class | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]
    return lines + [
        f"| {cell(label)} | " + " | ".join(str(prepared.counts[s][label]) for s in SPLITS) + " |"
        for label in prepared.classes
    ]


def quarantine_lines(prepared: PreparedData, title: str = "Quarantined files", what: str = "file") -> list[str]:
    """The quarantined files (or rows), each with its reason."""
    if not prepared.quarantined:
        return []
    lines = ["", f"## {title}", "", f"| {what} | reason |", "|---|---|"]
    return lines + [f"| `{cell(q['path'])}` | {cell(q['reason'])} |" for q in prepared.quarantined]


def skipped_lines(prepared: PreparedData) -> list[str]:
    """The junk files and folders that were not read."""
    if not prepared.skipped:
        return []
    lines = ["", "## Skipped files", "", "| file or folder | files | reason |", "|---|---:|---|"]
    return lines + [f"| `{cell(q['path'])}` | {q.get('files', 1)} | {cell(q['reason'])} |" for q in prepared.skipped]


def duplicate_lines(prepared: PreparedData, what: str = "Exact copies (same sha256)") -> list[str]:
    """The duplicates: which copy was kept, in which split, and which were removed."""
    if not prepared.duplicates:
        return []
    lines = ["", "## Duplicates", "", f"{what}; one is kept, test before val before train.", ""]
    lines += ["| kept | split | removed | sha256 |", "|---|---|---|---|"]
    return lines + [
        f"| `{cell(d['kept'])}` | {d['kept_split'] or '-'} | "
        + ", ".join(f"`{cell(path)}`" for path in d["removed"])
        + f" | `{d['sha256'][:12]}` |"
        for d in prepared.duplicates
    ]


def imbalance_lines(prepared: PreparedData, words: tuple[str, str] = IMAGE_WORDS) -> list[str]:
    """The class balance of train: the ratio, a warning over :data:`IMBALANCE_WARNING_RATIO`, and the weights."""
    if not prepared.imbalance:
        return []
    ratio, weights = prepared.imbalance["ratio"], prepared.imbalance["class_weights"]
    train = prepared.counts["train"]
    lines = ["", "## Class balance", "", f"Largest over smallest class in train: {ratio:.2f}."]
    if ratio > IMBALANCE_WARNING_RATIO:
        largest, smallest = max(train, key=train.__getitem__), min(train, key=train.__getitem__)
        lines += [
            "",
            f"**Imbalanced:** `{cell(largest)}` has {train[largest]} training {words[1]}, `{cell(smallest)}` "
            f"{train[smallest]} ({ratio:.1f}x, over {IMBALANCE_WARNING_RATIO:.0f}x). Consider the balanced class "
            f"weights below (also in prepare_summary.json), resampling, or more {words[1]} of the small classes.",
        ]
    lines += ["", "| class | train | weight |", "|---|---:|---:|"]
    lines += [f"| {cell(label)} | {train[label]} | {weight:.4f} |" for label, weight in weights.items()]
    return lines
