"""Leakage: exact duplicates collapsed so no image sits in two splits, and one image under two labels quarantined."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

# Which copy of a duplicate survives: the one in the split listed first (test, then val, then train, then unsplit).
_KEEP_ORDER = {"test": 0, "val": 1, "train": 2, None: 3}


@dataclass
class Deduplicated:
    """What :func:`resolve_duplicates` kept and why it dropped the rest.

    Attributes:
        rows: The surviving rows, one per distinct content, sorted by ``relpath``.
        conflicts: Quarantine entries (``path``, ``reason``) for every copy of an image under two or more labels.
        duplicates: One entry per duplicated content: ``sha256``, ``label``, ``kept``, ``kept_split``,
            ``removed`` (relative paths) and ``across_splits``.
    """

    rows: list[dict[str, Any]]
    conflicts: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def removed(self) -> int:
        """How many duplicate files were dropped."""
        return sum(len(d["removed"]) for d in self.duplicates)


def _listed(labels: list[str]) -> str:
    return ", ".join(labels[:-1]) + " and " + labels[-1]


def resolve_duplicates(rows: list[dict[str, Any]], item: str = "image") -> Deduplicated:
    """Collapse files with the same content so each appears once, and quarantine label conflicts.

    The same content under two or more labels cannot be trusted: every copy is quarantined with the reason
    "same image labelled A and B". Otherwise one copy survives: within a split the first by path, and across
    given splits the one in test, else val, so no test or val image is also trained on.

    Args:
        rows: One dict per decoded file with at least ``relpath``, ``sha256``, ``label`` and ``split`` (the given
            split, or ``None``).
        item: What a row is, for the conflict reason (``image``, ``text``).

    Returns:
        The surviving rows, the conflicts and the duplicate report.
    """
    by_hash: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["relpath"]):
        by_hash[row["sha256"]].append(row)
    result = Deduplicated(rows=[])
    for sha256, copies in sorted(by_hash.items()):
        labels = sorted({row["label"] for row in copies})
        if len(labels) > 1:
            reason = f"same {item} labelled {_listed(labels)}"
            result.conflicts += [{"path": row["relpath"], "reason": reason} for row in copies]
            continue
        kept, *removed = sorted(copies, key=lambda r: (_KEEP_ORDER[r["split"]], r["relpath"]))
        result.rows.append(kept)
        if removed:
            result.duplicates.append(
                {
                    "sha256": sha256,
                    "label": kept["label"],
                    "kept": kept["relpath"],
                    "kept_split": kept["split"],
                    "removed": [row["relpath"] for row in removed],
                    "across_splits": any(row["split"] != kept["split"] for row in removed),
                }
            )
    result.rows.sort(key=lambda r: r["relpath"])
    result.conflicts.sort(key=lambda q: q["path"])
    return result
