import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tlops.errors import TlopsError
from tlops.train.detection_data import (
    DetectionDataset,
    collate_detections,
    flip_boxes,
    scale_boxes,
    scaled_size,
)

CLASSES = ["cat", "dog"]


def _manifest(tmp_path, width=200, height=100, boxes=None):
    picture = np.zeros((height, width, 3), dtype=np.uint8)
    picture[:, : width // 2] = 255  # left half white: shows a flip
    path = tmp_path / "a.png"
    Image.fromarray(picture).save(path)
    boxes = [{"label": "dog", "box": [10.0, 20.0, 50.0, 80.0]}] if boxes is None else boxes
    return pd.DataFrame(
        {"uri": [str(path)], "width": [width], "height": [height], "boxes": [json.dumps(boxes)], "split": ["train"]}
    )


def test_scaled_size_caps_the_longer_side_and_never_enlarges():
    assert scaled_size(200, 100, 100) == (100, 50)
    assert scaled_size(100, 300, 150) == (50, 150)
    assert scaled_size(64, 32, 128) == (64, 32)


def test_box_maths():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 80.0]])
    assert scale_boxes(boxes, (200, 100), (100, 50)).tolist() == [[5.0, 10.0, 25.0, 40.0]]
    assert flip_boxes(boxes, 200).tolist() == [[150.0, 20.0, 190.0, 80.0]]
    assert flip_boxes(flip_boxes(boxes, 200), 200).tolist() == boxes.tolist()


def test_item_is_resized_with_its_boxes(tmp_path):
    image, target = DetectionDataset(_manifest(tmp_path), CLASSES, max_side=100)[0]
    assert image.shape == (3, 50, 100) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[5.0, 10.0, 25.0, 40.0]]
    assert target["labels"].tolist() == [2]  # dog: class id 1, detector label 2
    assert target["image_id"] == 0
    assert target["orig_size"].tolist() == [100, 200]


def test_training_items_flip_image_and_boxes_together(tmp_path):
    dataset = DetectionDataset(_manifest(tmp_path), CLASSES, max_side=100, train=True, flip_probability=1.0)
    image, target = dataset[0]
    assert float(image[:, :, :45].max()) == 0.0 and float(image[:, :, 55:].min()) == 1.0  # white half moved right
    assert target["boxes"].tolist() == [[75.0, 10.0, 95.0, 40.0]]


def test_negative_image_has_empty_targets_and_collate_keeps_lists(tmp_path):
    dataset = DetectionDataset(_manifest(tmp_path, boxes=[]), CLASSES, max_side=64)
    images, targets = collate_detections([dataset[0], dataset[0]])
    assert len(images) == 2 and targets[0]["boxes"].shape == (0, 4) and targets[0]["labels"].shape == (0,)


def test_unknown_class_is_refused(tmp_path):
    with pytest.raises(TlopsError, match="'bird'"):
        DetectionDataset(_manifest(tmp_path, boxes=[{"label": "bird", "box": [0, 0, 1, 1]}]), CLASSES, 64)
