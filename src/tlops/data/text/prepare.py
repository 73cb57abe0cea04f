"""Text data preparation: list any text source, decode and normalise every text, quarantine, de-duplicate, split.

The flow and files are the images' (:mod:`tlops.data.outputs`): ``manifest.csv``, ``prepare_summary.json`` and
``report.md``, nothing left in the output folder on failure, the prepared-dataset cache shared with the preflight.
The manifest's columns are ``uri, relpath, sha256, label, split, text, chars``: ``sha256`` is that of the
normalised text's UTF-8 bytes (:func:`tlops.data.text.decoding.text_sha256`), the row id the feature cache uses.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from tlops.data.config import SplitConfig
from tlops.data.leakage import resolve_duplicates
from tlops.data.outputs import (
    EXTRACTED_DIR,
    prepare_output,
    relative_extracted,
    removed_on_failure,
    write_outputs,
)
from tlops.data.prepare import check_sizes, class_imbalance, dataset_digest
from tlops.data.prepared import TEXT_CLASSIFICATION, PreparedData
from tlops.data.prepared_cache import PreparedCache
from tlops.data.sources import TABLE_SUFFIXES, open_source
from tlops.data.splits import class_counts, resolve_splits
from tlops.data.text.decoding import BinaryText, decode_text, normalise_text, text_sha256
from tlops.data.text.layouts import TEXT_TABLE, TextLayout, TextRecord, list_text_layout
from tlops.data.text.report import render_text_report
from tlops.data.text.stats import length_stats
from tlops.errors import TlopsError
from tlops.io.progress import progress
from tlops.io.storage import S3Client, read_bytes

TASK = TEXT_CLASSIFICATION
MANIFEST_COLUMNS = ("uri", "relpath", "sha256", "label", "split", "text", "chars")
EMPTY_TEXT = "empty text (nothing but whitespace)"
EMPTY_LABEL = "empty label: every text needs one (fill it in, or remove the row)"

logger = logging.getLogger(__name__)


def prepare_text_data(
    source: str,
    output: Path,
    config: SplitConfig | None = None,
    s3: S3Client | None = None,
    cache: PreparedCache | None = None,
    fingerprint: str | None = None,
) -> PreparedData:
    """Validate a text dataset, split it and write the manifest, summary and report into ``output``.

    The source is a table (``.csv``, ``.tsv``, ``.jsonl``/``.json``, ``.parquet``) with text and label columns
    and an optional split column, or class folders of ``.txt`` files (optionally under ``train/``, ``val/``,
    ``test/``): a local path, an s3:// prefix or object, or a .zip/.tar archive of either. Each file's encoding is
    detected and recorded. Texts are normalised (NFC, LF line ends, stripped); empty texts, empty labels, texts
    over ``config.max_text_chars`` and binary files are quarantined with the reason; identical texts are
    collapsed (never across splits: test wins over val over train), and a text under two labels is quarantined.
    Without given splits the split is stratified and deterministic for ``config.seed``.

    Args:
        source: The dataset.
        output: Where ``manifest.csv``, ``prepare_summary.json`` and ``report.md`` are written.
        config: Split fractions, seed, longest text and read parallelism.
        s3: S3 client, needed for s3:// sources.
        cache: Where prepared datasets are kept, or ``None``.
        fingerprint: The source's fingerprint, when the caller has it.

    Returns:
        The summary (``task`` ``text-classification``; ``details``: columns, encodings and lengths).

    Raises:
        TlopsError: one line naming the problem and the fix, for a missing or malformed source, a table without a
            text or label column, a single class, classes too small to split, or nothing left after quarantine;
            nothing is left in ``output`` then (if this call created it).
    """
    config = config or SplitConfig()
    return prepare_output(source, output, config, s3, cache, fingerprint, _prepare_to, logger, "text read")


def _prepare_to(
    source: str, output_dir: Path, config: SplitConfig, s3: S3Client | None
) -> tuple[PreparedData, list[str]]:
    """Prepare ``source`` into ``output_dir`` (checked); also return the files read that are not from an archive."""
    extract_to = output_dir / EXTRACTED_DIR
    with (
        removed_on_failure(output_dir),
        open_source(source, s3, extract_to, config.archive_limits, tables=TABLE_SUFFIXES) as opened,
    ):
        layout = list_text_layout(opened, s3)
        manifest, prepared = _prepare(layout, source, config, s3)
        files = [layout.table] if layout.table else [r.uri for r in layout.records]
        read = relative_extracted(manifest, files, opened.extracted, output_dir)
        prepared.output_dir = str(output_dir)
        write_outputs(manifest, prepared, render_text_report(prepared), output_dir)
    return prepared, read


def _read(record: TextRecord, s3: S3Client | None) -> tuple[TextRecord, str | None, str]:
    """A record's text and encoding (a table's texts are already read), or the reason it cannot be read."""
    if record.text is not None:
        return record, record.text, ""
    try:
        decoded = decode_text(read_bytes(record.uri, s3))
    except BinaryText as error:
        return record, None, str(error)
    except (OSError, TlopsError) as error:
        return record, None, f"unreadable: {error}"
    return record, decoded.text, decoded.encoding


def _checked(record: TextRecord, text: str, config: SplitConfig) -> dict[str, Any] | str:
    """The manifest row of a decoded text, or why it is quarantined."""
    if not record.label:
        return EMPTY_LABEL
    text = normalise_text(text)
    if not text:
        return EMPTY_TEXT
    if len(text) > config.max_text_chars:
        return (
            f"too long: {len(text):,} characters, over max_text_chars {config.max_text_chars:,} (raise "
            "--max-text-chars to keep it, or split the document)"
        )
    return {
        "uri": record.uri,
        "relpath": record.relpath,
        "sha256": text_sha256(text),
        "label": record.label,
        "split": record.split,
        "text": text,
        "chars": len(text),
    }


def _prepare(
    layout: TextLayout, source: str, config: SplitConfig, s3: S3Client | None
) -> tuple[pd.DataFrame, PreparedData]:
    records = layout.records
    files = layout.table is None
    with ThreadPoolExecutor(max_workers=config.workers if files else 1) as pool:
        read = pool.map(lambda record: _read(record, s3), records)
        read = list(progress(read, "reading texts", total=len(records), unit="file") if files else read)
    quarantined = list(layout.quarantined)
    encodings = Counter(layout.encodings)
    rows = []
    for record, text, encoding in read:
        if text is None:
            quarantined.append({"path": record.relpath, "reason": encoding})
            continue
        if files:
            encodings[encoding] += 1
        checked = _checked(record, text, config)
        if isinstance(checked, str):
            quarantined.append({"path": record.relpath, "reason": checked})
        else:
            rows.append(checked)
    _check_some_left(rows, quarantined, len(records), source)
    deduplicated = resolve_duplicates(rows, item="text")
    quarantined += deduplicated.conflicts
    _check_two_classes(deduplicated.rows, quarantined, layout, source)
    shared = layout.as_layout
    labels = {record.label for record in records if record.label}
    check_sizes([(r["split"], r["label"]) for r in deduplicated.rows], shared, config, source, labels, item="text")
    frame = pd.DataFrame(deduplicated.rows)
    frame["split"] = resolve_splits(frame, config, split_given=shared.split_given, carve_val=shared.carve_val)
    manifest = frame[list(MANIFEST_COLUMNS)].sort_values("relpath", key=_natural).reset_index(drop=True)
    classes = sorted(manifest["label"].unique())
    counts = class_counts(manifest)
    prepared = PreparedData(
        digest=dataset_digest(manifest),
        classes=classes,
        counts=counts,
        quarantined=quarantined,
        duplicates_removed=deduplicated.removed,
        source=source,
        layout=layout.kind,
        duplicates=deduplicated.duplicates,
        imbalance=class_imbalance(counts["train"]),
        skipped=layout.skipped,
        task=TASK,
        details={
            "columns": layout.columns,
            "encodings": dict(sorted(encodings.items())),
            "lengths": length_stats(manifest["text"].tolist()),
        },
    )
    return manifest, prepared


def _natural(relpaths: pd.Series) -> pd.Series:
    """Sort keys that order a table's rows by number (``t.csv#row=2`` before ``t.csv#row=10``)."""
    return relpaths.map(lambda p: (p.rpartition("#row=")[0], int(p.rpartition("#row=")[2])) if "#row=" in p else (p, 0))


def _check_some_left(rows: list[dict[str, Any]], quarantined: list[dict[str, str]], total: int, source: str) -> None:
    if rows:
        return
    if not total:
        raise TlopsError(f"no texts found in {source!r}; give class folders of .txt files, or a table of texts")
    example = f" (e.g. {quarantined[0]['path']!r}: {quarantined[0]['reason']})" if quarantined else ""
    raise TlopsError(f"every one of the {total} texts in {source!r} was quarantined{example}; fix the texts and labels")


def _check_two_classes(
    rows: list[dict[str, Any]], quarantined: list[dict[str, str]], layout: TextLayout, source: str
) -> None:
    labels = sorted({row["label"] for row in rows})
    if len(labels) >= 2:
        return
    where = f"column {layout.columns['label']!r} of " if layout.kind == TEXT_TABLE else ""
    first = quarantined[0] if quarantined else None
    dropped = f" ({len(quarantined)} quarantined, e.g. {first['path']!r}: {first['reason']})" if first else ""
    if not labels:
        raise TlopsError(f"no text of {source!r} is left after quarantine{dropped}; fix the texts and labels")
    raise TlopsError(
        f"only one class ({labels[0]!r}) in {where}{source!r}{dropped}; a classifier needs at least two: add texts "
        "of another class"
    )
