"""Object-detection exports (COCO, Pascal VOC, YOLO, KITTI) and split-named class folders are refused, not trained.

A detection export holds images in ``train/`` and ``test/`` folders; read as an ImageFolder it would train a
train-vs-test classifier without a word.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlops.cli import main
from tlops.data.prepare import SplitConfig, check_dataset, prepare_data
from tlops.errors import TlopsError

COCO = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": [{"id": 1, "name": "cat"}]}

VOC = "<annotation><filename>a.png</filename><object><name>cat</name><bndbox><xmin>1</xmin></bndbox></object>"

VOC += "</annotation>"


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _tree(root: Path, files: dict[str, bytes | str]) -> Path:
    for relpath, content in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


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


@pytest.mark.parametrize("kind", sorted(EXPORTS))
def test_detection_export_refused(tmp_path: Path, kind: str) -> None:
    files, needles = EXPORTS[kind]
    data = _tree(tmp_path / "data", files)

    with pytest.raises(TlopsError) as error:
        check_dataset(str(data))

    _one_line(error, *needles, "object-detection export", "object detection is not supported yet", "<class>/<image>")
    with pytest.raises(TlopsError, match="object-detection export"):
        prepare_data(str(data), tmp_path / "out", SplitConfig(workers=1))
    assert not (tmp_path / "out").exists()


def test_detection_export_in_an_archive_refused(tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for relpath, content in _coco_export().items():
            zipped.writestr(f"export/{relpath}", content)

    with pytest.raises(TlopsError) as error:
        check_dataset(str(archive))

    _one_line(error, "COCO", "export/test/_annotations.coco.json", "not supported yet")


def test_split_named_folders_of_images_refused(tmp_path: Path) -> None:
    data = _tree(tmp_path / "data", _images("train", "valid", "test"))

    with pytest.raises(TlopsError) as error:
        check_dataset(str(data))

    _one_line(error, "named like splits (test/, train/, valid/)", "train/<class>/<image>")


def test_cli_refuses_detection_export_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _tree(tmp_path / "data", _coco_export())

    status = main(["prepare-data", "--data", str(data), "--output", str(tmp_path / "out")])

    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tlops: error: ") and "COCO" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_classification_data_with_other_json_and_xml_is_read(tmp_path: Path) -> None:
    """Metadata files that are no annotations (and a class named test beside others) do not trigger a refusal."""
    files = _images("cat", "dog", "test") | {
        "info.json": json.dumps({"images": 12, "source": "camera"}),
        "cat/notes.xml": "<notes><annotation>none</annotation></notes>",
        "settings.yaml": "names: [a, b]\n",
        "dog/labels.txt": "dog\n",
    }
    data = _tree(tmp_path / "data", files)

    layout = check_dataset(str(data))

    assert {f.label for f in layout.files} >= {"cat", "dog", "test"}
