"""Which export a listing holds, parsed by its format's parser; several formats in one dataset are refused."""

from __future__ import annotations

from tlops.data.detection.coco import parse_coco
from tlops.data.detection.kitti import parse_kitti
from tlops.data.detection.records import ParsedExport
from tlops.data.detection.sniff import detection_formats
from tlops.data.detection.voc import parse_voc
from tlops.data.detection.yolo import parse_yolo
from tlops.data.sources import TreeFile
from tlops.errors import TlopsError
from tlops.io.storage import S3Client, read_head

PARSERS = {"COCO": parse_coco, "Pascal VOC": parse_voc, "YOLO": parse_yolo, "KITTI": parse_kitti}


def parse_export(tree: list[TreeFile], source: str, s3: S3Client | None = None) -> ParsedExport:
    """Recognise the one detection format of a listing and parse it.

    Raises:
        TlopsError: when no format is recognised, or more than one is (naming both and the fix).
    """
    found = detection_formats(tree, s3)
    if not found:
        _check_not_empty_annotations(tree, source, s3)
        shown = ", ".join(f.relpath for f in tree[:3]) + (", ..." if len(tree) > 3 else "")
        raise TlopsError(
            f"no object-detection annotations found in {source!r} ({f'it holds {shown}' if tree else 'it is empty'}); "
            "give a COCO (.json), Pascal VOC (.xml), YOLO (images/ + labels/*.txt) or KITTI (label_2/) export"
        )
    if len(found) > 1:
        (first, first_at), (second, second_at) = found[:2]
        raise TlopsError(
            f"{source!r} mixes object-detection formats: {first} ({first_at}) and {second} ({second_at}); keep one "
            "format per dataset: remove the other's annotation files, or prepare each as its own dataset"
        )
    return PARSERS[found[0][0]](tree, s3)


def _check_not_empty_annotations(tree: list[TreeFile], source: str, s3: S3Client | None) -> None:
    """Refuse an export whose only annotation files are empty, naming one (rather than finding no format)."""
    for file in tree:
        if file.relpath.lower().endswith((".json", ".xml")) and not read_head(file.uri, 64, s3).strip():
            raise TlopsError(
                f"the annotation file {file.relpath} of {source!r} is empty and no other annotations were found; "
                "export the dataset again (COCO, Pascal VOC, YOLO or KITTI)"
            )
