"""Offline object-detection sets for bench/detection_transfer.py, written as Roboflow-style COCO exports.

* ``shapes``: tlops's own demo (:func:`tlops.data.detection.demo.write_detection_demo`: circles, squares and
  triangles drawn on scikit-image's photos), with a seed of its own.
* ``digits``: scikit-learn's 8x8 handwritten digit glyphs of three classes (3, 5 and 8: alike in shape), upscaled
  to 16-56 pixels, coloured and alpha-blended onto crops of scikit-image pictures the demo does not use (a page of
  text, a clock, cells, the Hubble deep field, a retina, a cat, ...); each box is the exact extent of the glyph's ink.
  1-4 glyphs an image (overlaps allowed), about one image in ten without any.

Each set is written once as a *pool* (``WORKDIR/sources/<set>/{train,valid,test}/``); :func:`subset_export` writes
the export a cell trains on: the first ``n`` training images of the pool (nested across sizes), the first ``val``
validation and ``test`` test images (fixed). Every file is deterministic for the seed.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from tlops.data.detection.demo import ANNOTATIONS_FILE, write_detection_demo

SETS = ("shapes", "digits")
SPLITS = ("train", "valid", "test")
DIGITS = (3, 5, 8)
DIGIT_BACKGROUNDS = ("page", "text", "clock", "cell", "hubble_deep_field", "immunohistochemistry", "retina", "cat")
NEGATIVE_SHARE = 0.1


def write_pool(name: str, root: Path, counts: dict[str, int], image_size: int, seed: int) -> Path:
    """Write set ``name``'s pool export (``counts`` images per split) into ``root`` unless it is there already."""
    done = root / "done.json"
    wanted = {"name": name, "counts": counts, "image_size": image_size, "seed": seed}
    if done.exists() and json.loads(done.read_text()) == wanted:
        return root
    shutil.rmtree(root, ignore_errors=True)
    if name == "shapes":
        # the demo splits 70/15/15: write enough images that every split holds what is asked, then trim
        total = max(round(counts["train"] / 0.7), round(counts["valid"] / 0.15), round(counts["test"] / 0.15)) + 2
        write_detection_demo(root, images=total, image_size=image_size, seed=seed)
        for split in SPLITS:
            _trim(root / split, counts[split])
    elif name == "digits":
        write_digits(root, counts, image_size, seed)
    else:
        raise ValueError(f"unknown detection set {name!r}; choose from {', '.join(SETS)}")
    done.write_text(json.dumps(wanted))
    return root


def _trim(folder: Path, count: int) -> None:
    """Keep the first ``count`` images of a COCO split folder (and their boxes)."""
    payload = json.loads((folder / ANNOTATIONS_FILE).read_text())
    if len(payload["images"]) < count:
        raise ValueError(f"{folder} holds {len(payload['images'])} images, fewer than {count}")
    kept = payload["images"][:count]
    ids = {image["id"] for image in kept}
    for image in payload["images"][count:]:
        (folder / image["file_name"]).unlink()
    payload["images"] = kept
    payload["annotations"] = [a for a in payload["annotations"] if a["image_id"] in ids]
    (folder / ANNOTATIONS_FILE).write_text(json.dumps(payload, indent=1))


def subset_export(pool: Path, target: Path, counts: dict[str, int]) -> Path:
    """A COCO export of the pool's first ``counts[split]`` images of each split (files copied), in ``target``."""
    shutil.rmtree(target, ignore_errors=True)
    for split in SPLITS:
        payload = json.loads((pool / split / ANNOTATIONS_FILE).read_text())
        if len(payload["images"]) < counts[split]:
            raise ValueError(f"the pool's {split} split holds {len(payload['images'])} images, not {counts[split]}")
        kept = payload["images"][: counts[split]]
        ids = {image["id"] for image in kept}
        (target / split).mkdir(parents=True)
        for image in kept:
            shutil.copyfile(pool / split / image["file_name"], target / split / image["file_name"])
        payload = payload | {"images": kept, "annotations": [a for a in payload["annotations"] if a["image_id"] in ids]}
        (target / split / ANNOTATIONS_FILE).write_text(json.dumps(payload, indent=1))
    return target


def _pictures(names: tuple[str, ...]) -> list[np.ndarray]:
    from skimage import data
    from skimage.color import gray2rgb

    pictures = []
    for name in names:
        picture = np.asarray(getattr(data, name)())
        if picture.dtype != np.uint8:
            picture = (255 * (picture - picture.min()) / max(float(np.ptp(picture)), 1e-9)).astype(np.uint8)
        pictures.append(gray2rgb(picture) if picture.ndim == 2 else picture[..., :3])
    return pictures


def _glyphs() -> dict[int, list[np.ndarray]]:
    """scikit-learn's digit glyphs of :data:`DIGITS`, as 0..1 ink maps (8x8)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return {d: [image / 16.0 for image, t in zip(digits.images, digits.target, strict=True) if t == d] for d in DIGITS}


def write_digits(root: Path, counts: dict[str, int], image_size: int, seed: int) -> Path:
    """Write the digits set as a COCO export with ``counts`` images per split into ``root``."""
    rng = random.Random(seed)
    backgrounds = _pictures(DIGIT_BACKGROUNDS)
    glyphs = _glyphs()
    categories = [{"id": 0, "name": "digits", "supercategory": "none"}]
    categories += [{"id": i + 1, "name": f"digit-{d}", "supercategory": "digits"} for i, d in enumerate(DIGITS)]
    number = 0
    for split in SPLITS:
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        entries, annotations = [], []
        for index in range(counts[split]):
            number += 1
            canvas = _crop(backgrounds[rng.randrange(len(backgrounds))], image_size, rng)
            objects = [] if rng.random() < NEGATIVE_SHARE else _paste_glyphs(canvas, glyphs, rng)
            name = f"{number:04d}.png"
            Image.fromarray(canvas).save(folder / name)
            entries.append({"id": index, "file_name": name, "width": image_size, "height": image_size})
            for digit, (x1, y1, x2, y2) in objects:
                annotations.append(
                    {
                        "id": len(annotations),
                        "image_id": index,
                        "category_id": DIGITS.index(digit) + 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": 0,
                    }
                )
        payload = {"images": entries, "annotations": annotations, "categories": categories}
        (folder / ANNOTATIONS_FILE).write_text(json.dumps(payload, indent=1))
    return root


def _crop(picture: np.ndarray, size: int, rng: random.Random) -> np.ndarray:
    height, width = picture.shape[:2]
    side = rng.randint(min(height, width) // 3, min(height, width))
    top, left = rng.randint(0, height - side), rng.randint(0, width - side)
    crop = Image.fromarray(picture[top : top + side, left : left + side]).resize((size, size), Image.BILINEAR)
    return np.asarray(crop, dtype=np.uint8).copy()


def _paste_glyphs(
    canvas: np.ndarray, glyphs: dict[int, list[np.ndarray]], rng: random.Random
) -> list[tuple[int, tuple[int, int, int, int]]]:
    """Blend 1-4 coloured glyphs into ``canvas`` (in place); each one's digit and ink box (x1, y1, x2, y2)."""
    size = canvas.shape[0]
    objects = []
    for _ in range(rng.randint(1, 4)):
        digit = rng.choice(DIGITS)
        glyph = glyphs[digit][rng.randrange(len(glyphs[digit]))]
        side = rng.randint(max(16, size // 10), max(17, size // 3))
        ink = np.asarray(Image.fromarray((glyph * 255).astype(np.uint8)).resize((side, side), Image.BILINEAR)) / 255.0
        ink = np.clip((ink - 0.2) / 0.6, 0.0, 1.0)  # sharpen the upscaled strokes
        x, y = rng.randint(0, size - side), rng.randint(0, size - side)
        colour = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float64)
        region = canvas[y : y + side, x : x + side].astype(np.float64)
        # the glyph's colour differs from its surroundings: the complement when they are close
        if np.abs(region.mean(axis=(0, 1)) - colour).sum() < 120:
            colour = 255 - colour
        alpha = ink[..., None]
        canvas[y : y + side, x : x + side] = np.round(region * (1 - alpha) + colour * alpha).astype(np.uint8)
        rows, cols = np.nonzero(ink > 0)
        objects.append(
            (digit, (x + int(cols.min()), y + int(rows.min()), x + int(cols.max()) + 1, y + int(rows.max()) + 1))
        )
    return objects
