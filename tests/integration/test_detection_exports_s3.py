"""An object-detection export (Pascal VOC) under an S3 prefix is refused, not trained, in one line naming it."""

from __future__ import annotations

from typing import Any

import pytest

from detection_exports import EXPORTS
from refusals import one_line as _one_line
from tlops.data.prepare import check_dataset
from tlops.errors import TlopsError


@pytest.mark.integration
def test_detection_export_on_s3_refused(s3_env: Any, s3_client: Any, bucket: str) -> None:
    from tlops.io.storage import make_s3_client

    files, _needles = EXPORTS["voc"]
    for relpath, content in files.items():
        s3_client.put_object(Bucket=bucket, Key=f"voc/{relpath}", Body=content)

    with pytest.raises(TlopsError) as error:
        check_dataset(f"s3://{bucket}/voc", s3=make_s3_client())

    _one_line(error, "Pascal VOC", "Annotations/000.xml", "--task object-detection")
