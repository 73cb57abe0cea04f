"""Built-in object-detection demo data: shapes drawn on crops of scikit-image's sample photos, as a COCO export.

Offline and deterministic for a seed: each image is a random crop of one of scikit-image's bundled photos and
textures (the ``demo`` extra), with 1-4 objects of three classes (``circle``, ``square``, ``triangle``) drawn
with Pillow in varied colours, sizes and places (some overlap); about 10% of the images have none (negatives).
It is written as Roboflow writes a COCO export: ``train/``, ``valid/`` and ``test/``, each holding its images and
``_annotations.coco.json``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEMO_CLASSES = ("circle", "square", "triangle")
ANNOTATIONS_FILE = "_annotations.coco.json"
DEMO_SPLITS = (("train", 0.7), ("valid", 0.15), ("test", 0.15))
NEGATIVE_SHARE = 0.1
_BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "grass", "brick", "gravel", "camera", "coins", "moon")


def write_detection_demo(root: Path, images: int = 120, image_size: int = 160, seed: int = 0) -> Path:
    """Write the demo export into ``root``.

    Args:
        root: Target directory; ``train/``, ``valid/`` and ``test/`` are created inside it.
        images: How many images in all (at least 3: one per split).
        image_size: Their width and height in pixels (at least 32).
        seed: The seed of every random choice.

    Returns:
        ``root``. Existing files with the same names are overwritten.
    """
    if images < len(DEMO_SPLITS) or image_size < 32:
        raise ValueError(
            f"the detection demo needs at least 3 images of at least 32 pixels, got {images}, {image_size}"
        )
    rng = random.Random(seed)
    backgrounds = _backgrounds()
    sizes = [max(1, round(images * share)) for _split, share in DEMO_SPLITS[1:]]
    counts = [images - sum(sizes), *sizes]
    number = 0
    for (split, _share), count in zip(DEMO_SPLITS, counts, strict=True):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        entries, annotations = [], []
        for index in range(count):
            number += 1
            picture = _background(backgrounds[rng.randrange(len(backgrounds))], image_size, rng)
            objects = [] if rng.random() < NEGATIVE_SHARE else _draw_objects(picture, rng)
            name = f"{number:04d}.png"
            picture.save(folder / name)
            entries.append({"id": index, "file_name": name, "width": image_size, "height": image_size})
            for label, (x1, y1, x2, y2) in objects:
                annotations.append(
                    {
                        "id": len(annotations),
                        "image_id": index,
                        "category_id": DEMO_CLASSES.index(label) + 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": 0,
                    }
                )
        categories = [{"id": 0, "name": "shapes", "supercategory": "none"}]  # Roboflow's dataset-wide category
        categories += [{"id": i + 1, "name": name, "supercategory": "shapes"} for i, name in enumerate(DEMO_CLASSES)]
        payload = {"images": entries, "annotations": annotations, "categories": categories}
        (folder / ANNOTATIONS_FILE).write_text(json.dumps(payload, indent=1))
    return root


def _backgrounds() -> list[np.ndarray]:
    """scikit-image's bundled sample pictures as RGB arrays (no download: these ship with the package)."""
    from skimage import data
    from skimage.color import gray2rgb

    pictures = []
    for name in _BACKGROUNDS:
        picture = np.asarray(getattr(data, name)())
        if picture.dtype != np.uint8:
            picture = (255 * (picture - picture.min()) / max(float(np.ptp(picture)), 1e-9)).astype(np.uint8)
        pictures.append(gray2rgb(picture) if picture.ndim == 2 else picture[..., :3])
    return pictures


def _background(picture: np.ndarray, size: int, rng: random.Random) -> Image.Image:
    """A random square crop of ``picture``, resized to ``size``."""
    height, width = picture.shape[:2]
    side = rng.randint(min(height, width) // 3, min(height, width))
    top, left = rng.randint(0, height - side), rng.randint(0, width - side)
    crop = Image.fromarray(picture[top : top + side, left : left + side])
    return crop.resize((size, size), Image.BILINEAR)


def _draw_objects(picture: Image.Image, rng: random.Random) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Draw 1-4 shapes on ``picture``; return each one's class and box (x1, y1, x2, y2: its extent, exclusive)."""
    draw = ImageDraw.Draw(picture)
    size = picture.width
    objects = []
    for _ in range(rng.randint(1, 4)):
        label = rng.choice(DEMO_CLASSES)
        side = rng.randint(max(8, size // 8), max(9, size // 3))
        x1, y1 = rng.randint(0, size - side), rng.randint(0, size - side)
        x2, y2 = x1 + side, y1 + side
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        outline = tuple(255 - c for c in colour)
        shape = [x1, y1, x2 - 1, y2 - 1]  # Pillow's corners are inclusive
        if label == "circle":
            draw.ellipse(shape, fill=colour, outline=outline, width=2)
        elif label == "square":
            draw.rectangle(shape, fill=colour, outline=outline, width=2)
        else:
            draw.polygon([(x1 + side / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=colour, outline=outline, width=2)
        objects.append((label, (x1, y1, x2, y2)))
    return objects
