"""Ranking quality of the transferability scores, and what scoring costs next to one fine-tuning epoch.

Usage (run by hand; about 10 minutes on 2 busy CPU cores)::

    python bench/ranking.py --workdir /tmp/tlops-bench-ranking --output /tmp/tlops-bench-ranking/ranking.json

Three small datasets built offline from packaged data (written once under ``WORKDIR/sources``):

* ``digits``: scikit-learn's handwritten digits via ``write_digits_imagefolder`` (``--per-class`` images a class,
  10 classes, 32x32 grey PNGs);
* ``lfw``: scikit-image's ``lfw_subset()`` (200 25x25 grey images: the first 100 faces, the last 100 not), two
  classes;
* ``textures``: random 64..128 px crops (random 90-degree turn, flip, contrast and noise) of scikit-image's
  ``brick``, ``grass``, ``gravel`` and ``moon`` photos, one class each, ``--per-class`` crops a class. The crops of
  each split come from their own band of the photo (train: top half, val and test: a quarter each), written as
  a pre-split ``train/ val/ test/`` folder, so no test crop overlaps a training crop.

``digits`` and ``lfw`` are split by ``prepare_data`` with ``SplitConfig(val_fraction=0.2, test_fraction=0.2)``.
For each dataset, with a cold feature cache (``WORKDIR/cache`` is emptied first), every candidate
(``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2`` and the raw-pixel baseline ``pixels``) is
scored by ``tlops.steps.score_backbone.score_backbone`` (timed: features of every split, cost, and the probe, kNN
and LogME scores on the training split). The "ground truth" of each candidate is the test accuracy of
``fit_linear_head`` on its full training features (C chosen on val), read back from the same feature cache.
``scipy.stats.weightedtau`` between each score and those test accuracies over the 4 candidates measures the
ranking; "top-1" says whether the score's best candidate has the best test accuracy (ties count).

Then one fine-tuning epoch of ``efficientnet_lite0`` on the same training split: ``extract_and_probe`` (a cache
hit) followed by the ``fine_tune`` step with ``TrainConfig(strategy="full", epochs=1)``. The step's wall time
includes a validation pass before and after the epoch and saving the model; the epoch alone is timed by wrapping
the step's shuffled training loader (``make_loader`` is patched in ``tlops.steps.fine_tune`` for that).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tlops.data.demo import write_digits_imagefolder
from tlops.data.prepare import SplitConfig, prepare_data
from tlops.models.backbones import load_backbone
from tlops.steps import fine_tune as fine_tune_step
from tlops.steps.common import localized_manifest
from tlops.steps.extract_features import extract_and_probe
from tlops.steps.features import dataset_features, open_feature_cache
from tlops.steps.outputs import PreparedData
from tlops.steps.runtime import Runtime, available_cpus, default_workers
from tlops.steps.score_backbone import score_backbone
from tlops.train.finetune import TrainConfig
from tlops.train.probe import fit_linear_head

CANDIDATES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "pixels")
SCORES = ("probe_accuracy", "knn_accuracy", "logme")
TEXTURES = ("brick", "grass", "gravel", "moon")
DATASETS = ("digits", "lfw", "textures")
FINE_TUNED = "efficientnet_lite0"


# --- datasets ----------------------------------------------------------------------------------------------------


def write_lfw(root: Path) -> Path:
    """scikit-image's ``lfw_subset`` as ``root/face/`` and ``root/non_face/`` 25x25 grey PNGs."""
    import skimage.data

    images = skimage.data.lfw_subset()
    for index, image in enumerate(images):
        folder = root / ("face" if index < len(images) // 2 else "non_face")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).round().astype(np.uint8), mode="L").save(folder / f"{index:03d}.png")
    return root


def write_textures(root: Path, per_class: int, seed: int = 0) -> Path:
    """Random crops of skimage's texture photos as a pre-split ``root/{train,val,test}/<texture>/`` folder.

    Split bands of each 512x512 photo: train rows 0..255, val rows 256..383, test rows 384..511; 60/20/20 % of
    ``per_class`` crops (64..128 px squares) each, randomly turned, flipped, contrast-stretched and noised.
    """
    import skimage.data

    rng = np.random.default_rng(seed)
    bands = {"train": (0, 256), "val": (256, 384), "test": (384, 512)}
    counts = {"val": round(0.2 * per_class), "test": round(0.2 * per_class)}
    counts["train"] = per_class - counts["val"] - counts["test"]
    for texture in TEXTURES:
        photo = getattr(skimage.data, texture)().astype(np.float32)
        for split, (top, bottom) in bands.items():
            folder = root / split / texture
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(counts[split]):
                size = int(rng.integers(64, 129))
                y = int(rng.integers(top, bottom - size + 1))
                x = int(rng.integers(0, photo.shape[1] - size + 1))
                crop = np.rot90(photo[y : y + size, x : x + size], int(rng.integers(4)))
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                crop = (crop - crop.mean()) * rng.uniform(0.7, 1.3) + crop.mean() + rng.uniform(-20, 20)
                crop = crop + rng.normal(0, 3, crop.shape)
                pixels = np.clip(crop, 0, 255).astype(np.uint8)
                Image.fromarray(pixels, mode="L").save(folder / f"{index:03d}.png")
    return root


def build_dataset(name: str, workdir: Path, per_class: int) -> Path:
    """Write the source folder of ``name`` (once) and prepare it; return the prepare-data output folder."""
    source = workdir / "sources" / f"{name}-{per_class}"
    marker = source / ".complete"
    if not marker.exists():
        shutil.rmtree(source, ignore_errors=True)
        if name == "digits":
            write_digits_imagefolder(source, per_class=per_class)
        elif name == "lfw":
            write_lfw(source)
        else:
            write_textures(source, per_class)
        marker.write_text("{}")
    data_dir = workdir / "prepared" / f"{name}-{per_class}"
    shutil.rmtree(data_dir, ignore_errors=True)
    prepare_data(str(source), data_dir, SplitConfig(val_fraction=0.2, test_fraction=0.2, workers=2))
    return data_dir


# --- measurements ------------------------------------------------------------------------------------------------


def linear_head_accuracy(
    data_dir: Path, name: str, runtime: Runtime, cache_root: Path, image_size: int
) -> dict[str, Any]:
    """Test accuracy of ``fit_linear_head`` on ``name``'s cached training features, C chosen on val."""
    cache = open_feature_cache(str(cache_root), runtime)
    manifest, classes = localized_manifest(data_dir, runtime)
    backbone = load_backbone(name, image_size=image_size or None, cache_dir=runtime.cache_dir)
    features = dataset_features(backbone=backbone, manifest=manifest, classes=classes, runtime=runtime, cache=cache)
    if not features.cache_hit:
        raise RuntimeError(f"{name}: the features of {data_dir} were not in the cache that score_backbone filled")
    splits = features.splits
    probe = fit_linear_head(splits["train"], splits["val"], len(classes))
    x_test, y_test = splits["test"]
    with torch.no_grad():
        predicted = probe.head(x_test).argmax(1)
    return {
        "test_accuracy": float((predicted == y_test).float().mean()),
        "val_accuracy": probe.val_accuracy,
        "C": probe.C,
        "test_images": len(y_test),
    }


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children (DataLoader workers, once reaped).

    Less sensitive than wall time to other jobs on a shared machine (though spinning threads still count).
    """
    gc.collect()  # drop finished loaders, so their worker processes are joined and counted
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def fine_tune_epoch(data_dir: Path, workdir: Path, runtime: Runtime, cache_root: Path, image_size: int) -> dict:
    """One full fine-tuning epoch of :data:`FINE_TUNED` through the project's steps; the step and the epoch timed."""
    out = workdir / "fine-tune" / data_dir.name
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = extract_and_probe(
        data_dir,
        FINE_TUNED,
        out / "features",
        out / "probe",
        runtime,
        image_size=image_size,
        feature_cache=str(cache_root),
    )
    probe_seconds = time.perf_counter() - start
    config = TrainConfig(strategy="lp-ft", epochs=1)
    cpu, start = cpu_seconds(), time.perf_counter()
    training = fine_tune_step.fine_tune(data_dir, out / "probe", out / "model", config, runtime)
    step_seconds = time.perf_counter() - start
    epochs = [r for r in training.history if r["epoch"] == 1]
    if len(epochs) != 1:
        raise RuntimeError("the fine-tune step did not run exactly one training epoch")
    epoch_seconds = epochs[0]["seconds"]
    train_images = round(epochs[0]["images_per_second"] * epoch_seconds)
    step_cpu = cpu_seconds() - cpu
    return {
        "backbone": FINE_TUNED,
        "train_images": train_images,
        "extract_and_probe_seconds": round(probe_seconds, 2),
        "probe_cache_hit": summary.cache_hit,
        "step_seconds": round(step_seconds, 2),
        "step_cpu_seconds": round(step_cpu, 2),
        "epoch_seconds": round(epoch_seconds, 2),
        "strategy": training.strategy,
        "val_accuracy": training.val_accuracy,
        "probe_val_accuracy": training.probe_val_accuracy,
    }


def top1_correct(scores: list[float], truth: list[float]) -> bool:
    """Whether the candidate the score ranks first has the best test accuracy (ties in either count as right)."""
    best_truth = max(truth)
    best_score = max(scores)
    return any(t == best_truth for s, t in zip(scores, truth, strict=True) if s == best_score)


def bench_dataset(name: str, args: argparse.Namespace, runtime: Runtime) -> dict[str, Any]:
    """Scores, test accuracies, weighted taus and the scoring / fine-tuning times of one dataset."""
    from scipy.stats import kendalltau, weightedtau

    data_dir = build_dataset(name, args.workdir, args.per_class)
    prepared = PreparedData.read(data_dir)
    cache_root = args.workdir / "cache"
    shutil.rmtree(cache_root, ignore_errors=True)  # cold: every candidate extracts its features
    cache_root.mkdir(parents=True)
    rows = []
    for candidate in CANDIDATES:
        print(f"{name}: scoring {candidate} ...", file=sys.stderr)
        cpu, start = cpu_seconds(), time.perf_counter()
        score = score_backbone(
            data_dir,
            candidate,
            args.workdir / "scores" / name / candidate,
            runtime,
            image_size=args.image_size,
            feature_cache=str(cache_root),
        )
        seconds = time.perf_counter() - start
        cpu = cpu_seconds() - cpu
        row = {
            "candidate": candidate,
            "score_seconds": round(seconds, 2),
            "score_cpu_seconds": round(cpu, 2),
            "extraction_seconds": score.extraction_seconds,
            "scoring_seconds": score.scoring_seconds,
            "cache_hit": score.cache_hit,
            "input_size": score.input_size,
            "num_features": score.num_features,
            **{key: getattr(score, key) for key in SCORES},
        }
        row.update(linear_head_accuracy(data_dir, candidate, runtime, cache_root, args.image_size))
        rows.append(row)
    truth = [row["test_accuracy"] for row in rows]
    ranking = {}
    for key in SCORES:
        values = [row[key] for row in rows]
        ranking[key] = {
            "weighted_tau": float(weightedtau(values, truth).statistic),
            "kendall_tau": float(kendalltau(values, truth).statistic),
            "top1_correct": top1_correct(values, truth),
        }
    print(f"{name}: one fine-tuning epoch of {FINE_TUNED} ...", file=sys.stderr)
    epoch = fine_tune_epoch(data_dir, args.workdir, runtime, cache_root, args.image_size)
    scoring_total = sum(row["score_seconds"] for row in rows)
    scoring_cpu = sum(row["score_cpu_seconds"] for row in rows)
    return {
        "dataset": name,
        "classes": len(prepared.classes),
        "counts": {split: sum(per_class.values()) for split, per_class in prepared.counts.items()},
        "candidates": rows,
        "ranking": ranking,
        "fine_tune": epoch,
        "scoring_seconds_total": round(scoring_total, 2),
        "scoring_over_epoch": round(scoring_total / epoch["epoch_seconds"], 3),
        "scoring_over_step": round(scoring_total / epoch["step_seconds"], 3),
        "scoring_cpu_seconds_total": round(scoring_cpu, 2),
        "scoring_over_step_cpu": round(scoring_cpu / epoch["step_cpu_seconds"], 3),
    }


def fmt(value: float) -> str:
    """A tau for the table (``nan`` when undefined, e.g. when every test accuracy ties)."""
    return "nan" if value != value else f"{value:+.2f}"


def markdown(result: dict[str, Any]) -> str:
    """One dataset's tables: the candidates, then the ranking quality and the times."""
    counts = result["counts"]
    lines = [
        f"### {result['dataset']} ({result['classes']} classes; train / val / test = "
        f"{counts.get('train', 0)} / {counts.get('val', 0)} / {counts.get('test', 0)} images)",
        "",
        "| candidate | px | probe acc (CV) | kNN acc (CV) | LogME | test acc (linear head) | score_backbone s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["candidates"]:
        lines.append(
            f"| {row['candidate']} | {row['input_size']} | {row['probe_accuracy']:.3f} | {row['knn_accuracy']:.3f} | "
            f"{row['logme']:.3f} | {row['test_accuracy']:.3f} | {row['score_seconds']:.1f} |"
        )
    lines += ["", "| score | weighted tau | Kendall tau | top-1 right |", "|---|---:|---:|---|"]
    for key, value in result["ranking"].items():
        lines.append(
            f"| {key} | {fmt(value['weighted_tau'])} | {fmt(value['kendall_tau'])} | "
            f"{'yes' if value['top1_correct'] else 'no'} |"
        )
    epoch = result["fine_tune"]
    lines += [
        "",
        f"Scoring all 4 candidates (cold cache): {result['scoring_seconds_total']:.1f} s; one fine-tuning epoch of "
        f"{epoch['backbone']} on {epoch['train_images']} training images: {epoch['epoch_seconds']:.1f} s "
        f"(the whole fine-tune step: {epoch['step_seconds']:.1f} s); scoring / epoch = "
        f"{result['scoring_over_epoch']:.2f}, scoring / step = {result['scoring_over_step']:.2f}; in CPU seconds "
        f"(this process and its loader workers): scoring {result['scoring_cpu_seconds_total']:.0f}, step "
        f"{epoch['step_cpu_seconds']:.0f}, scoring / step = {result['scoring_over_step_cpu']:.2f}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build the datasets, score every candidate, fit the ground truth, time an epoch; print and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlops-bench-ranking"))
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--per-class", type=int, default=40, help="images a class of digits and textures (40)")
    parser.add_argument("--image-size", type=int, default=0, help="input size of the backbones; 0: their own")
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, of {', '.join(DATASETS)}")
    parser.add_argument(
        "--workers", type=int, default=default_workers(available_cpus()), help="DataLoader workers (default: CPUs)"
    )
    parser.add_argument("--verbose", action="store_true", help="log the steps' INFO lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")

    runtime = Runtime(device=torch.device("cpu"), workers=args.workers)
    for candidate in CANDIDATES:  # imports, and the one-time conversion of bundled weights, outside the timings
        load_backbone(candidate, cache_dir=runtime.cache_dir)
    load_before = os.getloadavg()
    start = time.perf_counter()
    results = []
    for name in args.datasets.split(","):
        results.append(bench_dataset(name, args, runtime))
        print(markdown(results[-1]) + "\n", flush=True)
    report = {
        "per_class": args.per_class,
        "image_size": args.image_size,
        "workers": runtime.workers,
        "torch_threads": torch.get_num_threads(),
        "cpus": available_cpus(),
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - start, 1),
        "load_average_before_after": [load_before, os.getloadavg()],
        "datasets": results,
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
