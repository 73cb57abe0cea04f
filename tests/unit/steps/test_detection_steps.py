"""The steps' side of object detection: crops for selection, the strategy and input size, the gate, the summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tlops.promotion.detection_gate import compare_detections
from tlops.promotion.gate import GateConfig
from tlops.settings import SettingError
from tlops.steps.box_crops import MAX_CROPS_PER_CLASS, MIN_SIDE, box_crop_manifest
from tlops.steps.fine_tune_detection import (
    FROZEN_BELOW_BOXES,
    check_detection_settings,
    decide_detection_strategy,
    detector_image_size,
)
from tlops.steps.gate_report import gate_report
from tlops.steps.outputs import BackboneScore, Comparison
from tlops.steps.select_backbone import _ship_baseline
from tlops.steps.summary import _test_line
from tlops.train.config import TrainConfig


def _manifest(rows: list[tuple[str, str, list[tuple[str, list[float]]]]], size: int = 64) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "uri": f"/x/{name}.png",
                "relpath": f"{name}.png",
                "sha256": name * 4,
                "label": boxes[0][0] if boxes else "",
                "split": split,
                "width": size,
                "height": size,
                "boxes": json.dumps([{"label": label, "box": box} for label, box in boxes]),
            }
            for name, split, boxes in rows
        ]
    )


def test_box_crops_are_content_addressed_files_labelled_by_their_class(tmp_path: Path) -> None:
    picture = np.zeros((64, 64, 3), dtype=np.uint8)
    picture[10:30, 10:30] = (255, 0, 0)  # a red square where the box is
    (tmp_path / "a.png").write_bytes(b"")
    Image.fromarray(picture).save(tmp_path / "a.png")
    manifest = _manifest(
        [("a", "train", [("square", [10, 10, 30, 30]), ("dot", [40, 40, 40 + MIN_SIDE - 1, 50])])]
    ).assign(local_path=str(tmp_path / "a.png"))

    crops = box_crop_manifest(manifest, tmp_path / "crops")

    (row,) = crops.to_dict("records")  # the box narrower than MIN_SIDE is not cropped
    assert row["label"] == "square" and row["split"] == "train" and row["relpath"] == "a.png#box=0"
    crop = np.asarray(Image.open(row["local_path"]))
    assert crop.shape == (24, 24, 3)  # 20 pixels and a tenth of context on each side
    assert (crop[2:22, 2:22] == (255, 0, 0)).all() and (crop[0, 0] == 0).all()
    assert Path(row["local_path"]).name == f"{row['sha256']}.png"
    again = box_crop_manifest(manifest, tmp_path / "crops")  # the same key, the file is not written again
    assert again.equals(crops)


def test_box_crops_keep_a_seeded_sample_of_each_class_and_split(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    boxes = [("square", [i % 50, 0, i % 50 + 8, 8 + i // 50]) for i in range(MAX_CROPS_PER_CLASS + 20)]
    manifest = _manifest([("a", "train", boxes), ("b", "test", boxes[:3])]).assign(local_path=str(tmp_path / "a.png"))

    crops = box_crop_manifest(manifest, tmp_path / "crops", seed=1)

    assert (crops["split"] == "train").sum() == MAX_CROPS_PER_CLASS and (crops["split"] == "test").sum() == 3
    assert list(crops["split"]) == sorted(crops["split"])  # a stable order: split, then the image's boxes
    assert not crops.equals(box_crop_manifest(manifest, tmp_path / "crops", seed=2))


def test_auto_keeps_the_backbone_frozen_with_few_boxes_and_trains_its_top_blocks_otherwise() -> None:
    few = _manifest([("a", "train", [("cat", [0, 0, 5, 5])] * (FROZEN_BELOW_BOXES - 1) + [("dog", [0, 0, 5, 5])] * 50)])
    many = _manifest([("a", "train", [("cat", [0, 0, 5, 5])] * FROZEN_BELOW_BOXES + [("dog", [0, 0, 5, 5])] * 50)])

    strategy, reasons = decide_detection_strategy(TrainConfig(), few)
    assert strategy == "frozen" and f"class 'cat' has {FROZEN_BELOW_BOXES - 1} training boxes" in reasons[0]
    strategy, reasons = decide_detection_strategy(TrainConfig(), many)
    assert strategy == "partial" and "'cat' has 10 training boxes" in reasons[0]
    assert decide_detection_strategy(TrainConfig(strategy="full"), few) == ("lp-ft", ["as requested"])


def test_the_detector_input_is_the_training_images_longest_side_at_most_the_setting() -> None:
    small = _manifest([("a", "train", []), ("b", "test", [])], size=150)
    assert detector_image_size(512, small) == 160  # rounded up to the coarsest stride, never blown up
    assert detector_image_size(128, small) == 128
    assert detector_image_size(512, _manifest([("a", "train", [])], size=20)) == 64


@pytest.mark.parametrize("name", ["mixup", "cutmix", "swa_epochs"])
def test_classification_only_settings_are_refused_for_detection(name: str) -> None:
    config = TrainConfig(**{name: 1 if name == "swa_epochs" else 0.2})
    with pytest.raises(SettingError, match=f"^--{name.replace('_', '-')} applies to image classification only"):
        check_detection_settings(config)
    check_detection_settings(TrainConfig())


def _detections(boxes: list[list[float]], labels: list[int], scores: list[float] | None = None) -> dict:
    found = {"boxes": np.array(boxes, dtype=float).reshape(-1, 4), "labels": np.array(labels, dtype=np.int64)}
    if scores is not None:
        found["scores"] = np.array(scores, dtype=float)
    return found


def _scene(images: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Ground truth of two classes; a challenger that finds every box, a champion that misses class 1."""
    truth, good, poor = [], [], []
    for _ in range(images):
        truth.append(_detections([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1]))
        good.append(_detections([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1], [0.9, 0.9]))
        poor.append(_detections([[0, 0, 10, 10]], [0], [0.9]))
    return truth, good, poor


def test_the_detection_gate_promotes_a_measurably_better_detector_and_keeps_an_equal_one() -> None:
    truth, good, poor = _scene(20)
    config = GateConfig(resamples=200)

    better = compare_detections(truth, good, poor, ["a", "b"], config)
    assert better["promote"] and better["metric"] == "map50"
    assert better["challenger_score"] == pytest.approx(1.0) and better["champion_score"] == pytest.approx(0.5)
    assert better["ci_low"] > 0 and better["checks"] == {"better": True, "classes": True}

    same = compare_detections(truth, good, good, ["a", "b"], config)
    assert not same["promote"] and same["difference"] == 0 and "must lie above the margin" in same["reasons"][0]

    worse = compare_detections(truth, poor, good, ["a", "b"], config)
    assert not worse["promote"] and worse["worst_class"] == "b" and not worse["checks"]["classes"]
    assert "'b': AP50 -1.0000 beyond the allowed drop" in worse["reasons"][1]


def test_the_gate_report_and_summary_speak_of_map() -> None:
    truth, good, poor = _scene(10)
    fields = compare_detections(truth, good, poor, ["a", "b"], GateConfig(resamples=50))
    report = gate_report(Comparison(champion_version=1, **fields))
    assert "promote when mAP50 improves" in report and "| score (map50) | 1.0000 | 0.5000 |" in report
    assert "accuracy" not in report and "McNemar" not in report
    line = _test_line({"test_map50": 0.5, "test_map": 0.25, "test_map75": 0.2, "test_mar_100": 0.4})
    assert line.split() == ["test", "mAP50", "0.5000", "mAP@[.5:.95]", "0.2500", "AP75", "0.2000", "AR@100", "0.4000"]


def test_a_detector_never_ships_the_pixel_baseline() -> None:
    chosen = {"name": "efficientnet_lite0", "probe_accuracy": 0.5, "probe_fold_accuracies": [0.5, 0.5, 0.5]}
    baseline = BackboneScore(
        "pixels", 0.9, 0.01, 0.9, 0.01, 1, 0.0, 0, 0, 0.0, "cpu", 3072, 32, 30, 3, 0.0, 0.0, 0.0, False, "",
        probe_fold_accuracies=[0.9, 0.9, 0.9], task="object-detection",
    )  # fmt: skip
    shipped, why = _ship_baseline(chosen, baseline, ship_baseline=True, strategy="auto")
    assert not shipped and "a detector needs a backbone, so efficientnet_lite0 is kept" in why
    image = BackboneScore(**{**baseline.to_dict(), "task": "image-classification"})
    assert _ship_baseline(chosen, image, ship_baseline=True, strategy="auto")[0]
