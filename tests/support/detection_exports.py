"""Object-detection exports as files: COCO (Roboflow and official), Pascal VOC, YOLO (two layouts), KITTI.

Each is ``{relative path: content}``; :data:`EXPORTS` pairs each with what the refusal must name.
"""

from __future__ import annotations

import json

from images import image_bytes

COCO = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": [{"id": 1, "name": "cat"}]}

VOC = "<annotation><filename>a.png</filename><object><name>cat</name><bndbox><xmin>1</xmin></bndbox></object>"

VOC += "</annotation>"


def export_images(*folders: str, n: int = 4) -> dict[str, bytes | str]:
    """``n`` distinct small PNGs in each of ``folders``."""
    return {f"{folder}/{i:03d}.png": image_bytes(hash((folder, i)) % 2**32) for folder in folders for i in range(n)}


def coco_export() -> dict[str, bytes | str]:
    """A Roboflow COCO export: images and an annotation file in each split folder, no class folders."""
    annotations = {f"{split}/_annotations.coco.json": json.dumps(COCO) for split in ("train", "test")}
    return export_images("train", "test") | annotations


def big_coco() -> str:
    """A COCO file whose images list runs past the sniffed head, so only its name and first key show."""
    images = [{"id": i, "file_name": f"{i:06d}.png", "width": 640, "height": 480} for i in range(3000)]
    return json.dumps({"images": images, "annotations": [], "categories": []})


EXPORTS = {
    "coco": (coco_export(), ["COCO", "_annotations.coco.json"]),
    "coco-official": (
        export_images("train2017", "val2017") | {"annotations/instances_train2017.json": big_coco()},
        ["COCO", "annotations/instances_train2017.json"],
    ),
    "voc": (
        export_images("JPEGImages", "extra") | {"Annotations/000.xml": VOC, "Annotations/001.xml": VOC},
        ["Pascal VOC", "Annotations/000.xml"],
    ),
    "yolo-roboflow": (
        export_images("train/images", "valid/images")
        | {"train/labels/000.txt": "0 0.5 0.5 0.2 0.2\n"}
        | {"data.yaml": "train: ../train/images\nnc: 1\nnames: ['cat']\n"},
        ["YOLO", "data.yaml"],
    ),
    "yolo-ultralytics": (
        export_images("images/train", "images/val") | {"labels/train/000.txt": "0 0.5 0.5 0.2 0.2\n"},
        ["YOLO", "labels/train/*.txt"],
    ),
    "kitti": (
        export_images("training/image_2", "testing/image_2")
        | {"training/label_2/000.txt": "Car 0 0 0 1 2 3 4 1 1 1 1 1 1 0\n"},
        ["KITTI", "training/label_2/"],
    ),
}
