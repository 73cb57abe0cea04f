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
    if found[0][0] == "COCO":  # recognised by a file's name alone: refuse an export whose JSON files are all empty
        _check_not_empty_annotations([f for f in tree if f.relpath.lower().endswith(".json")], source, s3)
    return PARSERS[found[0][0]](tree, s3)


def _check_not_empty_annotations(tree: list[TreeFile], source: str, s3: S3Client | None) -> None:
    """Refuse an export whose annotation files are all empty, naming one (rather than finding no format)."""
    files = [f for f in tree if f.relpath.lower().endswith((".json", ".xml"))]
    empty = [f for f in files if not read_head(f.uri, 64, s3).strip()]
    for file in empty[:1] if len(empty) == len(files) else []:
        raise TlopsError(
            f"the annotation file {file.relpath} of {source!r} is empty and no other annotations were found; "
            "export the dataset again (COCO, Pascal VOC, YOLO or KITTI)"
        )
