"""Pascal VOC XML exports: one ``<annotation>`` file per image, ``<object>`` with ``<name>`` and ``<bndbox>``.

VOC's corners are 1-based pixel indices, ``xmax``/``ymax`` inclusive: 1 is taken from ``xmin`` and ``ymin`` to
make them 0-based corners (``xmax``/``ymax`` are then the exclusive ends). The image is the one ``<filename>``
names, beside the XML or in ``JPEGImages/`` or ``images/`` beside its folder; failing that the image of the same
stem there. An XML without objects is a negative; an image no XML names is quarantined.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import PurePosixPath

from tlops.data.detection.records import (
    AnnotatedImage,
    ParsedExport,
    RawBox,
    by_relpath,
    is_image_name,
    split_of,
    unused_images,
)
from tlops.data.sources import TreeFile
from tlops.io.storage import S3Client, read_bytes

FORMAT = "Pascal VOC"
NOT_ANNOTATED = "no Pascal VOC annotation file names it: not used (add its XML, or remove it)"
_IMAGE_FOLDERS = ("", "JPEGImages", "images", "Images")


def parse_voc(tree: list[TreeFile], s3: S3Client | None = None) -> ParsedExport:
    """Parse every Pascal VOC annotation file of a listing (XML files of another kind are ignored).

    Returns:
        The images with their boxes (1-based corners made 0-based); unreadable files, missing images and
        images no XML names, quarantined.
    """
    files = by_relpath(tree)
    stems = {
        (PurePosixPath(f.relpath).parent, PurePosixPath(f.relpath).stem): f for f in tree if is_image_name(f.relpath)
    }
    parsed = ParsedExport(FORMAT, [])
    seen: dict[str, AnnotatedImage] = {}
    for file in tree:
        if not file.relpath.lower().endswith(".xml"):
            continue
        data = read_bytes(file.uri, s3)
        if not data.strip():
            parsed.quarantined.append({"path": file.relpath, "reason": "empty annotation file: nothing read from it"})
            continue
        try:
            root = ElementTree.fromstring(data)
        except ElementTree.ParseError as error:
            parsed.quarantined.append({"path": file.relpath, "reason": f"not valid XML: {error}"})
            continue
        if root.tag != "annotation":
            continue
        found = _find_image(file.relpath, (root.findtext("filename") or "").strip(), files, stems)
        if found is None:
            named = (root.findtext("filename") or "").strip() or PurePosixPath(file.relpath).stem
            parsed.quarantined.append({"path": file.relpath, "reason": f"its image {named!r} is missing"})
            continue
        image = AnnotatedImage(found.uri, found.relpath, split_of(found.relpath) or split_of(file.relpath))
        image.size = _size(root)
        for number, element in enumerate(root.iter("object"), start=1):
            _add_object(element, number, image)
        seen.setdefault(found.relpath, image)
    parsed.images = sorted(seen.values(), key=lambda image: image.relpath)
    parsed.quarantined += unused_images(tree, set(seen), NOT_ANNOTATED)
    return parsed


def _add_object(element: ElementTree.Element, number: int, image: AnnotatedImage) -> None:
    name = (element.findtext("name") or "").strip()
    box = element.find("bndbox")
    if not name or box is None:
        image.quarantined.append(f"object {number} has no name or no bndbox: dropped")
        return
    try:
        xmin, ymin, xmax, ymax = (float(box.findtext(tag) or "") for tag in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError:
        image.quarantined.append(f"object {number} ({name!r}) has a bndbox without numeric corners: dropped")
        return
    image.boxes.append(RawBox(name, (xmin - 1, ymin - 1, xmax, ymax)))


def _size(root: ElementTree.Element) -> tuple[int, int] | None:
    try:
        width, height = int(float(root.findtext("size/width") or "")), int(float(root.findtext("size/height") or ""))
    except ValueError:
        return None
    return (width, height) if width > 0 and height > 0 else None


def _find_image(
    relpath: str, filename: str, files: dict[str, TreeFile], stems: dict[tuple[PurePosixPath, str], TreeFile]
) -> TreeFile | None:
    folder = PurePosixPath(relpath).parent
    bases = [folder / sub if sub else folder for sub in _IMAGE_FOLDERS]
    bases += [folder.parent / sub if sub else folder.parent for sub in _IMAGE_FOLDERS]
    if filename:
        for base in bases:
            candidate = (base / PurePosixPath(filename.replace("\\", "/")).name).as_posix()
            if candidate in files:
                return files[candidate]
    stem = PurePosixPath(filename).stem if filename else PurePosixPath(relpath).stem
    return next((stems[base, stem] for base in bases if (base, stem) in stems), None)
