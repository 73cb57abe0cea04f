"""The preprocessing that belongs to a set of pretrained weights, and the image transforms built from it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig:
    """Preprocessing that belongs to a set of pretrained weights.

    Attributes:
        input_size: Side of the square crop fed to the network.
        mean: Per-channel mean for normalization (RGB, 0..1 scale).
        std: Per-channel standard deviation for normalization.
        interpolation: Resize interpolation, ``bilinear`` or ``bicubic``.
        crop_pct: Center-crop fraction at evaluation (resize to ``input_size / crop_pct`` first).
    """

    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    @classmethod
    def from_dict(cls, values: dict) -> DataConfig:
        """Rebuild from ``dataclasses.asdict`` output read back from JSON (lists become tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def eval_transform(config: DataConfig) -> transforms.Compose:
    """Resize, center-crop and scale to 0..1 floats (normalization lives in the model)."""
    resize = round(config.input_size / config.crop_pct)
    return transforms.Compose(
        [
            transforms.ToImage(),
            transforms.Resize(resize, interpolation=InterpolationMode(config.interpolation), antialias=True),
            transforms.CenterCrop(config.input_size),
            transforms.ToDtype(torch.float32, scale=True),
        ]
    )


def train_transform(
    config: DataConfig, hflip: bool = False, crop_scale: float = 0.6, trivial_augment: bool = False
) -> transforms.Compose:
    """Augmentation for fine-tuning: a random resized crop, and flips or TrivialAugmentWide when asked for.

    Args:
        config: The weights' preprocessing (input size, interpolation).
        hflip: Random horizontal flips (only for images whose mirror image has the same class).
        crop_scale: Smallest share of the image area a crop keeps (a floor keeps small objects in view).
        trivial_augment: One random photometric or geometric operation per image (TrivialAugmentWide).
    """
    interpolation = InterpolationMode(config.interpolation)
    steps: list[transforms.Transform] = [
        transforms.ToImage(),
        transforms.RandomResizedCrop(config.input_size, scale=(crop_scale, 1.0), interpolation=interpolation),
    ]
    if hflip:
        steps.append(transforms.RandomHorizontalFlip())
    if trivial_augment:
        steps.append(transforms.TrivialAugmentWide(interpolation=interpolation))
    steps.append(transforms.ToDtype(torch.float32, scale=True))
    return transforms.Compose(steps)
