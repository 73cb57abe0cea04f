"""What the audit step writes: its record (``audit.json``), the ranked tables (``audit.md``) and the contact sheet."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlops.io.records import JsonRecord
from tlops.steps.outputs import AUDIT_FILE

AUDIT_REPORT_FILE = "audit.md"
CONTACT_SHEET_FILE = "label_issues.png"
TABLE_ROWS = 50
THUMBNAILS = 24
SNIPPET_CHARS = 80


@dataclass
class AuditRecord(JsonRecord):
    """The data-quality audit of a prepared dataset.

    Attributes:
        task: The task of the data.
        backbone: The backbone or text encoder whose features were audited.
        classes: The class names.
        method: How label errors were flagged (``prune_by_noise_rate`` or ``confident_joint``).
        folds: Folds of the out-of-fold probe.
        audited: Examples audited for label errors (train+val).
        examples: Examples audited for duplicates and outliers (every split).
        label_issues: Likely label errors, lowest self-confidence first: ``sha256``, ``split``, ``item`` (image path
            or text snippet), ``given``, ``suggested``, ``confidence`` (probability of the given label),
            ``suggested_confidence``.
        duplicate_threshold: Cosine similarity of a near-duplicate pair.
        duplicate_pairs: Near-duplicate pairs found (``duplicates`` lists the most similar).
        duplicates: ``first`` and ``second`` (``item``, ``split``, ``label``) and their ``similarity``.
        outliers: Most distant first: ``item``, ``split``, ``label``, ``score`` (mean cosine distance to the nearest).
        skipped: Why the audit did not apply (in a pipeline on detection data); empty when it ran.
    """

    task: str
    backbone: str
    classes: list[str]
    method: str
    folds: int
    audited: int
    examples: int
    label_issues: list[dict[str, Any]] = field(default_factory=list)
    duplicate_threshold: float = 0.98
    duplicate_pairs: int = 0
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    outliers: list[dict[str, Any]] = field(default_factory=list)
    skipped: str = ""

    FILE = AUDIT_FILE
    STEP = "audit"

    def flagged_training_rows(self) -> set[str]:
        """The ``sha256`` of each training example flagged as a likely label error."""
        return {issue["sha256"] for issue in self.label_issues if issue["split"] == "train"}

    def summary(self) -> dict[str, Any]:
        """The counts: what ``tlops audit`` prints and the run summary keeps."""
        by_split = {split: sum(i["split"] == split for i in self.label_issues) for split in ("train", "val")}
        return {
            "backbone": self.backbone,
            "audited": self.audited,
            "label_issues": len(self.label_issues),
            "label_issues_by_split": by_split,
            "near_duplicate_pairs": self.duplicate_pairs,
            "outliers": len(self.outliers),
        }


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """One line of at most ``limit`` characters of ``text``."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def label_issue_table(record: AuditRecord, rows: int = TABLE_ROWS) -> str:
    """The ranked Markdown table of likely label errors."""
    lines = ["| rank | example | split | given | suggested | confidence (given) |", "|---:|---|---|---|---|---:|"]
    for rank, issue in enumerate(record.label_issues[:rows], 1):
        lines.append(
            f"| {rank} | {_cell(issue['item'])} | {issue['split']} | {_cell(issue['given'])} | "
            f"{_cell(issue['suggested'])} | {issue['confidence']:.3f} |"
        )
    return "\n".join(lines)


def summary_line(record: AuditRecord, excluded: int | None) -> str:
    """One line of counts for the run summary: what the audit found and what training left out."""
    if record.skipped:
        return f"not run: {record.skipped}"
    summary = record.summary()
    return (
        f"{summary['label_issues']} suspected label errors ({excluded or 0} excluded from training), "
        f"{summary['near_duplicate_pairs']} near-duplicate pairs, {summary['outliers']} outliers; see audit.md"
    )


def render_report(record: AuditRecord, contact_sheet: bool) -> str:
    """``audit.md``: the counts, then ranked tables of label errors, near-duplicates and outliers."""
    if record.skipped:
        return f"# Data-quality audit\n\nNot run: {record.skipped}.\n"
    summary = record.summary()
    parts = [
        "# Data-quality audit",
        "",
        f"Features of `{record.backbone}`; out-of-fold probabilities of a linear probe ({record.folds}-fold on "
        f"{record.audited} train+val examples); label errors by confident learning ({record.method}).",
        "",
        f"- likely label errors: {summary['label_issues']} (train {summary['label_issues_by_split']['train']}, "
        f"val {summary['label_issues_by_split']['val']})",
        f"- near-duplicate pairs (cosine >= {record.duplicate_threshold:g}, exact copies excluded): "
        f"{record.duplicate_pairs}",
        f"- outliers (kNN distance): {len(record.outliers)} of {record.examples}",
        "",
        "## Likely label errors (lowest confidence in the given label first)",
        "",
        label_issue_table(record) if record.label_issues else "None found.",
    ]
    if contact_sheet:
        parts += ["", f"![flagged images, given -> suggested]({CONTACT_SHEET_FILE})"]
    parts += ["", "## Near-duplicates (most similar first)", ""]
    if record.duplicates:
        parts += ["| similarity | first | split | label | second | split | label |", "|---:|---|---|---|---|---|---|"]
        for pair in record.duplicates[:TABLE_ROWS]:
            a, b = pair["first"], pair["second"]
            parts.append(
                f"| {pair['similarity']:.4f} | {_cell(a['item'])} | {a['split']} | {_cell(a['label'])} | "
                f"{_cell(b['item'])} | {b['split']} | {_cell(b['label'])} |"
            )
    else:
        parts.append("None found.")
    parts += ["", "## Outliers (farthest from their nearest neighbours first)", ""]
    if record.outliers:
        parts += ["| score | example | split | label |", "|---:|---|---|---|"]
        parts += [
            f"| {o['score']:.4f} | {_cell(o['item'])} | {o['split']} | {_cell(o['label'])} |"
            for o in record.outliers[:TABLE_ROWS]
        ]
    else:
        parts.append("None flagged.")
    return "\n".join(parts) + "\n"


def write_audit(folder: Path, record: AuditRecord, thumbnails: list[tuple[Path, str]]) -> None:
    """Write the contact sheet (when there are images), ``audit.md``, then ``audit.json`` (marks it complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    if thumbnails:
        from tlops.evaluation.audit.contact_sheet import write_contact_sheet

        paths, captions = zip(*thumbnails, strict=True)
        write_contact_sheet(folder / CONTACT_SHEET_FILE, list(paths), list(captions))
    (folder / AUDIT_REPORT_FILE).write_text(render_report(record, bool(thumbnails)))
    record.write(folder)
