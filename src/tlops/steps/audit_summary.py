"""What the register step makes of the audit: its files as MLflow artifacts, its counts as metrics and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlops.errors import TlopsError
from tlops.steps.audit_report import AUDIT_REPORT_FILE, CONTACT_SHEET_FILE, AuditRecord, summary_line
from tlops.steps.outputs import AUDIT_FILE, Training

AUDIT_ARTIFACTS = "audit"  # the MLflow run's folder of the audit's files
AUDIT_FILES = (AUDIT_REPORT_FILE, AUDIT_FILE, CONTACT_SHEET_FILE)


def read_audit(audit_dir: Path) -> AuditRecord:
    """The audit record in ``audit_dir``.

    Raises:
        TlopsError: when the folder holds no audit.
    """
    if not (Path(audit_dir) / AUDIT_FILE).is_file():
        raise TlopsError(f"{audit_dir} is not an audit output (no {AUDIT_FILE}): pass the folder tlops audit wrote")
    return AuditRecord.read(audit_dir)


def audit_files(audit_dir: Path | None) -> list[tuple[Path, str]]:
    """The audit's report, record and contact sheet, logged under ``audit/`` (none without an audit)."""
    if audit_dir is None:
        return []
    return [(path, AUDIT_ARTIFACTS) for name in AUDIT_FILES if (path := Path(audit_dir) / name).is_file()]


def audit_metrics(audit: AuditRecord | None, training: Training) -> dict[str, float]:
    """The audit's counts as MLflow metrics (none without an audit, or when it did not apply)."""
    if audit is None or audit.skipped:
        return {}
    summary = audit.summary()
    return {
        "audit_label_issues": float(summary["label_issues"]),
        "audit_excluded_from_training": float(training.excluded_label_errors or 0),
        "audit_near_duplicate_pairs": float(summary["near_duplicate_pairs"]),
        "audit_outliers": float(summary["outliers"]),
    }


def audit_summary(audit: AuditRecord | None, training: Training) -> dict[str, Any] | None:
    """The run summary's ``audit``: the counts, what training left out and the one line it prints."""
    if audit is None:
        return None
    counts = {} if audit.skipped else audit.summary()
    excluded = training.excluded_label_errors or 0
    return counts | {"excluded": excluded, "skipped": audit.skipped, "line": summary_line(audit, excluded)}
