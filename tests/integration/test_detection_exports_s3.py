"""Object-detection exports (COCO, Pascal VOC, YOLO, KITTI) and split-named class folders are refused, not trained.

A detection export holds images in ``train/`` and ``test/`` folders; read as an ImageFolder it would train a
train-vs-test classifier without a word.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tlops.data.prepare import check_dataset
from tlops.errors import TlopsError

COCO = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": [{"id": 1, "name": "cat"}]}

VOC = "<annotation><filename>a.png</filename><object><name>cat</name><bndbox><xmin>1</xmin></bndbox></object>"

VOC += "</annotation>"


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _images(*folders: str, n: int = 4) -> dict[str, bytes | str]:
    return {f"{folder}/{i:03d}.png": _png(hash((folder, i)) % 2**32) for folder in folders for i in range(n)}


def _coco_export() -> dict[str, bytes | str]:
    """A Roboflow COCO export: images and an annotation file in each split folder, no class folders."""
    annotations = {f"{split}/_annotations.coco.json": json.dumps(COCO) for split in ("train", "test")}
    return _images("train", "test") | annotations


def _big_coco() -> str:
    """A COCO file whose images list runs past the sniffed head, so only its name and first key show."""
    images = [{"id": i, "file_name": f"{i:06d}.png", "width": 640, "height": 480} for i in range(3000)]
    return json.dumps({"images": images, "annotations": [], "categories": []})


EXPORTS = {
    "coco": (_coco_export(), ["COCO", "_annotations.coco.json"]),
    "coco-official": (
        _images("train2017", "val2017") | {"annotations/instances_train2017.json": _big_coco()},
        ["COCO", "annotations/instances_train2017.json"],
    ),
    "voc": (
        _images("JPEGImages", "extra") | {"Annotations/000.xml": VOC, "Annotations/001.xml": VOC},
        ["Pascal VOC", "Annotations/000.xml"],
    ),
    "yolo-roboflow": (
        _images("train/images", "valid/images")
        | {"train/labels/000.txt": "0 0.5 0.5 0.2 0.2\n"}
        | {"data.yaml": "train: ../train/images\nnc: 1\nnames: ['cat']\n"},
        ["YOLO", "data.yaml"],
    ),
    "yolo-ultralytics": (
        _images("images/train", "images/val") | {"labels/train/000.txt": "0 0.5 0.5 0.2 0.2\n"},
        ["YOLO", "labels/train/*.txt"],
    ),
    "kitti": (
        _images("training/image_2", "testing/image_2")
        | {"training/label_2/000.txt": "Car 0 0 0 1 2 3 4 1 1 1 1 1 1 0\n"},
        ["KITTI", "training/label_2/"],
    ),
}


def _one_line(error: pytest.ExceptionInfo[TlopsError], *needles: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message


@pytest.mark.integration
def test_detection_export_on_s3_refused(s3_env: Any, s3_client: Any, bucket: str) -> None:
    from tlops.io.storage import make_s3_client

    files, _needles = EXPORTS["voc"]
    for relpath, content in files.items():
        s3_client.put_object(Bucket=bucket, Key=f"voc/{relpath}", Body=content)

    with pytest.raises(TlopsError) as error:
        check_dataset(f"s3://{bucket}/voc", s3=make_s3_client())

    _one_line(error, "Pascal VOC", "Annotations/000.xml", "not supported yet")
