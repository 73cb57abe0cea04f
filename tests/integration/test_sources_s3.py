"""Dataset sources on a real S3 (SeaweedFS): a zip and a pre-split tar.gz prepared from a bucket, an empty bucket
refused in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from archives import archive_folder as _archive_folder
from images import write_images as _write
from refusals import one_line as _one_line
from splits import PRESPLIT
from splits import split_config as _config
from tlops.data.prepare import (
    check_dataset,
    prepare_data,
)
from tlops.errors import TlopsError

# --- archives: zip-slip and friends -----------------------------------------------------------------------------


@pytest.mark.integration
def test_archives_on_s3(s3_env: Any, s3_client: Any, bucket: str, tmp_path: Path) -> None:
    from tlops.io.storage import make_s3_client

    imagefolder = _write(tmp_path / "imagefolder", {"daisy": 4, "rose": 4})
    presplit = _write(tmp_path / "presplit", PRESPLIT)
    s3_client.upload_file(str(_archive_folder(imagefolder, tmp_path / "a.zip", "data")), bucket, "in/flowers.zip")
    s3_client.upload_file(str(_archive_folder(presplit, tmp_path / "b.tar.gz")), bucket, "in/pets.tar.gz")
    s3 = make_s3_client()

    flowers = prepare_data(f"s3://{bucket}/in/flowers.zip", tmp_path / "flowers", _config(), s3)
    pets = prepare_data(f"s3://{bucket}/in/pets.tar.gz", tmp_path / "pets", _config(), s3)

    assert flowers.digest == prepare_data(str(imagefolder), tmp_path / "flowers-local", _config()).digest
    assert pets.layout == "pre-split"
    assert pets.digest == prepare_data(str(presplit), tmp_path / "pets-local", _config()).digest
    assert len(check_dataset(f"s3://{bucket}/in/flowers.zip", s3=s3).files) == 8
    with pytest.raises(TlopsError, match="does not exist"):
        check_dataset(f"s3://{bucket}/in/missing.zip", s3=s3)


@pytest.mark.integration
@pytest.mark.parametrize("prefix", ["", "/datasets/x"])
def test_empty_bucket(s3_env: Any, bucket: str, tmp_path: Path, prefix: str) -> None:
    from tlops.io.storage import make_s3_client

    uri = f"s3://{bucket}{prefix}"
    with pytest.raises(TlopsError) as error:
        check_dataset(uri, s3=make_s3_client())
    _one_line(error, "no images found", repr(uri))
    with pytest.raises(TlopsError, match="no images found"):
        prepare_data(uri, tmp_path / "out", _config(), make_s3_client())
    assert not (tmp_path / "out").exists()
