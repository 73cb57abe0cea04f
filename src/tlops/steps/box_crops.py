"""The labelled boxes of a detection dataset as a classification manifest: how candidates are ranked for a detector.

Training a detector per candidate backbone is far too dear for selection. What a backbone must do well inside a
detector is tell the object classes apart from their pixels, so each box is cropped (with some context), and the
crops are scored exactly as images are: cached features, a cross-validated linear probe, kNN, LogME, and the
raw-pixel baseline as the no-transfer row. bench/README.md says how well this ranking predicts the detector's mAP.

Crops are content-addressed files (the image's sha256 and the box), written once into the runtime's cache, so the
feature cache keys them like images and a re-run reads them back.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tlops.data.images import decode_image

CONTEXT = 0.1
"""Share of the box's width and height added on each side: a little background, as the detector's RoI sees."""
MAX_CROPS_PER_CLASS = 300
"""Crops kept per class and split (a seeded sample): ranking needs hundreds, not every box of a large set."""
MIN_SIDE = 4
"""Boxes narrower or lower than this many pixels are not cropped (nothing a classifier could read)."""
MAX_SIDE = 256
"""Crops are shrunk to at most this side (the backbones resize them further)."""
CROPS_DIR = "box-crops"


def box_crop_manifest(manifest: pd.DataFrame, folder: Path, seed: int = 0) -> pd.DataFrame:
    """One row per kept box: its crop file (written once), its class as ``label``, its image's split.

    Args:
        manifest: A localized detection manifest (``local_path``, ``sha256``, ``relpath``, ``split``, ``boxes``).
        folder: Where the crop files are kept (content-addressed; shared between runs).
        seed: Seed of the per-class sample.

    Returns:
        The crop manifest (``uri``, ``relpath``, ``sha256``, ``label``, ``split``, ``local_path``), in a stable
        order: by split, then the image's place in the manifest, then the box's.
    """
    candidates: list[dict[str, object]] = []
    for position, row in enumerate(manifest.itertuples(index=False)):
        for index, entry in enumerate(json.loads(row.boxes or "[]")):
            x1, y1, x2, y2 = (float(v) for v in entry["box"])
            if x2 - x1 < MIN_SIDE or y2 - y1 < MIN_SIDE:
                continue
            key = hashlib.sha256(f"{row.sha256}:{x1:.2f},{y1:.2f},{x2:.2f},{y2:.2f}".encode()).hexdigest()
            candidates.append(
                {
                    "uri": row.local_path,
                    "relpath": f"{row.relpath}#box={index}",
                    "sha256": key,
                    "label": str(entry["label"]),
                    "split": row.split,
                    "box": (x1, y1, x2, y2),
                    "order": (position, index),
                }
            )
    kept = _sample(candidates, seed)
    for crop in kept:
        crop["local_path"] = str(_write_crop(str(crop["uri"]), crop["box"], folder, str(crop["sha256"])))
        crop["uri"] = crop["local_path"]
    columns = ["uri", "relpath", "sha256", "label", "split", "local_path"]
    return pd.DataFrame([{name: crop[name] for name in columns} for crop in kept], columns=columns)


def _sample(candidates: list[dict[str, object]], seed: int) -> list[dict[str, object]]:
    """At most :data:`MAX_CROPS_PER_CLASS` boxes of each class and split, drawn with ``seed``; in a stable order."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[dict[str, object]]] = {}
    for crop in candidates:
        groups.setdefault((str(crop["split"]), str(crop["label"])), []).append(crop)
    kept = []
    for _, group in sorted(groups.items()):
        many = len(group) > MAX_CROPS_PER_CLASS
        kept += [group[i] for i in (rng.permutation(len(group))[:MAX_CROPS_PER_CLASS] if many else range(len(group)))]
    return sorted(kept, key=lambda crop: (str(crop["split"]), crop["order"]))


def _write_crop(image_path: str, box: object, folder: Path, key: str) -> Path:
    """The crop of ``box`` (with :data:`CONTEXT`) from the image, written as PNG under its key unless it exists."""
    target = folder / key[:2] / f"{key}.png"
    if target.is_file():
        return target
    image = decode_image(Path(image_path).read_bytes()).image
    x1, y1, x2, y2 = box  # type: ignore[misc]
    pad_x, pad_y = (x2 - x1) * CONTEXT, (y2 - y1) * CONTEXT
    region = (
        max(0, int(x1 - pad_x)),
        max(0, int(y1 - pad_y)),
        min(image.width, int(np.ceil(x2 + pad_x))),
        min(image.height, int(np.ceil(y2 + pad_y))),
    )
    crop = image.crop(region)
    crop.thumbnail((MAX_SIDE, MAX_SIDE))
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_suffix(".tmp")
    crop.save(scratch, format="PNG")
    scratch.replace(target)
    return target
