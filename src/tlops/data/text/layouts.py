"""How a text dataset is organised, detected from its listing: a table of texts, or folders of ``.txt`` files.

- ``text-table``: a ``.csv``/``.tsv``/``.jsonl``/``.json``/``.parquet`` source, or a folder or archive holding
  exactly one such file (junk aside); see :mod:`tlops.data.text.tables`.
- ``text-folder``: ``<class>/<doc>.txt``, one document a file; the split is made later.
- ``text-pre-split``: ``train/<class>/<doc>.txt``, ``test/...`` and optionally ``val/...``.

Folder layouts reuse the image listing (:func:`tlops.data.layouts.folder_layout`): junk skipped, wrapper folders
stripped, files outside a class folder quarantined. A file in a class folder that is not ``.txt`` is quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from tlops.data.layouts import PRE_SPLIT, Layout, SourceFile, folder_layout, list_without_junk
from tlops.data.sources import OpenedSource, is_table, strip_wrappers
from tlops.data.splits import SPLITS
from tlops.errors import TlopsError
from tlops.io.storage import S3Client, read_bytes

TEXT_TABLE, TEXT_FOLDER, TEXT_PRE_SPLIT = "text-table", "text-folder", "text-pre-split"
TEXT_SUFFIX = ".txt"
NOT_TXT = "not a .txt file: a text folder holds one .txt file per document (rename it, or move it out)"
# What a split column may say, and the split it means.
SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}


@dataclass
class TextRecord:
    """One candidate text: where it came from, its class and given split, and its text when a table held it.

    Attributes:
        uri: The file (folder layouts), or ``FILE#row=N`` for a table's data row N (1-based).
        relpath: The path relative to the dataset root (``name.csv#row=N`` for a row).
        label: The class, as read (stripped).
        split: The given split, or ``None``.
        text: The text as a table held it; ``None`` for a file, read later.
    """

    uri: str
    relpath: str
    label: str
    split: str | None = None
    text: str | None = None


@dataclass
class TextLayout:
    """The candidate texts of a source.

    Attributes:
        kind: ``text-table``, ``text-folder`` or ``text-pre-split``.
        records: The candidates.
        quarantined: What the listing refused, with the reason.
        skipped: Junk not read (as for images).
        columns: For a table, the columns used for ``text``, ``label`` and ``split``.
        encodings: For a table, its encoding with the count 1; files are counted when read.
        table: For a table, its uri (what was read).
    """

    kind: str
    records: list[TextRecord]
    quarantined: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, object]] = field(default_factory=list)
    columns: dict[str, str | None] = field(default_factory=dict)
    encodings: dict[str, int] = field(default_factory=dict)
    table: str | None = None

    @property
    def as_layout(self) -> Layout:
        """The records as an image :class:`~tlops.data.layouts.Layout`, for the shared split and size checks."""
        files = [SourceFile(r.uri, r.relpath, r.label, r.split) for r in self.records]
        return Layout(self.kind, files)


def list_text_layout(opened: OpenedSource, s3: S3Client | None = None) -> TextLayout:
    """List an opened source and detect its text layout; a table is read (its texts are in it), files are not.

    Raises:
        TlopsError: when the layout is ambiguous or malformed, or a table unreadable (the message says the fix).
    """
    if opened.csv is not None:
        return table_layout(opened.csv, read_bytes(opened.csv, s3))
    listing, skipped = list_without_junk(opened.root, s3)
    tables = [f for f in listing if is_table(f.relpath)]
    if len(listing) == 1 and tables:
        layout = table_layout(tables[0].uri, read_bytes(tables[0].uri, s3), PurePosixPath(tables[0].relpath).name)
    else:
        layout = folder_text_layout(listing, opened.source)
    layout.skipped = skipped
    return layout


def folder_text_layout(listing: list, source: str) -> TextLayout:
    """Class folders of ``.txt`` files, optionally under ``train/``, ``val/``, ``test/``.

    Raises:
        TlopsError: when the source holds no ``.txt`` file, or from :func:`tlops.data.layouts.folder_layout`.
    """
    if not any(f.relpath.lower().endswith(TEXT_SUFFIX) for f in listing):
        shown = ", ".join(f.relpath for f in listing[:3]) + (", ..." if len(listing) > 3 else "")
        raise TlopsError(
            f"no .txt files found in {source!r} ({f'it holds {shown}' if listing else 'it is empty'}); give a "
            "folder of class folders holding .txt files (<class>/<doc>.txt), or one .csv/.tsv/.jsonl/.parquet "
            "table with text and label columns"
        )
    prefix, tree = strip_wrappers(listing, keep=SPLITS)
    layout = folder_layout(tree, source, prefix, item="text")
    records, quarantined = [], list(layout.quarantined)
    for file in layout.files:
        if file.relpath.lower().endswith(TEXT_SUFFIX):
            records.append(TextRecord(file.uri, file.relpath, file.label.strip(), file.split))
        else:
            quarantined.append({"path": file.relpath, "reason": NOT_TXT})
    kind = TEXT_PRE_SPLIT if layout.kind == PRE_SPLIT else TEXT_FOLDER
    return TextLayout(kind, records, sorted(quarantined, key=lambda q: q["path"]))


def table_layout(uri: str, data: bytes, name: str | None = None) -> TextLayout:
    """The rows of a table of texts, each a record ``FILE#row=N`` with its text, label and given split.

    Raises:
        TlopsError: when the table is unreadable or lacks columns, a split value is unknown, or the split column
            gives no train or no test row.
    """
    from tlops.data.text.tables import read_table

    name = name or PurePosixPath(uri).name
    table = read_table(data, name)
    splits: list[str | None] = [None] * len(table.texts)
    if table.splits is not None and any(value.strip() for value in table.splits):
        splits = [_split_of(value, name, number) for number, value in enumerate(table.splits, start=1)]
    records = [
        TextRecord(f"{uri}#row={number}", f"{name}#row={number}", label.strip(), split, text)
        for number, (text, label, split) in enumerate(zip(table.texts, table.labels, splits, strict=True), start=1)
    ]
    given = {split for split in splits if split is not None}
    missing = [s for s in ("train", "test") if given and s not in given]
    if missing:
        raise TlopsError(
            f"{name} has a split column but no {' or '.join(missing)} rows; every class needs train and test texts "
            "(val is optional: it is carved out of train when absent)"
        )
    return TextLayout(TEXT_TABLE, records, columns=table.columns, encodings={table.encoding: 1}, table=uri)


def _split_of(value: str, name: str, number: int) -> str:
    split = SPLIT_NAMES.get(value.strip().lower())
    if split is None:
        raise TlopsError(
            f"{name} row {number} has split {value!r}; use train, val (or validation, valid) or test in every row, "
            "or leave the column out to split automatically"
        )
    return split
