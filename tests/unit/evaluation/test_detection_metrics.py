import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from tlops.errors import TlopsError
from tlops.evaluation.detection_metrics import (
    detection_metrics,
    manifest_ground_truth,
    map50,
    paired_bootstrap_map_difference,
    predict_detections,
)
from tlops.evaluation.detection_plots import detection_examples_figure, pr_curves_figure
from tlops.train.detection_data import DetectionDataset, collate_detections

CLASSES = ["cat", "dog"]
CAT, DOG = 0, 1
BOX = [10.0, 10.0, 50.0, 50.0]  # 40 x 40: a COCO "medium" box
OTHER = [60.0, 60.0, 100.0, 100.0]


def truth(*items):
    return {"boxes": np.array([b for b, _ in items]).reshape(-1, 4), "labels": np.array([c for _, c in items])}


def found(*items):
    return {
        "boxes": np.array([b for b, _, _ in items]).reshape(-1, 4),
        "labels": np.array([c for _, c, _ in items], dtype=np.int64),
        "scores": np.array([s for _, _, s in items], dtype=np.float64),
    }


def test_perfect_predictions_score_one():
    gt = [truth((BOX, CAT)), truth((OTHER, DOG), (BOX, CAT))]
    result = detection_metrics(gt, [found((BOX, CAT, 0.9)), found((OTHER, DOG, 0.8), (BOX, CAT, 0.7))], CLASSES)
    for name in ("map", "map50", "map75", "map_medium", "mar_100", "f1"):
        assert result.metrics[name] == pytest.approx(1.0), name
    assert "map_small" not in result.metrics and "map_large" not in result.metrics  # COCO's -1: no such boxes
    assert result.per_class_ap == pytest.approx({"cat": 1.0, "dog": 1.0})
    recall, precision = result.pr_curves["cat"]
    assert len(recall) == 101 and np.all(precision == 1.0)
    assert result.image_f1.tolist() == [1.0, 1.0]


def test_one_missed_box():
    gt = [truth((BOX, CAT), (OTHER, CAT))]
    result = detection_metrics(gt, [found((BOX, CAT, 0.9))], CLASSES)
    assert result.metrics["map50"] == pytest.approx(51 / 101)  # precision 1 up to recall 0.5 of COCO's 101 points
    assert result.metrics["recall"] == 0.5 and result.metrics["precision"] == 1.0
    assert result.image_f1.tolist() == pytest.approx([2 / 3])
    assert list(result.per_class_ap) == ["cat"]  # dog has no ground truth: no AP


def test_a_wrong_class_is_a_miss_and_a_false_positive():
    result = detection_metrics([truth((BOX, CAT))], [found((BOX, DOG, 0.9))], CLASSES)
    assert result.metrics["map"] == 0.0 and result.metrics["map50"] == 0.0
    assert result.image_f1.tolist() == [0.0]


@pytest.mark.parametrize(("false_score", "expected_map50"), [(0.5, 1.0), (0.95, 0.5)])
def test_a_false_positive_on_a_negative_image(false_score, expected_map50):
    gt = [truth((BOX, CAT)), truth(), truth()]
    predictions = [found((BOX, CAT, 0.9)), found((OTHER, CAT, false_score)), found()]
    result = detection_metrics(gt, predictions, CLASSES)
    assert result.metrics["map50"] == pytest.approx(expected_map50)
    assert result.image_f1.tolist() == [1.0, 0.0, 1.0]  # the negative image without detections scores 1


def test_the_gate_statistic_ignores_detections_below_the_threshold():
    result = detection_metrics([truth()], [found((BOX, CAT, 0.2))], CLASSES, score_threshold=0.3)
    assert result.image_f1.tolist() == [1.0]
    assert "map" not in result.metrics  # no ground truth at all: COCO computes nothing


def _random_case(rng, images=25, noise=6.0):
    gt, predictions = [], []
    for _ in range(images):
        count = int(rng.integers(0, 4))
        corners = rng.uniform(0, 150, size=(count, 2))
        boxes = np.hstack([corners, corners + rng.uniform(10, 80, size=(count, 2))])
        labels = rng.integers(0, 3, size=count)
        gt.append({"boxes": boxes, "labels": labels})
        extra = int(rng.integers(0, 3))
        corners = rng.uniform(0, 150, size=(extra, 2))
        fakes = np.hstack([corners, corners + rng.uniform(10, 80, size=(extra, 2))])
        predicted = np.vstack([boxes + rng.normal(0, noise, size=boxes.shape), fakes])
        predicted[:, 2:] = np.maximum(predicted[:, 2:], predicted[:, :2] + 1)
        predictions.append(
            {
                "boxes": predicted,
                "labels": np.concatenate([labels, rng.integers(0, 3, size=extra)]),
                "scores": np.round(rng.uniform(0, 1, size=count + extra), 1),  # ties, as COCO must break them
            }
        )
    return gt, predictions


def test_the_fast_map50_equals_cocoeval():
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    for _ in range(3):
        gt, predictions = _random_case(rng)
        expected = detection_metrics(gt, predictions, classes).metrics["map50"]
        assert 0.2 < expected < 0.9  # neither trivial case
        assert map50(gt, predictions, classes) == pytest.approx(expected, abs=1e-12)


def test_paired_bootstrap_is_deterministic_and_paired():
    rng = np.random.default_rng(1)
    classes = ["a", "b", "c"]
    gt, worse = _random_case(rng, noise=12.0)
    better = [{"boxes": t["boxes"], "labels": t["labels"], "scores": np.ones(len(t["labels"]))} for t in gt]
    first = paired_bootstrap_map_difference(gt, better, worse, classes, resamples=200, seed=3)
    assert first == paired_bootstrap_map_difference(gt, better, worse, classes, resamples=200, seed=3)
    assert first != paired_bootstrap_map_difference(gt, better, worse, classes, resamples=200, seed=4)
    assert first.observed == pytest.approx(1.0 - map50(gt, worse, classes))
    assert 0 < first.low <= first.mean <= first.high
    same = paired_bootstrap_map_difference(gt, worse, worse, classes, resamples=50, seed=0)
    assert (same.low, same.mean, same.high) == (0.0, 0.0, 0.0)


def test_mismatched_inputs_are_refused():
    with pytest.raises(TlopsError, match="1 images with predictions for 2 images"):
        detection_metrics([truth(), truth()], [found()], CLASSES)
    with pytest.raises(TlopsError, match=r"outside 0\.\.1"):
        detection_metrics([truth()], [found((BOX, 2, 0.5))], CLASSES)


class _HalfImageBox(nn.Module):
    """A stand-in detector: one box over the top-left quarter of each input image, class 2 (dog)."""

    def forward(self, images):
        return [
            {
                "boxes": torch.tensor([[0.0, 0.0, image.shape[-1] / 2, image.shape[-2] / 2]]),
                "labels": torch.tensor([2]),
                "scores": torch.tensor([0.9]),
            }
            for image in images
        ]


def test_predictions_come_back_in_the_manifests_pixels(tmp_path):
    Image.fromarray(np.zeros((100, 300, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    boxes = json.dumps([{"label": "dog", "box": [0.0, 0.0, 150.0, 50.0]}])
    rows = pd.DataFrame({"uri": [str(tmp_path / "a.png")] * 2, "width": [300] * 2, "height": [100] * 2,
                         "boxes": [boxes, "[]"]})  # fmt: skip
    loader = DataLoader(DetectionDataset(rows, CLASSES, max_side=120), batch_size=2, collate_fn=collate_detections)
    predictions = predict_detections(_HalfImageBox(), loader, torch.device("cpu"))
    assert [p["image_id"] for p in predictions] == [0, 1]
    assert predictions[0]["boxes"][0].tolist() == pytest.approx([0.0, 0.0, 150.0, 50.0])
    assert predictions[0]["labels"].tolist() == [DOG]
    gt = manifest_ground_truth(rows, CLASSES)
    result = detection_metrics(gt, predictions, CLASSES)
    assert result.metrics["map50"] == pytest.approx(1.0) and result.image_f1.tolist() == [1.0, 0.0]
    figure = detection_examples_figure([np.zeros((100, 300, 3), np.uint8)] * 2, gt, predictions, CLASSES)
    assert len(figure.axes[0].patches) == 2 and len(figure.axes[1].patches) == 1  # truth + prediction; prediction
    curves = pr_curves_figure(result)
    assert [line.get_label() for line in curves.axes[0].get_lines()] == ["dog (AP50 1.000)"]
