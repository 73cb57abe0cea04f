"""KITTI exports: ``label_2/<name>.txt`` beside ``image_2/<name>.png``, one object a line.

A line is ``type truncated occluded alpha x1 y1 x2 y2 h w l x y z ry``: the corners are 0-based pixels.
``DontCare`` regions are no objects and are skipped. An empty label file is a negative; an image without one,
or a label file without its image, is quarantined.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from tlops.data.detection.records import AnnotatedImage, ParsedExport, RawBox, is_image_name, split_of
from tlops.data.sources import TreeFile
from tlops.io.storage import S3Client, read_bytes

FORMAT = "KITTI"
DONT_CARE = "dontcare"
NO_LABELS = "no label_2/ file for it: not used (KITTI's testing images have none)"
NO_IMAGE = "label file without its image (image_2/<name>.png): not used"


def parse_kitti(tree: list[TreeFile], s3: S3Client | None = None) -> ParsedExport:
    """Parse a KITTI export: every ``label_2/*.txt`` with its ``image_2/`` image.

    Returns:
        The labelled images with their boxes; unpaired images and label files and malformed lines, quarantined.
    """
    images = {
        (PurePosixPath(f.relpath).parent.parent, PurePosixPath(f.relpath).stem): f
        for f in tree
        if is_image_name(f.relpath) and PurePosixPath(f.relpath).parent.name.lower() == "image_2"
    }
    parsed = ParsedExport(FORMAT, [])
    paired = set()
    for file in tree:
        path = PurePosixPath(file.relpath)
        if path.suffix.lower() != ".txt" or path.parent.name.lower() != "label_2":
            continue
        found = images.get((path.parent.parent, path.stem))
        if found is None:
            parsed.quarantined.append({"path": file.relpath, "reason": NO_IMAGE})
            continue
        paired.add(found.relpath)
        image = AnnotatedImage(found.uri, found.relpath, split_of(found.relpath))
        for number, line in enumerate(read_bytes(file.uri, s3).decode("utf-8", "replace").splitlines(), start=1):
            _add_line(line, number, file.relpath, image)
        parsed.images.append(image)
    parsed.quarantined += [{"path": f.relpath, "reason": NO_LABELS} for f in images.values() if f.relpath not in paired]
    parsed.images.sort(key=lambda image: image.relpath)
    return parsed


def _add_line(line: str, number: int, relpath: str, image: AnnotatedImage) -> None:
    fields = line.split()
    if not fields or fields[0].lower() == DONT_CARE:
        return
    if len(fields) < 8:
        image.quarantined.append(f"{relpath} line {number} has {len(fields)} fields, not 15: dropped")
        return
    try:
        x1, y1, x2, y2 = (float(v) for v in fields[4:8])
    except ValueError:
        image.quarantined.append(f"{relpath} line {number} has no numeric corners in fields 5-8: dropped")
        return
    image.boxes.append(RawBox(fields[0], (x1, y1, x2, y2)))
