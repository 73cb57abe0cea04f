"""Which model to ship: every transfer strategy, ``auto`` and feature-level variants on many small datasets.

Usage (run by hand; see bench/README.md for the measured run time)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TLOPS_WORKERS=0 nice -n 5 python bench/transfer.py \
        --workdir /tmp/tlops-bench-transfer --json /tmp/tlops-bench-transfer/transfer.json

Re-run only ``auto`` (new code) and merge it into an earlier run's rows (the other arms are kept)::

    python bench/transfer.py --arms auto --merge OLD.json --json NEW.json

Datasets (written once under ``WORKDIR/sources/<name>/`` as ``train/<class>/*.png`` and ``test/<class>/*.png``,
the layout ``tlops run --data DIR`` takes; the test set is fixed, about 30 images a class, and the ``train/`` folder
is the pool a run samples its training images from):

* ``digits``: scikit-learn's handwritten digits (10 classes, 32x32 grey);
* ``digits-far``: the same digits inverted and turned by 0 or 90 degrees (further from ImageNet);
* ``lfw``: scikit-image's ``lfw_subset`` (face / non-face, 25x25 grey; 100 a class, so at most 70 to train on);
* ``textures``: 48..112 px grey crops (turned, flipped, contrast, noise) of five scikit-image texture photos;
  training crops from the top 60 % of each photo, test crops from the bottom 40 % (no overlap);
* ``glyphs``: the letters A..H rendered in a random DejaVu font, size, position, rotation and colour on random crops
  of scikit-image photos (64x64 RGB);
* ``photos``: "which photo is this patch from": 64x64 RGB crops of six scikit-image photos (astronaut, camera,
  chelsea, coffee, rocket, coins), a class each; training crops from the top 60 % of each photo, test crops from
  the bottom 40 % (natural-image statistics, the case closest to ImageNet).

For every (dataset, size, seed) the training folder holds ``size`` images a class (the first ``size`` of a per-class
permutation drawn from the seed: nested across sizes) and the whole fixed test set; ``prepare_data`` with
``SplitConfig(seed=seed)`` carves the validation split out of the training folder as ``tlops run`` does. Arms,
all scored on the same test split:

* ``linear-probe@S``, ``mlp-probe@S``: ``fit_linear_head`` / ``fit_mlp_head`` (the product's defaults) on
  ``efficientnet_lite0`` features at input size ``S`` (``--probe-sizes``; sizes above ``--image-size`` only up
  to ``--large-probe-max-size`` images a class: the backbone at 224 px costs ~25x the 64 px pass on a CPU);
* ``pixels``: the linear probe on the raw-pixel baseline (``load_backbone("pixels")``: 32x32x3 pixels);
* ``concat@S``: the linear probe on lite0 features at ``S`` and the raw pixels side by side (each block divided by
  its mean standard deviation on train first, so neither dominates the global scaling);
* ``ensemble@S``: the linear probe on lite0 and lite1 features side by side (feature-level ensemble, block-scaled
  likewise; at ``--ensemble-sizes``);
* ``pick@S`` (derived by the report, no training): per seed, the one of ``linear-probe@S``, ``pixels`` and
  ``concat@S`` with the best validation accuracy (ties to the linear probe, then pixels): a rule ``auto`` could use;
* ``lp-ft``, ``partial``: the ``fine_tune`` step (``TrainConfig(strategy=..., epochs=--epochs, seed=seed)``, every
  other setting at its default) from the lite0 linear probe at ``--image-size``, scored by the ``evaluate`` step;
* ``auto``: the pipeline's path: ``select_backbone`` (lite0 and the raw-pixel baseline at ``--image-size``), the
  chosen backbone's ``extract_and_probe``, ``fine_tune`` with ``strategy="auto"`` fed with the selection folder,
  and ``evaluate``.

The probe arms are computed here from a per-image feature store (``WORKDIR/feature-store``: a backbone runs once
per image and size whatever the seed or size), so they use no test-time tricks of ``evaluate``; the fine-tuning
arms and ``auto`` go through the steps (their own feature cache in ``WORKDIR/feature-cache``).

The JSON (``--json``) has one row per (dataset, size, seed, arm) and is written after every cell; ``--merge``
reads an earlier JSON whose rows the new ones replace by key; ``--arms none`` only prints the report of the merge.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

DATASETS = ("digits", "digits-far", "lfw", "textures", "glyphs", "photos")
FINE_TUNE_ARMS = ("lp-ft", "partial", "auto")
PROBE_ARMS = ("linear-probe", "mlp-probe", "pixels", "concat", "ensemble")
ARMS = (*PROBE_ARMS, *FINE_TUNE_ARMS)
DERIVED_ARMS = ("pick",)  # computed by the report from the probe rows (see with_picks)
BACKBONE = "efficientnet_lite0"
ENSEMBLE_SECOND = "efficientnet_lite1"
TEST_PER_CLASS = 30
POOL_PER_CLASS = 130  # generated datasets: the training pool a class (size 100 leaves room for seeds to differ)
SOURCE_SEED = 1234  # the datasets themselves; the run's seeds only pick training subsets
TEXTURES = ("brick", "grass", "gravel", "moon", "hubble_deep_field")
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins")
GLYPHS = "ABCDEFGH"
GLYPH_BACKGROUNDS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "grass", "gravel", "brick")
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")


# --- datasets ----------------------------------------------------------------------------------------------------


def _save(image: np.ndarray, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(folder / name)


def _split_write(root: Path, per_class: dict[str, list[np.ndarray]], rng: np.random.Generator) -> None:
    """Shuffle each class's images; the first :data:`TEST_PER_CLASS` go to test/, the rest to train/."""
    for label, images in per_class.items():
        order = rng.permutation(len(images))
        for rank, index in enumerate(order):
            split = "test" if rank < TEST_PER_CLASS else "train"
            _save(images[index], root / split / label, f"{index:04d}.png")


def _rgb(image: np.ndarray) -> np.ndarray:
    """A uint8 RGB array of any skimage image (grey, bool, RGBA)."""
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3].astype(np.uint8)


def write_digits(root: Path, rng: np.random.Generator) -> None:
    """scikit-learn's digits, 32x32 grey: 30 a class to test, the rest (144..153) to the training pool."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    per_class: dict[str, list[np.ndarray]] = {}
    for image, target in zip(digits.images, digits.target, strict=True):
        pixels = (image * (255.0 / 16.0)).round().astype(np.uint8)
        pixels = np.asarray(Image.fromarray(pixels, mode="L").resize((32, 32), Image.NEAREST))
        per_class.setdefault(f"d{int(target)}", []).append(pixels)
    _split_write(root, per_class, rng)


def write_digits_far(root: Path, rng: np.random.Generator) -> None:
    """The digits inverted (255 - x) and turned by 0 or 90 degrees at random (not 180: a 6 would be a 9)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    per_class: dict[str, list[np.ndarray]] = {}
    for image, target in zip(digits.images, digits.target, strict=True):
        pixels = (image * (255.0 / 16.0)).round().astype(np.uint8)
        pixels = 255 - np.asarray(Image.fromarray(pixels, mode="L").resize((32, 32), Image.NEAREST))
        per_class.setdefault(f"d{int(target)}", []).append(np.rot90(pixels, int(rng.integers(2))))
    _split_write(root, per_class, rng)


def write_lfw(root: Path, rng: np.random.Generator) -> None:
    """scikit-image's ``lfw_subset``: the first 100 images faces, the last 100 not (25x25 grey)."""
    import skimage.data

    images = skimage.data.lfw_subset()
    per_class: dict[str, list[np.ndarray]] = {"face": [], "non_face": []}
    for index, image in enumerate(images):
        label = "face" if index < len(images) // 2 else "non_face"
        per_class[label].append((image * 255).round().astype(np.uint8))
    _split_write(root, per_class, rng)


def _band_crops(photo: np.ndarray, split: str, count: int, sizes: tuple[float, float], rng: np.random.Generator):
    """``count`` random square crops of ``photo`` from its split's band (train: top 60 % rows, test: bottom 40 %)."""
    height, width = photo.shape[:2]
    top, bottom = (0, int(0.6 * height)) if split == "train" else (int(0.6 * height), height)
    for _ in range(count):
        side = int(rng.uniform(*sizes) * min(height, width))
        side = min(side, bottom - top, width)
        y = int(rng.integers(top, bottom - side + 1))
        x = int(rng.integers(0, width - side + 1))
        yield photo[y : y + side, x : x + side]


def write_textures(root: Path, rng: np.random.Generator) -> None:
    """Grey crops (48..112 px, turned, flipped, contrast-stretched, noised) of five texture photos."""
    import skimage.data

    for texture in TEXTURES:
        photo = np.asarray(Image.fromarray(_rgb(getattr(skimage.data, texture)())).convert("L"), dtype=np.float32)
        if photo.shape[0] > 512:
            photo = np.asarray(Image.fromarray(photo.astype(np.uint8)).resize((512, 512)), dtype=np.float32)
        for split, count in (("train", POOL_PER_CLASS), ("test", TEST_PER_CLASS)):
            for index, crop in enumerate(_band_crops(photo, split, count, (0.094, 0.22), rng)):
                crop = np.rot90(crop, int(rng.integers(4)))
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                crop = (crop - crop.mean()) * rng.uniform(0.7, 1.3) + crop.mean() + rng.uniform(-20, 20)
                crop = crop + rng.normal(0, 3, crop.shape)
                _save(np.clip(crop, 0, 255).astype(np.uint8), root / split / texture, f"{index:04d}.png")


def write_photos(root: Path, rng: np.random.Generator) -> None:
    """64x64 RGB crops (25..40 % of the short side, random flip) of six photos, the class being the photo."""
    import skimage.data

    for name in PHOTOS:
        photo = _rgb(getattr(skimage.data, name)())
        for split, count in (("train", POOL_PER_CLASS), ("test", TEST_PER_CLASS)):
            for index, crop in enumerate(_band_crops(photo, split, count, (0.25, 0.4), rng)):
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                image = Image.fromarray(np.ascontiguousarray(crop)).resize((64, 64), Image.BICUBIC)
                _save(np.asarray(image), root / split / name, f"{index:04d}.png")


def _glyph(letter: str, backgrounds: list[np.ndarray], fonts: list[Path], rng: np.random.Generator) -> np.ndarray:
    """One 64x64 glyph: random font, size, rotation, position and colour on a random photo crop."""
    photo = backgrounds[int(rng.integers(len(backgrounds)))]
    side = int(rng.integers(64, min(photo.shape[:2]) // 2))
    y, x = int(rng.integers(0, photo.shape[0] - side)), int(rng.integers(0, photo.shape[1] - side))
    canvas = Image.fromarray(photo[y : y + side, x : x + side]).resize((64, 64), Image.BILINEAR)
    font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), int(rng.integers(26, 46)))
    layer = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
    luminance = float(np.asarray(canvas.convert("L")).mean())
    base = rng.integers(0, 90, 3) if luminance > 128 else rng.integers(165, 256, 3)
    ImageDraw.Draw(layer).text((48, 48), letter, font=font, fill=(*map(int, base), 255), anchor="mm")
    layer = layer.rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR)
    dx, dy = (int(v) for v in rng.integers(-10, 11, 2))
    canvas.paste(layer, (-16 + dx, -16 + dy), layer)
    return np.asarray(canvas)


def write_glyphs(root: Path, rng: np.random.Generator) -> None:
    """The letters A..H in random DejaVu fonts on random crops of skimage photos (64x64 RGB)."""
    import skimage.data

    fonts = sorted(p for p in FONT_DIR.glob("DejaVu*.ttf") if "Math" not in p.name)
    if not fonts:
        raise SystemExit(f"glyphs: no DejaVu fonts in {FONT_DIR}; install fonts-dejavu-core or drop glyphs")
    backgrounds = [_rgb(getattr(skimage.data, name)()) for name in GLYPH_BACKGROUNDS]
    for letter in GLYPHS:
        for split, count in (("train", POOL_PER_CLASS), ("test", TEST_PER_CLASS)):
            for index in range(count):
                _save(_glyph(letter, backgrounds, fonts, rng), root / split / letter, f"{index:04d}.png")


WRITERS = {
    "digits": write_digits,
    "digits-far": write_digits_far,
    "lfw": write_lfw,
    "textures": write_textures,
    "glyphs": write_glyphs,
    "photos": write_photos,
}
assert tuple(WRITERS) == DATASETS


def source_dir(name: str, workdir: Path) -> Path:
    """The dataset's ``train/`` + ``test/`` folder, written once (a hidden marker says it is complete)."""
    root = workdir / "sources" / name
    marker = root / ".complete"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        WRITERS[name](root, np.random.default_rng(SOURCE_SEED))
        marker.write_text("{}")
    return root


def cell_source(name: str, size: int, seed: int, workdir: Path) -> tuple[Path, int]:
    """A ``train/`` (``size`` images a class, nested across sizes for a seed) + ``test/`` folder of hard links.

    Returns:
        The folder and the training images a class it got (fewer than ``size`` where the pool is smaller).
    """
    source = source_dir(name, workdir)
    cell = workdir / "cells" / f"{name}-n{size}-s{seed}" / "source"
    shutil.rmtree(cell, ignore_errors=True)
    smallest = size
    for index, folder in enumerate(sorted((source / "train").iterdir())):
        files = sorted(folder.glob("*.png"))
        order = np.random.default_rng([seed, index]).permutation(len(files))
        chosen = [files[i] for i in order[:size]]
        smallest = min(smallest, len(chosen))
        for split, paths in (("train", chosen), ("test", sorted((source / "test" / folder.name).glob("*.png")))):
            target = cell / split / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for path in paths:
                try:
                    os.link(path, target / path.name)
                except OSError:
                    shutil.copy2(path, target / path.name)
    return cell, smallest


# --- features and probes -----------------------------------------------------------------------------------------


class FeatureStore:
    """Features per image (by checksum) for each (backbone, input size): a backbone runs once per image."""

    def __init__(self, root: Path, runtime) -> None:
        self.root, self.runtime = root, runtime
        self.tables: dict[str, dict[str, torch.Tensor]] = {}
        self.backbones: dict[str, Any] = {}
        self.seconds = 0.0

    def _file(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def _backbone(self, name: str, size: int):
        from tlops.models.backbones import load_backbone

        key = f"{name}@{size}"
        if key not in self.backbones:
            image_size = None if name == "pixels" else (size or None)
            self.backbones[key] = load_backbone(name, image_size=image_size, cache_dir=self.runtime.cache_dir)
        return self.backbones[key]

    def features(self, name: str, size: int, paths: list[str], checksums: list[str]) -> torch.Tensor:
        """The features of ``paths`` (identified by ``checksums``), extracting the missing ones."""
        from tlops.data.loading import ManifestDataset, make_loader
        from tlops.data.preprocessing import eval_transform
        from tlops.models.backbones import feature_extractor
        from tlops.models.extraction import iter_features

        key = f"{name}@{size}"
        if key not in self.tables:
            file = self._file(key)
            self.tables[key] = torch.load(file) if file.exists() else {}
        table = self.tables[key]
        missing = [(c, p) for c, p in dict(zip(checksums, paths, strict=True)).items() if c not in table]
        if missing:
            start = time.perf_counter()
            backbone = self._backbone(name, size)
            dataset = ManifestDataset([p for _, p in missing], [0] * len(missing), eval_transform(backbone.data_config))
            loader = make_loader(dataset, self.runtime.batch_size, workers=self.runtime.workers)
            done = 0
            for batch, _ in iter_features(feature_extractor(backbone), loader, self.runtime.device, key):
                for row in batch:
                    table[missing[done][0]] = row.clone()
                    done += 1
            self.seconds += time.perf_counter() - start
            self.root.mkdir(parents=True, exist_ok=True)
            partial = self._file(key).with_suffix(f".{os.getpid()}.tmp")
            torch.save(table, partial)
            os.replace(partial, self._file(key))  # atomic: a parallel run reads the old or the new table
        return torch.stack([table[c] for c in checksums])


def block_scaled(blocks: list[torch.Tensor], train_rows: int) -> list[torch.Tensor]:
    """Each feature block divided by its mean per-feature standard deviation on the first ``train_rows`` rows."""
    scaled = []
    for block in blocks:
        scale = float(block[:train_rows].std(dim=0).mean()) or 1.0
        scaled.append(block / scale)
    return scaled


def standard_error(accuracy: float, images: int) -> float:
    """Binomial standard error of an accuracy on ``images`` images."""
    return math.sqrt(accuracy * (1 - accuracy) / images) if images else float("nan")


def probe_rows(cell: dict[str, Any], manifest, classes: list[str], store: FeatureStore, args) -> list[dict]:
    """The probe arms of one cell, from the feature store."""
    from tlops.train.mlp import fit_mlp_head
    from tlops.train.probe import fit_linear_head

    index = {label: i for i, label in enumerate(classes)}
    splits = {s: manifest[manifest["split"] == s] for s in ("train", "val", "test")}
    ordered = [splits[s] for s in ("train", "val", "test")]
    paths = [p for rows in ordered for p in rows["local_path"]]
    checksums = [c for rows in ordered for c in rows["sha256"]]
    labels = torch.tensor([index[label] for rows in ordered for label in rows["label"]], dtype=torch.long)
    bounds = np.cumsum([0] + [len(rows) for rows in ordered])
    n_train = int(bounds[1])

    def parts(x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {s: (x[bounds[i] : bounds[i + 1]], labels[bounds[i] : bounds[i + 1]]) for i, s in enumerate(splits)}

    def scored(arm: str, size: int, x: torch.Tensor, kind: str = "linear") -> dict[str, Any]:
        start = time.perf_counter()
        data = parts(x.float())
        if kind == "mlp":
            fit = fit_mlp_head(data["train"], data["val"], len(classes), seed=cell["seed"])
        else:
            fit = fit_linear_head(data["train"], data["val"], len(classes), seed=cell["seed"])
        with torch.no_grad():
            predicted = fit.head(data["test"][0]).argmax(1)
        accuracy = float((predicted == data["test"][1]).float().mean())
        return cell | {
            "arm": arm,
            "kind": "probe",
            "image_size": size,
            "val_accuracy": fit.val_accuracy,
            "test_accuracy": accuracy,
            "test_std_error": standard_error(accuracy, len(predicted)),
            "seconds": round(time.perf_counter() - start, 2),
        }

    rows = []
    pixels = store.features("pixels", 32, paths, checksums) if {"pixels", "concat"} & set(args.arms) else None
    if "pixels" in args.arms:
        rows.append(scored("pixels", 32, pixels))
    for size in args.probe_sizes:
        if size > args.image_size and cell["size"] > args.large_probe_max_size:
            continue
        wanted = {"linear-probe", "mlp-probe", "concat"} | ({"ensemble"} if size in args.ensemble_sizes else set())
        if not wanted & set(args.arms):
            continue
        lite0 = store.features(BACKBONE, size, paths, checksums)
        if "linear-probe" in args.arms:
            rows.append(scored(f"linear-probe@{size}", size, lite0))
        if "mlp-probe" in args.arms:
            rows.append(scored(f"mlp-probe@{size}", size, lite0, kind="mlp"))
        if "concat" in args.arms:
            rows.append(scored(f"concat@{size}", size, torch.cat(block_scaled([lite0, pixels], n_train), dim=1)))
        if "ensemble" in args.arms and size in args.ensemble_sizes:
            lite1 = store.features(ENSEMBLE_SECOND, size, paths, checksums)
            rows.append(scored(f"ensemble@{size}", size, torch.cat(block_scaled([lite0, lite1], n_train), dim=1)))
    return rows


# --- fine-tuning arms through the steps --------------------------------------------------------------------------


def fine_tune_rows(cell: dict[str, Any], data_dir: Path, work: Path, runtime, args) -> list[dict]:
    """lp-ft, partial (from the lite0 probe) and auto (the pipeline's path), each scored by the evaluate step."""
    from tlops.steps.evaluate import evaluate
    from tlops.steps.extract_features import extract_and_probe
    from tlops.steps.fine_tune import fine_tune
    from tlops.steps.select_backbone import select_backbone
    from tlops.train.config import TrainConfig

    arms = [a for a in FINE_TUNE_ARMS if a in args.arms]
    if not arms:
        return []
    cache = str(args.workdir / "feature-cache")
    seed = cell["seed"]
    probes: dict[str, tuple[Path, Path, float]] = {}

    def probe(backbone: str) -> tuple[Path, Path, float]:
        if backbone not in probes:
            start = time.perf_counter()
            folder = work / f"extract-{backbone}"
            extract_and_probe(
                data_dir, backbone, folder / "features", folder / "probe", runtime,
                image_size=args.image_size, seed=seed, feature_cache=cache,
            )  # fmt: skip
            probes[backbone] = (folder / "probe", folder / "features", time.perf_counter() - start)
        return probes[backbone]

    rows = []
    for arm in arms:
        start = time.perf_counter()
        extra: dict[str, Any] = {}
        selection_dir, backbone = None, BACKBONE
        if arm == "auto":
            selection_dir = work / "selection"
            selection = select_backbone(
                data_dir, [BACKBONE], selection_dir, runtime, image_size=args.image_size, feature_cache=cache, seed=seed
            )
            backbone = selection.chosen
            extra = {"selection_chosen": selection.chosen, "transfer_helps": selection.transfer_helps}
        probe_dir, features_dir, _ = probe(backbone)
        out = work / arm
        shutil.rmtree(out, ignore_errors=True)
        config = TrainConfig(strategy=arm, epochs=args.epochs, seed=seed)
        try:
            training = fine_tune(
                data_dir, probe_dir, out / "model", config, runtime,
                features_dir=features_dir, selection_dir=selection_dir,
            )  # fmt: skip
            assert training is not None
            evaluated = evaluate(data_dir, out / "model", out / "evaluation", runtime, tracking_uri=args.tracking_uri)
        except Exception as error:  # a failing arm is a result: the grid goes on
            rows.append(cell | {"arm": arm, "kind": "fine-tune", "error": f"{type(error).__name__}: {error}"})
            continue
        test_images = int(sum(sum(row) for row in evaluated.evaluation.confusion))
        accuracy = float(evaluated.evaluation.metrics["test_accuracy"])
        rows.append(
            cell
            | extra
            | {
                "arm": arm,
                "kind": "fine-tune",
                "image_size": args.image_size,
                "backbone": backbone,
                "applied": training.strategy,
                "best_epoch": training.best_epoch,
                "val_accuracy": training.val_accuracy,
                "probe_val_accuracy": training.probe_val_accuracy,
                "test_accuracy": accuracy,
                "test_std_error": standard_error(accuracy, test_images),
                "reasons": training.reasons,
                "evidence": training.evidence,
                "seconds": round(time.perf_counter() - start, 2),
            }
        )
        shutil.rmtree(out / "model", ignore_errors=True)  # the weights are not needed afterwards
    return rows


# --- one cell ----------------------------------------------------------------------------------------------------


def run_cell(name: str, size: int, seed: int, store: FeatureStore, runtime, args) -> list[dict]:
    """Every requested arm on one (dataset, training size, seed)."""
    from tlops.data.prepare import SplitConfig, prepare_data
    from tlops.steps.common import localized_manifest

    source, per_class = cell_source(name, size, seed, args.workdir)
    work = source.parent
    data_dir = work / "prepared"
    shutil.rmtree(data_dir, ignore_errors=True)
    prepare_data(str(source), data_dir, SplitConfig(seed=seed, workers=1))
    manifest, classes = localized_manifest(data_dir, runtime)
    counts = manifest["split"].value_counts().to_dict()
    cell = {
        "dataset": name,
        "size": size,
        "seed": seed,
        "train_per_class": per_class,
        "classes": len(classes),
        "train_images": int(counts.get("train", 0)),
        "val_images": int(counts.get("val", 0)),
        "test_images": int(counts.get("test", 0)),
    }
    rows = probe_rows(cell, manifest, classes, store, args)
    rows += fine_tune_rows(cell, data_dir, work, runtime, args)
    return rows


# --- report ------------------------------------------------------------------------------------------------------


PICKED = ("linear-probe", "pixels", "concat")  # pick@S chooses among these by val accuracy, ties to the first


def with_picks(rows: list[dict]) -> list[dict]:
    """Add the derived arm ``pick@S``: per seed, the one of linear-probe@S, pixels, concat@S that validates best.

    A rule ``auto`` could apply without training anything (ties go to the linear probe, then to pixels).
    """
    by_cell: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        if "val_accuracy" in row and not row["arm"].startswith("pick@"):
            by_cell.setdefault((row["dataset"], row["size"], row["seed"]), {})[row["arm"]] = row
    picks = []
    for arms in by_cell.values():
        for size in sorted({int(a.partition("@")[2]) for a in arms if a.startswith("linear-probe@")}):
            candidates = [arms.get(f"linear-probe@{size}"), arms.get("pixels"), arms.get(f"concat@{size}")]
            candidates = [c for c in candidates if c is not None]
            if len(candidates) < len(PICKED):
                continue
            best = max(candidates, key=lambda r: r["val_accuracy"])  # max keeps the first of equals
            picks.append(best | {"arm": f"pick@{size}", "picked": best["arm"]})
    return [r for r in rows if not r["arm"].startswith("pick@")] + picks


def row_key(row: dict[str, Any]) -> tuple:
    return row["dataset"], row["size"], row["seed"], row["arm"]


def arm_order(arms: set[str]) -> list[str]:
    """Arms in a stable reading order: probes by kind then size, pixels, fine-tuning arms, auto last."""

    def key(arm: str) -> tuple:
        base, _, size = arm.partition("@")
        ordered = (*PROBE_ARMS, *DERIVED_ARMS, *FINE_TUNE_ARMS)
        return (ordered.index(base) if base in ordered else len(ordered), int(size or 0))

    return sorted(arms, key=key)


def is_probe(arm: str) -> bool:
    return arm.partition("@")[0] in (*PROBE_ARMS, *DERIVED_ARMS)


def cell_means(rows: list[dict]) -> dict[tuple, dict[str, list[float]]]:
    """Test accuracies by (dataset, size) and arm, one per seed."""
    table: dict[tuple, dict[str, list[float]]] = {}
    for row in rows:
        if "test_accuracy" in row:
            table.setdefault((row["dataset"], row["size"]), {}).setdefault(row["arm"], []).append(row["test_accuracy"])
    return table


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.2f}-{max(values):.2f})"


def markdown(rows: list[dict]) -> str:
    """Per dataset and size: mean (min-max over seeds) test accuracy per arm, the best arm, auto vs best probe."""
    table = cell_means(rows)
    arms = arm_order({row["arm"] for row in rows if "test_accuracy" in row})
    applied: dict[tuple, list[str]] = {}
    test_images: dict[tuple, int] = {}
    val_images: dict[tuple, set[int]] = {}
    for row in rows:
        test_images[(row["dataset"], row["size"])] = row["test_images"]
        val_images.setdefault((row["dataset"], row["size"]), set()).add(row["val_images"])
        if row["arm"] == "auto" and "applied" in row:
            applied.setdefault((row["dataset"], row["size"]), []).append(row["applied"])
    lines = [
        "| dataset | n/class | val | " + " | ".join(arms) + " | best arm | auto applied | auto - best probe (SE) |",
        "|---|---:|---:|" + "---:|" * len(arms) + "---|---|---|",
    ]
    order = {name: i for i, name in enumerate(DATASETS)}
    for dataset, size in sorted(table, key=lambda k: (order.get(k[0], 99), k[1])):
        scores = table[(dataset, size)]
        means = {arm: statistics.fmean(v) for arm, v in scores.items()}
        best = max(means, key=means.get)
        probes = {arm: m for arm, m in means.items() if is_probe(arm)}
        verdict = "-"
        if "auto" in means and probes:
            best_probe = max(probes, key=probes.get)
            se = standard_error(probes[best_probe], test_images[(dataset, size)])
            diff = means["auto"] - probes[best_probe]
            verdict = f"{diff:+.3f} vs {best_probe} ({se:.3f}{', within' if abs(diff) <= se else ''})"
        cells = [spread(scores[arm]) if arm in scores else "-" for arm in arms]
        auto = "/".join(applied.get((dataset, size), [])) or "-"
        val = "/".join(str(v) for v in sorted(val_images[(dataset, size)]))
        lines.append(f"| {dataset} | {size} | {val} | " + " | ".join(cells) + f" | {best} | {auto} | {verdict} |")
    return "\n".join(lines)


def aggregate(rows: list[dict]) -> str:
    """Mean over datasets (each dataset's mean over seeds) per size and arm, and how often each arm is best."""
    table = cell_means(rows)
    arms = arm_order({row["arm"] for row in rows if "test_accuracy" in row})
    sizes = sorted({size for _, size in table})
    lines = [
        "| n/class | datasets | " + " | ".join(arms) + " |",
        "|---:|---:|" + "---:|" * len(arms),
    ]
    for size in sizes:
        cells = {k: v for k, v in table.items() if k[1] == size}
        values = []
        for arm in arms:
            means = [statistics.fmean(v[arm]) for v in cells.values() if arm in v]
            values.append(f"{statistics.fmean(means):.3f} ({len(means)})" if means else "-")
        lines.append(f"| {size} | {len(cells)} | " + " | ".join(values) + " |")
    wins = ["", "Best arm per dataset (mean over seeds) by size:", ""]
    for size in sizes:
        best = []
        for (dataset, s), scores in sorted(table.items()):
            if s == size:
                means = {arm: statistics.fmean(v) for arm, v in scores.items()}
                best.append(f"{dataset}: {max(means, key=means.get)}")
        wins.append(f"- {size}/class: " + "; ".join(best))
    picks: dict[tuple, list[str]] = {}
    for row in rows:
        if row["arm"].startswith("pick@"):
            picks.setdefault((row["arm"], row["size"]), []).append(row["picked"].partition("@")[0])
    if picks:
        wins += ["", "What pick@S chose (over datasets and seeds):", ""]
        for (arm, size), chosen in sorted(picks.items()):
            counts = ", ".join(f"{name} {chosen.count(name)}" for name in PICKED if name in chosen)
            wins.append(f"- {arm}, {size}/class: {counts}")
    return "\n".join(lines + wins)


# --- command line ------------------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def arm_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown arms {unknown}; choose from {', '.join(ARMS)} or none")
    return names


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlops-bench-transfer"))
    parser.add_argument("--json", type=Path, help="write every row here (after each cell)")
    parser.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="an earlier --json whose rows the new ones replace by key (repeat to merge several, later ones win)",
    )
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, of {', '.join(DATASETS)}")
    parser.add_argument("--sizes", type=int_list, default=[5, 10, 30, 100], help="training images a class")
    parser.add_argument("--seeds", type=int_list, default=[0, 1], help="seeds (training subset, split, training)")
    parser.add_argument(
        "--largest-size-seeds",
        type=int_list,
        help="seeds for the largest size only (default: --seeds); fewer keeps the grid affordable on a CPU",
    )
    parser.add_argument("--arms", type=arm_list, default=list(ARMS), help=f"comma-separated of {', '.join(ARMS)}")
    parser.add_argument("--image-size", type=int, default=64, help="input size of fine-tuning and auto (0: 224)")
    parser.add_argument("--probe-sizes", type=int_list, default=[64, 224], help="input sizes of the probe arms")
    parser.add_argument(
        "--large-probe-max-size",
        type=int,
        default=30,
        help="probe sizes above --image-size only up to this many training images a class (default 30)",
    )
    parser.add_argument("--ensemble-sizes", type=int_list, default=[64], help="input sizes of the ensemble arm")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the fine-tuning arms and auto (default 3)")
    parser.add_argument("--verbose", action="store_true", help="log the steps' INFO lines")
    args = parser.parse_args(argv)
    args.probe_sizes = [s or 224 for s in args.probe_sizes]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the grid (smallest sizes first, every dataset), write the JSON after every cell, print the tables."""
    args = parse(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    rows: list[dict] = []
    for old in args.merge:
        loaded = json.loads(old.read_text())["rows"]
        keys = {row_key(r) for r in loaded}
        rows = [r for r in rows if row_key(r) not in keys] + loaded
    report: dict[str, Any] = {"config": {}, "rows": rows}
    if args.arms:
        from tlops.steps.runtime import Runtime

        args.workdir.mkdir(parents=True, exist_ok=True)
        args.tracking_uri = f"sqlite:///{args.workdir.resolve() / 'none.db'}"  # the evaluate step's gate
        runtime = Runtime(device=torch.device("cpu"), batch_size=64, workers=int(os.environ.get("TLOPS_WORKERS") or 0))
        store = FeatureStore(args.workdir / "feature-store", runtime)
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        report["config"] = config | {"torch": torch.__version__, "threads": torch.get_num_threads()}
        start = time.perf_counter()
        largest = max(args.sizes)
        for size in sorted(args.sizes):
            seeds = args.largest_size_seeds if size == largest and args.largest_size_seeds else args.seeds
            for seed in seeds:
                for name in args.datasets.split(","):
                    began = time.perf_counter()
                    new = run_cell(name, size, seed, store, runtime, args)
                    keys = {row_key(r) for r in new}
                    rows[:] = [r for r in rows if row_key(r) not in keys] + new
                    print(
                        f"{name} n={size} seed={seed}: {time.perf_counter() - began:.0f} s "
                        f"({time.perf_counter() - start:.0f} s in all)",
                        file=sys.stderr,
                        flush=True,
                    )
                    if args.json:
                        report["seconds"] = round(time.perf_counter() - start, 1)
                        args.json.parent.mkdir(parents=True, exist_ok=True)
                        args.json.write_text(json.dumps(report, indent=1, default=str))
        print(f"{time.perf_counter() - start:.0f} s in all (feature store: {store.seconds:.0f} s of extraction)")
    elif args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    rows = with_picks(rows)
    print("### Test accuracy: mean (min-max over seeds)\n\n" + markdown(rows) + "\n")
    print("### Aggregate: mean over datasets (datasets counted)\n\n" + aggregate(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
