"""Detection export parsers on tiny files: exact boxes for COCO, Pascal VOC (1-based), YOLO (normalised), KITTI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from images import write_tree
from refusals import one_line
from tlops.data.detection.boxes import check_boxes, relative_bin, size_bin
from tlops.data.detection.coco import parse_coco
from tlops.data.detection.exports import parse_export
from tlops.data.detection.kitti import parse_kitti
from tlops.data.detection.manifest import format_boxes, parse_boxes
from tlops.data.detection.records import RawBox, split_of
from tlops.data.detection.voc import parse_voc
from tlops.data.detection.yolo import parse_yolo
from tlops.data.sources import list_tree
from tlops.errors import TlopsError

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


def _listing(root: Path, files: dict[str, bytes | str]) -> list:
    return list_tree(str(write_tree(root, files)))


def _boxes(parsed, relpath: str) -> list[RawBox]:
    return next(image for image in parsed.images if image.relpath == relpath).boxes


def test_coco_boxes_splits_negatives_and_refusals(tmp_path: Path) -> None:
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
            {"id": 2, "file_name": "b.png", "width": 100, "height": 80},
            {"id": 3, "file_name": "gone.png"},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [10, 20, 30, 40]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [0, 0, 5, 5]},
            {"id": 3, "image_id": 9, "category_id": 1, "bbox": [0, 0, 5, 5]},
        ],
        "categories": CATEGORIES,
    }
    files = {"valid/_annotations.coco.json": json.dumps(coco), "valid/images/a.png": "x", "valid/b.png": "x"}
    files["valid/stray.png"] = "x"

    parsed = parse_coco(_listing(tmp_path, files))

    assert [(i.relpath, i.split, i.size) for i in parsed.images] == [
        ("valid/b.png", "val", (100, 80)),
        ("valid/images/a.png", "val", (100, 80)),
    ]
    assert _boxes(parsed, "valid/images/a.png") == [RawBox("dog", (10.0, 20.0, 40.0, 60.0))]
    assert _boxes(parsed, "valid/b.png") == []  # an image without annotations: a negative
    a = next(i for i in parsed.images if i.relpath == "valid/images/a.png")
    assert any("unknown category id 7" in reason for reason in a.quarantined)
    reasons = {q["path"]: q["reason"] for q in parsed.quarantined if q["path"] != "valid/_annotations.coco.json"}
    assert "not named by any COCO annotation file" in reasons["valid/stray.png"]
    listed = [q["reason"] for q in parsed.quarantined if q["path"] == "valid/_annotations.coco.json"]
    assert any("'gone.png' is named but missing" in r for r in listed)
    assert any("image id 9" in r for r in listed)


def test_coco_official_layout_and_empty_file(tmp_path: Path) -> None:
    coco = {"images": [{"id": 1, "file_name": "1.jpg"}], "annotations": [], "categories": CATEGORIES}
    files = {"annotations/instances_train2017.json": json.dumps(coco), "train2017/1.jpg": "x"}
    files["annotations/instances_val2017.json"] = ""

    parsed = parse_coco(_listing(tmp_path, files))

    assert [(i.relpath, i.split) for i in parsed.images] == [("train2017/1.jpg", "train")]
    assert parsed.quarantined == [
        {"path": "annotations/instances_val2017.json", "reason": "empty annotation file: nothing read from it"}
    ]


def test_voc_corners_made_zero_based(tmp_path: Path) -> None:
    xml = (
        "<annotation><filename>0001.jpg</filename><size><width>50</width><height>60</height></size>"
        "<object><name>car</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>40</xmax><ymax>60</ymax></bndbox></object>"
        "<object><name>car</name><bndbox><xmin>a</xmin></bndbox></object></annotation>"
    )
    files = {"Annotations/0001.xml": xml, "JPEGImages/0001.jpg": "x", "JPEGImages/0002.jpg": "x"}

    parsed = parse_voc(_listing(tmp_path, files))

    [image] = parsed.images
    assert (image.relpath, image.size, image.boxes) == (
        "JPEGImages/0001.jpg",
        (50, 60),
        [RawBox("car", (10.0, 20.0, 40.0, 60.0))],
    )
    assert image.quarantined == ["object 2 ('car') has a bndbox without numeric corners: dropped"]
    assert parsed.quarantined[0]["path"] == "JPEGImages/0002.jpg"


def test_yolo_normalised_boxes_names_negatives_and_orphans(tmp_path: Path) -> None:
    files = {
        "data.yaml": "train: images/train\nval: images/val\nnames: {0: cat, 1: dog}\n",
        "images/train/a.png": "x",
        "labels/train/a.txt": "1 0.5 0.5 0.2 0.4\n5 0.5 0.5 0.1 0.1\n0 0.1 0.1 0.3 0.1 0.2 0.3\n",
        "images/val/b.png": "x",
        "labels/val/b.txt": "",
        "images/val/c.png": "x",
        "labels/val/orphan.txt": "0 0.5 0.5 0.1 0.1\n",
    }

    parsed = parse_yolo(_listing(tmp_path, files))

    assert [(i.relpath, i.split) for i in parsed.images] == [
        ("images/train/a.png", "train"),
        ("images/val/b.png", "val"),
        ("images/val/c.png", "val"),
    ]
    a = parsed.images[0]
    assert a.boxes[0] == RawBox("dog", pytest.approx((0.4, 0.3, 0.6, 0.7)), normalised=True)
    assert a.boxes[1] == RawBox("cat", pytest.approx((0.1, 0.1, 0.3, 0.3)), normalised=True)  # a polygon's box
    assert a.quarantined == ["labels/train/a.txt line 2: unknown class id 5 (the names list has 2): dropped"]
    assert parsed.images[1].boxes == parsed.images[2].boxes == []  # empty label file, no label file: negatives
    [orphan] = parsed.quarantined
    assert orphan["path"] == "labels/val/orphan.txt" and "label file without its image" in orphan["reason"]
    checked = check_boxes(a.boxes[:1], 100, 50)
    assert checked.boxes == [("dog", [40.0, 15.0, 60.0, 35.0])]


def test_yolo_roboflow_layout_without_names(tmp_path: Path) -> None:
    files = {"train/images/a.jpg": "x", "train/labels/a.txt": "3 0.5 0.5 1 1\n", "test/images/b.jpg": "x"}

    parsed = parse_yolo(_listing(tmp_path, files))

    assert [(i.split, i.boxes) for i in parsed.images] == [
        ("test", []),
        ("train", [RawBox("3", (0.0, 0.0, 1.0, 1.0), normalised=True)]),
    ]


def test_kitti_skips_dont_care(tmp_path: Path) -> None:
    files = {
        "training/image_2/000001.png": "x",
        "training/label_2/000001.txt": "Car 0.0 0 -1.5 10.5 20 110.25 80 1 1 1 1 1 1 0\nDontCare -1 -1 -10 1 2 3 4\n",
        "training/label_2/000009.txt": "Car 0 0 0 1 2 3 4\n",
        "testing/image_2/000002.png": "x",
    }

    parsed = parse_kitti(_listing(tmp_path, files))

    [image] = parsed.images
    assert image.boxes == [RawBox("Car", (10.5, 20.0, 110.25, 80.0))]
    assert {q["path"] for q in parsed.quarantined} == {"training/label_2/000009.txt", "testing/image_2/000002.png"}


def test_boxes_clipped_or_dropped() -> None:
    raw = [
        RawBox("a", (10, 10, 10, 20)),  # zero width
        RawBox("a", (30, 10, 20, 20)),  # negative width
        RawBox("b", (-5, 90, 20, 120)),  # partly outside: clipped
        RawBox("c", (200, 10, 220, 20)),  # entirely outside
        RawBox("d", (1, 2, 3, 4)),
    ]

    checked = check_boxes(raw, 100, 100)

    assert checked.boxes == [("b", [0.0, 90.0, 20.0, 100.0]), ("d", [1.0, 2.0, 3.0, 4.0])]
    assert checked.clipped == 1
    assert [r.split(" of ")[1].split(" ")[0] for r in checked.dropped] == ["'a'", "'a'", "'c'"]
    assert "zero or negative area" in checked.dropped[0] and "entirely outside the 100x100 image" in checked.dropped[2]


def test_box_size_bins() -> None:
    assert [size_bin([0, 0, 31, 31]), size_bin([0, 0, 32, 32]), size_bin([0, 0, 96, 96])] == [
        "small",
        "medium",
        "large",
    ]
    assert relative_bin([0, 0, 10, 10], 100, 100) == "10%-25%" and relative_bin([0, 0, 1, 1], 100, 100) == "0%-5%"


def test_parse_boxes_round_trips() -> None:
    boxes = [("cat", [1.0, 2.5, 3.0, 4.0]), ("NA", [0.0, 0.0, 1.0, 1.0])]

    assert parse_boxes(format_boxes(boxes)) == boxes
    assert parse_boxes("[]") == []


def test_split_names() -> None:
    assert [split_of(p) for p in ("train/a.png", "x/valid/images/a.png", "images/val2017/a.png", "a.png")] == [
        "train",
        "val",
        "val",
        None,
    ]


def test_mixed_formats_refused(tmp_path: Path) -> None:
    coco = {"images": [], "annotations": [], "categories": []}
    files = {"_annotations.coco.json": json.dumps(coco), "images/a.png": "x", "labels/a.txt": "0 0.5 0.5 0.1 0.1\n"}

    with pytest.raises(TlopsError) as error:
        parse_export(_listing(tmp_path, files), "data")

    one_line(error, "mixes object-detection formats", "COCO (_annotations.coco.json)", "YOLO", "keep one format")
