"""Images and boxes of an object-detection manifest, as the torchvision detectors take them.

One item is one manifest row (one image): the picture decoded the one way every step decodes images
(:func:`tlops.data.images.decode_image`), scaled down so that its longer side is at most ``max_side`` (aspect
kept, never scaled up), as a float tensor ``(3, H, W)`` in 0..1, with its target: ``boxes`` (float32 ``(N, 4)``,
``x1, y1, x2, y2`` in pixels of that tensor), ``labels`` (int64, class id + 1: 0 is the detectors' background),
``image_id`` (the row's position in the dataset) and ``orig_size`` (the manifest's ``height, width``, so that
predictions can be mapped back to the original pixels). Training items are flipped left-right at random (the
boxes with them), drawing from torch's RNG: the training loop seeds it and a checkpoint saves it, so a resumed
run flips the same images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from tlops.data.detection.manifest import parse_boxes
from tlops.data.images import decode_image
from tlops.errors import TlopsError
from tlops.io.storage import is_s3_uri

Target = dict[str, Any]


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(width, height)`` with the longer side at most ``max_side``, aspect kept (never scaled up)."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def scale_boxes(boxes: torch.Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> torch.Tensor:
    """Boxes ``(N, 4)`` in pixels of an image of ``from_size`` (width, height) mapped to ``to_size``."""
    factors = torch.tensor(
        [to_size[0] / from_size[0], to_size[1] / from_size[1]] * 2, dtype=torch.float32, device=boxes.device
    )
    return boxes * factors


def flip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Boxes ``(N, 4)`` of an image ``width`` pixels wide, mirrored left-right with it."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


class DetectionDataset(Dataset):
    """The images and boxes of manifest rows (one split), read from local files.

    Args:
        rows: Manifest rows (``uri``, ``width``, ``height``, ``boxes``); the image is read from ``local_path`` when
            the manifest was localized (:func:`tlops.data.loading.localize`), else from ``uri``.
        classes: Class names; class id ``i`` is ``classes[i]`` and the detector's label ``i + 1``.
        max_side: Longest side of the images handed to the detector (larger ones are scaled down).
        train: Flip left-right at random (augmentation).
        flip_probability: Chance of a flip for a training image.

    Raises:
        TlopsError: for a box whose class is not in ``classes``, or an s3:// image that was not localized.
    """

    def __init__(
        self,
        rows: pd.DataFrame,
        classes: list[str],
        max_side: int,
        *,
        train: bool = False,
        flip_probability: float = 0.5,
    ) -> None:
        index = {name: i for i, name in enumerate(classes)}
        paths = rows["local_path"] if "local_path" in rows.columns else rows["uri"]
        self.paths = [str(p) for p in paths]
        for path in self.paths:
            if is_s3_uri(path):
                raise TlopsError(f"{path} is on S3: localize the manifest first (tlops.data.loading.localize)")
        self.sizes = [(int(w), int(h)) for w, h in zip(rows["width"], rows["height"], strict=True)]
        self.annotations: list[tuple[torch.Tensor, torch.Tensor]] = []
        for path, text in zip(self.paths, rows["boxes"], strict=True):
            pairs = parse_boxes(text)
            unknown = sorted({label for label, _ in pairs if label not in index})
            if unknown:
                raise TlopsError(
                    f"{path} has boxes of {', '.join(map(repr, unknown))}, not among the classes "
                    f"{', '.join(classes)}: prepare the data again"
                )
            boxes = torch.tensor([box for _, box in pairs], dtype=torch.float32).reshape(-1, 4)
            labels = torch.tensor([index[label] + 1 for label, _ in pairs], dtype=torch.int64)
            self.annotations.append((boxes, labels))
        self.classes = list(classes)
        self.max_side = max_side
        self.train = train
        self.flip_probability = flip_probability

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        picture = decode_image(Path(self.paths[index]).read_bytes()).image
        width, height = self.sizes[index]
        size = scaled_size(picture.width, picture.height, self.max_side)
        if size != picture.size:
            picture = picture.resize(size, Image.Resampling.BILINEAR)
        image = F.to_dtype(F.pil_to_tensor(picture), torch.float32, scale=True)
        boxes, labels = self.annotations[index]
        boxes = scale_boxes(boxes, (width, height), size)
        if self.train and float(torch.rand(())) < self.flip_probability:
            image = image.flip(-1)
            boxes = flip_boxes(boxes, size[0])
        target = {
            "boxes": boxes,
            "labels": labels.clone(),
            "image_id": index,
            "orig_size": torch.tensor([height, width]),
        }
        return image, target


def collate_detections(batch: list[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """A batch as the detectors take it: a list of images (of their own sizes) and a list of targets."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)
