"""A tiny torchvision Faster R-CNN and images of bright squares on noise, for fast detection tests on a CPU.

It has the interface of the project's detectors (train mode: a loss dict; eval mode: boxes, labels, scores) at a
thousandth of the cost of torchvision's smallest ready-made one (a step of two 128-pixel images: ~0.1 s).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead


def _stage(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, 2, 1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU())


def tiny_detector(num_classes: int, seed: int = 0) -> tuple[FasterRCNN, list[nn.Module]]:
    """A Faster R-CNN with a four-stage backbone body, and the body's stages (input first)."""
    torch.manual_seed(seed)
    body = nn.Sequential(_stage(3, 8), _stage(8, 16), _stage(16, 32), _stage(32, 32))
    backbone = BackboneWithFPN(body, {"2": "0", "3": "1"}, [32, 32], 32)
    anchors = AnchorGenerator(((16, 32, 64),) * 3, ((0.5, 1.0, 2.0),) * 3)
    model = FasterRCNN(
        backbone,
        min_size=128,
        max_size=128,
        rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(32 * 7 * 7, 64),
        box_predictor=FastRCNNPredictor(64, num_classes + 1),
        rpn_batch_size_per_image=64,
        box_batch_size_per_image=64,
        rpn_pre_nms_top_n_train=200,
        rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=100,
    )
    return model, list(model.backbone.body.children())


def square_images(folder: Path, count: int = 4, size: int = 128, seed: int = 0) -> pd.DataFrame:
    """A manifest of ``count`` noise images with one bright square each (class ``square``), split ``train``."""
    rng = np.random.default_rng(seed)
    rows = []
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        picture = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
        side = int(rng.integers(size // 4, size // 2))
        x, y = (int(v) for v in rng.integers(0, size - side, size=2))
        picture[y : y + side, x : x + side] = 255
        path = folder / f"{index}.png"
        Image.fromarray(picture).save(path)
        boxes = [{"label": "square", "box": [float(x), float(y), float(x + side), float(y + side)]}]
        rows.append({"uri": str(path), "width": size, "height": size, "boxes": json.dumps(boxes), "split": "train"})
    return pd.DataFrame(rows)
