"""Read the data once from S3: the preflight and prepare-data share one pass through the cache, and an object
overwritten in place is read again.

Counts come from :func:`tlops.data.images.decode_count` (every ``decode_image`` call in this process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from decodes import IMAGES
from decodes import decodes as _decodes
from decodes import imagefolder as _imagefolder
from decodes import png16 as _image_bytes
from splits import split_config as _config
from tlops.data.prepare import (
    PreparedCache,
    preflight_dataset,
    prepare_data,
)


@pytest.mark.integration
def test_s3_prepared_once_and_again_after_an_overwrite(s3_client: Any, bucket: str, tmp_path: Path) -> None:
    folder = _imagefolder(tmp_path / "data")
    for path in sorted(folder.rglob("*.png")):
        s3_client.put_object(Bucket=bucket, Key=f"ds/{path.relative_to(folder).as_posix()}", Body=path.read_bytes())
    source = f"s3://{bucket}/ds"
    cache = PreparedCache(tmp_path / "cache")
    checked, decodes = _decodes(preflight_dataset, source, _config(), s3_client, cache)
    assert decodes == IMAGES
    prepared, decodes = _decodes(prepare_data, source, tmp_path / "one", _config(), s3_client, cache)
    assert decodes == 0 and prepared.digest == checked.digest
    s3_client.put_object(Bucket=bucket, Key="ds/cat/00.png", Body=_image_bytes(1000, size=16))  # same size
    changed, decodes = _decodes(prepare_data, source, tmp_path / "two", _config(), s3_client, cache)
    assert decodes == IMAGES and changed.digest != prepared.digest
