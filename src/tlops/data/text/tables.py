"""Tables of texts: .csv, .tsv, .jsonl (or .json lines, or a .json array) and .parquet, with their columns found.

A table has a column of texts and a column of labels, found by name whatever the case: :data:`TEXT_NAMES` and
:data:`LABEL_NAMES`, first match wins; an optional ``split`` column fixes the splits. Every cell is read as a
string (a label ``NA`` or ``1`` stays that string); a missing JSON value or parquet null reads as ``""``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import PurePosixPath

import pandas as pd

from tlops.data.text.decoding import BinaryText, decode_text
from tlops.errors import TlopsError

TEXT_NAMES = ("text", "sentence", "content", "document")
LABEL_NAMES = ("label", "class", "category", "target")
SPLIT_NAME = "split"
PARQUET_ENCODING = "utf-8 (parquet)"
_FIX = (
    f"name the column of texts {TEXT_NAMES[0]} (or {', '.join(TEXT_NAMES[1:])}) and the column of labels "
    f"{LABEL_NAMES[0]} (or {', '.join(LABEL_NAMES[1:])})"
)


@dataclass(frozen=True)
class TextTable:
    """A table read: the text, label and (optional) split values, the columns they came from, the encoding.

    Attributes:
        texts: The text of each data row, as read (not normalised).
        labels: The label of each row, as read.
        splits: The split of each row as read, or ``None`` without a split column.
        columns: The table's column used for ``text``, ``label`` and ``split`` (``None``: no split column).
        encoding: How the file was decoded (``utf-8 (parquet)`` for parquet).
    """

    texts: list[str]
    labels: list[str]
    splits: list[str] | None
    columns: dict[str, str | None]
    encoding: str


def find_columns(columns: list[str], name: str) -> dict[str, str | None]:
    """The columns holding the texts, the labels and the splits, matched case-insensitively.

    Raises:
        TlopsError: when there is no text or no label column, naming the columns the table has.
    """
    lowered = {str(column).strip().lower(): str(column) for column in reversed(columns)}  # the first of equal names
    found = {
        "text": next((lowered[n] for n in TEXT_NAMES if n in lowered), None),
        "label": next((lowered[n] for n in LABEL_NAMES if n in lowered), None),
        "split": lowered.get(SPLIT_NAME),
    }
    missing = [role for role in ("text", "label") if found[role] is None]
    if missing:
        has = ", ".join(map(str, columns)) or "no columns"
        raise TlopsError(f"{name} has no {' or '.join(missing)} column (it has {has}); {_FIX}")
    return found


def read_table(data: bytes, name: str) -> TextTable:
    """Read a table of texts from its bytes; the format is the name's suffix.

    Args:
        data: The file's content.
        name: The file's name (its suffix decides the format; also for messages).

    Raises:
        TlopsError: when the file is not readable as its format, is binary, has no text or label column, or no
            data row.
    """
    lower = name.lower()
    if lower.endswith(".parquet"):
        frame, encoding = _read_parquet(data, name), PARQUET_ENCODING
    else:
        try:
            decoded = decode_text(data)
        except BinaryText as error:
            raise TlopsError(f"{name} is not a text table ({error}); give a UTF-8 .csv, .tsv or .jsonl file") from None
        reader = _read_json_lines if lower.endswith((".jsonl", ".json")) else _read_delimited
        frame, encoding = reader(decoded.text, name), decoded.encoding
    columns = find_columns(list(frame.columns), name)
    if frame.empty:
        raise TlopsError(f"{name} has a header but no data rows; add one row per text ({columns['text']},label)")

    def values(role: str) -> list[str]:
        column = columns[role]
        return frame[column].tolist() if column is not None else []

    return TextTable(values("text"), values("label"), values("split") if columns["split"] else None, columns, encoding)


def _read_delimited(text: str, name: str) -> pd.DataFrame:
    separator = "\t" if name.lower().endswith(".tsv") else ","
    try:
        return pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False, na_values=[], engine="c")
    except pd.errors.EmptyDataError:
        raise TlopsError(f"{name} is empty; write a header row text,label[,split] and one row per text") from None
    except pd.errors.ParserError as error:
        reason = str(error).strip().splitlines()[0]
        raise TlopsError(f"{name} is not a readable {separator!r}-separated table ({reason}); fix the file") from None


def _read_json_lines(text: str, name: str) -> pd.DataFrame:
    """JSON lines (one object a line), or a JSON array of objects; missing values and nulls as ``""``."""
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            records = json.loads(stripped)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise TlopsError(
            f"{name} is not JSON lines ({error.msg}, line {error.lineno}); write one JSON object per line"
        ) from None
    if not records:
        raise TlopsError(f'{name} is empty; write one JSON object per line, e.g. {{"text": ..., "label": ...}}')
    if not all(isinstance(record, dict) for record in records):
        raise TlopsError(f"{name} holds JSON values that are not objects; write one object per line")
    columns = list(dict.fromkeys(key for record in records for key in record))
    return pd.DataFrame(
        {column: [_string(record.get(column)) for record in records] for column in columns}, dtype=object
    )


def _read_parquet(data: bytes, name: str) -> pd.DataFrame:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow ships with the project's environment
        raise TlopsError(f"{name}: reading parquet needs pyarrow; pip install pyarrow, or convert it to CSV") from None
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as error:  # pyarrow raises its own error types for damaged files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TlopsError(f"{name} is not a readable parquet file ({reason}); fix or re-export the file") from None
    frame = table.to_pandas()
    strings = {column: [_string(value) for value in frame[column].tolist()] for column in frame.columns}
    return pd.DataFrame(strings, dtype=object)


def _string(value: object) -> str:
    """A cell as a string: ``None`` and NaN as ``""``, whole floats without ``.0`` (labels 1.0 read back as 1)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def header_columns(head: bytes, name: str) -> list[str]:
    """The column names of a CSV, TSV or JSON-lines table from its first bytes (for detection; no data read).

    Returns:
        The names, or ``[]`` when the first bytes do not hold a whole header.
    """
    try:
        text = decode_text(head).text
    except BinaryText:
        return []
    lower = PurePosixPath(name).name.lower()
    first = next((line for line in text.splitlines() if line.strip()), "")
    if lower.endswith((".jsonl", ".json")):
        try:
            record = json.loads(first)
        except json.JSONDecodeError:
            return []
        if isinstance(record, list) and record and isinstance(record[0], dict):
            record = record[0]
        return list(record) if isinstance(record, dict) else []
    separator = "\t" if lower.endswith(".tsv") else ","
    return next(csv.reader([first], delimiter=separator), [])
