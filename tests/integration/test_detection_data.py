"""Object-detection preparation on folders, an archive and an S3 prefix: splits, negatives, quarantine, refusals."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from images import image_bytes, write_tree
from refusals import one_line
from tlops.data.config import SplitConfig
from tlops.data.detection.demo import DEMO_CLASSES, write_detection_demo
from tlops.data.detection.manifest import MANIFEST_COLUMNS, parse_boxes
from tlops.data.detection.prepare import prepare_detection_data
from tlops.data.detection.recognise import recognises
from tlops.data.prepare import read_manifest
from tlops.errors import TlopsError

CONFIG = SplitConfig(workers=2)
SIZE = 40


def _voc(name: str, objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    parts = "".join(
        f"<object><name>{label}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
        f"<ymax>{y2}</ymax></bndbox></object>"
        for label, (x1, y1, x2, y2) in objects
    )
    size = f"<size><width>{SIZE}</width><height>{SIZE}</height></size>"
    return f"<annotation><filename>{name}</filename>{size}{parts}</annotation>"


def _voc_export(n: int = 12) -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {}
    for i in range(n):
        objects = [] if i % 6 == 5 else [("cat" if i % 2 else "dog", (3, 3, 20, 20))]
        files[f"JPEGImages/{i:03d}.png"] = image_bytes(i, size=SIZE)
        files[f"Annotations/{i:03d}.xml"] = _voc(f"{i:03d}.png", objects)
    return files


def test_demo_round_trips_pre_split(tmp_path: Path) -> None:
    demo = write_detection_demo(tmp_path / "demo", images=12, image_size=48, seed=1)
    truth = {}
    for split in ("train", "valid", "test"):
        payload = json.loads((demo / split / "_annotations.coco.json").read_text())
        truth[split] = payload

    prepared = prepare_detection_data(str(demo), tmp_path / "out", CONFIG)

    manifest = read_manifest(tmp_path / "out")
    assert prepared.task == "object-detection" and prepared.layout == "pre-split"
    assert prepared.classes == sorted(DEMO_CLASSES) and tuple(manifest.columns) == MANIFEST_COLUMNS
    assert prepared.details["format"] == "COCO"
    assert prepared.details["images"] == {"train": 8, "val": 2, "test": 2}
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        assert sum(prepared.counts[split].values()) == len(truth[name]["annotations"])
        rows = manifest[manifest["split"] == split]
        assert set(rows["relpath"].str.split("/").str[0]) == {name}
        assert prepared.details["negatives"][split] == sum(parse_boxes(b) == [] for b in rows["boxes"])
    first = truth["train"]["annotations"][0]
    x, y, w, h = first["bbox"]
    image = next(i for i in truth["train"]["images"] if i["id"] == first["image_id"])
    row = manifest[manifest["relpath"] == f"train/{image['file_name']}"].iloc[0]
    assert [float(x), float(y), float(x + w), float(y + h)] in [box for _label, box in parse_boxes(row["boxes"])]
    assert (row["width"], row["height"]) == (48, 48)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Box sizes" in report and "negatives (no object)" in report and "- format: COCO" in report


def test_voc_split_here_is_deterministic_and_keeps_negatives(tmp_path: Path) -> None:
    data = write_tree(tmp_path / "voc", _voc_export())

    first = prepare_detection_data(str(data), tmp_path / "a", CONFIG)
    again = prepare_detection_data(str(data), tmp_path / "b", CONFIG)
    other_seed = prepare_detection_data(str(data), tmp_path / "c", SplitConfig(workers=2, seed=7))

    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert first.layout == "detection-export" and first.digest == again.digest
    assert a["split"].tolist() == b["split"].tolist() and other_seed.digest != first.digest
    assert set(a["split"]) == {"train", "val", "test"}
    assert sorted(a["label"].unique()) == ["", "cat", "dog"]  # each stratum: a class, or negatives
    assert sum(first.details["negatives"].values()) == 2 and first.details["format"] == "Pascal VOC"
    row = a[a["relpath"] == "JPEGImages/000.png"].iloc[0]
    assert parse_boxes(row["boxes"]) == [("dog", [2.0, 2.0, 20.0, 20.0])]  # 1-based corners made 0-based


def test_bad_boxes_and_images_quarantined(tmp_path: Path) -> None:
    files = _voc_export()
    files["Annotations/000.xml"] = _voc(
        "000.png", [("dog", (3, 3, 20, 20)), ("dog", (10, 10, 9, 30)), ("dog", (30, 30, 60, 60))]
    )
    files["Annotations/001.xml"] = _voc("001.png", [("cat", (100, 100, 120, 120)), ("cat", (5, 5, 9, 9))])
    files["JPEGImages/002.png"] = b"not an image"
    files["Annotations/050.xml"] = _voc("050.png", [("cat", (1, 1, 5, 5))])
    files["JPEGImages/003.png"] = files["JPEGImages/001.png"]  # an exact copy, with the same boxes
    files["Annotations/003.xml"] = _voc("003.png", [("cat", (5, 5, 9, 9))])
    data = write_tree(tmp_path / "voc", files)

    prepared = prepare_detection_data(str(data), tmp_path / "out", CONFIG)

    reasons = {(q["path"], q["reason"].split(":")[0]) for q in prepared.quarantined}
    assert ("JPEGImages/000.png", "box [9, 9, 9, 30] of 'dog' has zero or negative area") in reasons
    assert ("JPEGImages/001.png", "box [99, 99, 120, 120] of 'cat' lies entirely outside the 40x40 image") in reasons
    assert any(p == "JPEGImages/002.png" and r.startswith("not an image") for p, r in reasons)
    assert ("Annotations/050.xml", "its image '050.png' is missing") in reasons
    assert prepared.details["boxes_clipped"] == 1 and prepared.details["boxes_dropped"] == 2
    manifest = read_manifest(tmp_path / "out")
    row = manifest[manifest["relpath"] == "JPEGImages/000.png"].iloc[0]
    assert parse_boxes(row["boxes"]) == [("dog", [2.0, 2.0, 20.0, 20.0]), ("dog", [29.0, 29.0, 40.0, 40.0])]
    assert prepared.duplicates_removed == 1 and prepared.duplicates[0]["removed"] == ["JPEGImages/003.png"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "zero or negative area" in report and "## Quarantine reasons" in report


def test_nothing_usable_refused_and_nothing_written(tmp_path: Path) -> None:
    coco = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    empty = write_tree(tmp_path / "empty", {"_annotations.coco.json": "", "a.png": image_bytes(0)})
    negatives = write_tree(tmp_path / "neg", {"_annotations.coco.json": json.dumps(coco), "a.png": image_bytes(0)})
    broken = write_tree(tmp_path / "broken", {"_annotations.coco.json": json.dumps(coco), "a.png": b"junk"})
    mixed = write_tree(
        tmp_path / "mixed", _voc_export(2) | {"images/a.png": image_bytes(1), "labels/a.txt": "0 0.5 0.5 0.1 0.1\n"}
    )

    for data, needles in (
        (empty, ["annotation file _annotations.coco.json", "is empty", "export the dataset again"]),
        (negatives, ["no usable box", "all 1 images are negatives"]),
        (broken, ["none of the 1 annotated images", "not an image"]),
        (mixed, ["mixes object-detection formats", "Pascal VOC", "YOLO"]),
        (tmp_path / "missing", ["does not exist"]),
    ):
        with pytest.raises(TlopsError) as error:
            prepare_detection_data(str(data), tmp_path / "out", CONFIG)
        one_line(error, *needles)
        assert not (tmp_path / "out").exists()


def test_archive_source_and_recognition(tmp_path: Path) -> None:
    demo = write_detection_demo(tmp_path / "demo", images=6, image_size=40)
    archive = tmp_path / "demo.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(demo.rglob("*")):
            if path.is_file():
                zipped.write(path, f"export/{path.relative_to(demo).as_posix()}")
    shutil.rmtree(demo / "valid")  # the folder, not the archive, now lacks val: carved out of train

    prepared = prepare_detection_data(str(archive), tmp_path / "out", CONFIG)
    carved = prepare_detection_data(str(demo), tmp_path / "carved", CONFIG)

    manifest = read_manifest(tmp_path / "out")
    assert prepared.layout == "pre-split" and manifest["uri"].str.startswith("files/").all()
    assert carved.details["images"]["val"] >= 1 and carved.details["images"]["test"] == 1
    assert recognises(str(archive)) and recognises(str(demo))
    assert not recognises(str(write_tree(tmp_path / "cls", {"cat/a.png": image_bytes(0)})))
    assert not recognises(str(tmp_path / "nowhere"))


@pytest.mark.integration
def test_yolo_export_from_s3(s3_env: Any, s3_client: Any, bucket: str, tmp_path: Path) -> None:
    from tlops.io.storage import make_s3_client

    files: dict[str, bytes | str] = {"data.yaml": "train: images/train\nval: images/val\nnames: [cat, dog]\n"}
    for i, split in enumerate(["train"] * 4 + ["val", "test"]):
        files[f"images/{split}/{i}.png"] = image_bytes(i, size=SIZE)
        files[f"labels/{split}/{i}.txt"] = f"{i % 2} 0.5 0.5 0.5 0.25\n"
    for relpath, content in files.items():
        s3_client.put_object(Bucket=bucket, Key=f"yolo/{relpath}", Body=content)
    s3 = make_s3_client()

    assert recognises(f"s3://{bucket}/yolo", s3)
    prepared = prepare_detection_data(f"s3://{bucket}/yolo", tmp_path / "out", CONFIG, s3)

    manifest = read_manifest(tmp_path / "out")
    assert prepared.details["format"] == "YOLO" and prepared.classes == ["cat", "dog"]
    assert prepared.details["images"] == {"train": 4, "val": 1, "test": 1}
    row = manifest[manifest["relpath"] == "images/train/1.png"].iloc[0]
    assert row["uri"] == f"s3://{bucket}/yolo/images/train/1.png"
    assert parse_boxes(row["boxes"]) == [("dog", [10.0, 15.0, 30.0, 25.0])]
