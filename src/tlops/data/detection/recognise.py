"""Whether a source is an object-detection export, from its listing (the task registry's ``--task auto``)."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from tlops.data.archives import ArchiveLimits
from tlops.data.detection.sniff import detection_format
from tlops.data.layouts import list_without_junk
from tlops.data.sources import open_source
from tlops.errors import TlopsError
from tlops.io.storage import S3Client, is_s3_uri


def recognises(source: str, s3: S3Client | None = None, limits: ArchiveLimits | None = None) -> bool:
    """Whether ``source`` (a folder, s3:// prefix or archive) holds a COCO, Pascal VOC, YOLO or KITTI export.

    Only the listing and a few heads of annotation files are read (an archive is extracted into a temporary
    folder). A source that is missing or cannot be listed is not recognised (the task that reads it says why).
    """
    if not is_s3_uri(source) and not Path(source).exists():
        return False
    try:
        with open_source(source, s3, limits=limits) as opened:
            if opened.csv is not None:
                return False
            listing, _skipped = list_without_junk(opened.root, s3)
            return detection_format(listing, s3) is not None
    except (TlopsError, OSError, tarfile.TarError, zipfile.BadZipFile):
        return False
