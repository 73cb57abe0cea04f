"""The prepare-data step's output: its file names and its summary record (no pandas import, for quick checks).

The step itself is :func:`tlops.data.prepare.prepare_data`; :mod:`tlops.steps.outputs` re-exports these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tlops.io.records import JsonRecord

IMAGE_CLASSIFICATION = "image-classification"  # the task names (tlops.tasks registers a task under each)
OBJECT_DETECTION = "object-detection"
TEXT_CLASSIFICATION = "text-classification"
MANIFEST_FILE = "manifest.csv"
SUMMARY_FILE = "prepare_summary.json"
REPORT_FILE = "report.md"
# Manifest columns read as text, never parsed: a class named NA, null, nan or None stays that string (and so does a
# text-classification manifest's ``text``, and an object-detection manifest's JSON ``boxes``).
TEXT_COLUMNS = ("uri", "relpath", "sha256", "label", "split", "text", "boxes")


@dataclass
class PreparedData(JsonRecord):
    """What the prepare-data step produced, stored as ``prepare_summary.json`` beside the manifest and report.

    Attributes:
        digest: sha256 over the sorted manifest rows; the same data gives the same digest.
        classes: Sorted class names (the union over splits); a label's index in this list is its class id.
        counts: Images per split and class.
        quarantined: Files that failed validation, with the reason.
        duplicates_removed: How many duplicate files were dropped.
        source: The dataset URI or path that was read.
        output_dir: Directory holding the manifest, summary and report.
        layout: ``image-folder``, ``pre-split`` or ``csv-manifest``; for text, ``text-table``, ``text-folder`` or
            ``text-pre-split``.
        duplicates: One entry per duplicated content: ``sha256``, ``label``, ``kept``, ``kept_split``,
            ``removed`` and ``across_splits``.
        imbalance: ``ratio`` (largest over smallest class in train) and balanced ``class_weights``.
        skipped: Junk not read (hidden files and folders, ``.DS_Store``, ``__MACOSX/``, ...): ``path`` (a file,
            or a folder ending in ``/``), ``reason`` and ``files`` (how many files).
        task: The task whose data this is (stamped by the task that prepared it; ``""``: the default task), which
            the later steps ask for the model, metrics and served signature.
        details: What a task records about its data beyond the counts (text: the columns used, the encodings
            seen and the length statistics).
    """

    digest: str
    classes: list[str]
    counts: dict[str, dict[str, int]]
    quarantined: list[dict[str, str]] = field(default_factory=list)
    duplicates_removed: int = 0
    source: str = ""
    output_dir: str = ""
    layout: str = ""
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    imbalance: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    task: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    FILE = SUMMARY_FILE
    STEP = "prepare-data"

    @property
    def num_skipped(self) -> int:
        """How many junk files were skipped."""
        return sum(int(entry.get("files", 1)) for entry in self.skipped)

    @property
    def num_images(self) -> dict[str, int]:
        """Images (or texts) per split: an image with boxes counts once however many it holds."""
        if "images" in self.details:  # object detection: ``counts`` are boxes per class
            return {split: int(n) for split, n in self.details["images"].items()}
        return {split: sum(per_class.values()) for split, per_class in self.counts.items()}
