"""Text data preparation from the real S3: a CSV object and a prefix of class folders, detected and prepared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tlops.data.config import SplitConfig
from tlops.data.prepare import read_manifest
from tlops.data.text.detect import text_layout_kind
from tlops.data.text.prepare import prepare_text_data


@pytest.mark.integration
def test_text_csv_and_folder_from_s3(s3_env: Any, s3_client: Any, bucket: str, tmp_path: Path) -> None:
    from tlops.io.storage import make_s3_client

    rows = "".join(f'"{label} text, number {i}",{label}\n' for label in ("ham", "spam") for i in range(4))
    s3_client.put_object(Bucket=bucket, Key="text/table.csv", Body=("text,label\n" + rows).encode())
    for label in ("ham", "spam"):
        for i in range(3):
            body = f"{label} document {i}\r\n".encode("utf-16" if i == 0 else "utf-8")
            s3_client.put_object(Bucket=bucket, Key=f"text/docs/{label}/{i}.txt", Body=body)
    s3 = make_s3_client()

    table = f"s3://{bucket}/text/table.csv"
    assert text_layout_kind(table, s3) == "text-table"
    prepared = prepare_text_data(table, tmp_path / "table", SplitConfig(workers=2), s3)
    manifest = read_manifest(tmp_path / "table")
    assert prepared.layout == "text-table" and len(manifest) == 8
    assert manifest["uri"].str.startswith(f"{table}#row=").all() and "ham text, number 0" in set(manifest["text"])

    folder = f"s3://{bucket}/text/docs/"
    assert text_layout_kind(folder, s3) == "text-folder"
    prepared = prepare_text_data(folder, tmp_path / "docs", SplitConfig(workers=2), s3)
    manifest = read_manifest(tmp_path / "docs")
    assert prepared.details["encodings"] == {"utf-16": 2, "utf-8": 4}
    assert set(manifest["text"]) == {f"{label} document {i}" for label in ("ham", "spam") for i in range(3)}
