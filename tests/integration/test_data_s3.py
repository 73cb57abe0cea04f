"""prepare-data: listing, decode-checking, quarantine, de-duplication, the stratified split, manifest and digest."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tlops.data.demo import DIGIT_NAMES, write_digits_imagefolder
from tlops.data.prepare import (
    MANIFEST_FILE,
    SplitConfig,
    prepare_data,
)
from tlops.errors import TlopsError


def _image_bytes(seed: int, fmt: str = "PNG", size: int = 16) -> bytes:
    """Bytes of a small random RGB image, distinct for each seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def _config(seed: int = 0) -> SplitConfig:
    return SplitConfig(seed=seed, workers=2)


# --- manifest, summary and report -------------------------------------------------------------------------------


# --- the split --------------------------------------------------------------------------------------------------


# --- the digest -------------------------------------------------------------------------------------------------


# --- quarantine, duplicates and what is listed ------------------------------------------------------------------


# --- errors -----------------------------------------------------------------------------------------------------


# --- S3 ---------------------------------------------------------------------------------------------------------


def _upload_folder(s3_client: Any, bucket: str, folder: Path, prefix: str) -> int:
    count = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3_client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
            count += 1
    return count


@pytest.mark.integration
def test_prepare_from_s3(s3_env: Any, s3_client: Any, bucket: str, tmp_path: Path) -> None:
    from tlops.io.storage import make_s3_client

    local = write_digits_imagefolder(tmp_path / "data", per_class=4)
    uploaded = _upload_folder(s3_client, bucket, local, "datasets/digits")
    assert uploaded == 40
    # A sibling prefix sharing the name's start must not be read; a file outside any class folder is quarantined.
    s3_client.put_object(Bucket=bucket, Key="datasets/digits2/zero/x.png", Body=_image_bytes(1))
    s3_client.put_object(Bucket=bucket, Key="datasets/digits/root.png", Body=_image_bytes(2))
    s3_client.put_object(Bucket=bucket, Key="datasets/digits/one/bad.png", Body=b"garbage")

    s3 = make_s3_client()
    result = prepare_data(f"s3://{bucket}/datasets/digits/", tmp_path / "out", _config(), s3)

    manifest = pd.read_csv(tmp_path / "out" / MANIFEST_FILE, dtype={"label": str})
    assert len(manifest) == 40
    assert manifest["uri"].str.startswith(f"s3://{bucket}/datasets/digits/").all()
    assert (manifest["uri"] == f"s3://{bucket}/datasets/digits/" + manifest["relpath"]).all()
    assert result.classes == sorted(DIGIT_NAMES)
    assert sum(result.num_images.values()) == 40
    reasons = {q["path"]: q["reason"] for q in result.quarantined}
    assert sorted(reasons) == ["one/bad.png", "root.png"]
    assert "not an image" in reasons["one/bad.png"]
    assert "outside" in reasons["root.png"] and "class" in reasons["root.png"]

    # The same files on disk give the same split and digest: the digest does not depend on where data lives.
    (local / "one" / "bad.png").write_bytes(b"garbage")
    local_result = prepare_data(str(local), tmp_path / "local-out", _config())
    assert local_result.digest == result.digest
    assert local_result.counts == result.counts


@pytest.mark.integration
def test_s3_missing_bucket(s3_env: Any, tmp_path: Path) -> None:
    from tlops.io.storage import make_s3_client

    name = f"no-such-bucket-{time.time_ns()}"
    with pytest.raises(TlopsError, match="does not exist") as info:
        prepare_data(f"s3://{name}/data", tmp_path / "out", _config(), make_s3_client())
    assert repr(name) in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_s3_wrong_credentials_fail_fast(
    s3_env: Any, s3_client: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlops.io.storage import make_s3_client

    s3_client.put_object(Bucket=bucket, Key="data/a/0.png", Body=_image_bytes(0))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    start = time.monotonic()
    with pytest.raises(TlopsError) as info:
        prepare_data(f"s3://{bucket}/data", tmp_path / "out", _config(), make_s3_client())
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert "refused access" in message
    assert bucket in message
    assert "AWS_SECRET_ACCESS_KEY" in message
