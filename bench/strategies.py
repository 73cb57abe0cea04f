"""Transfer strategies at an equal epoch budget: accuracy, cost, and whether ``auto`` keeps its promise.

Usage (run by hand; about 8 minutes for the defaults on 2 busy CPU cores)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TLOPS_WORKERS=0 python bench/strategies.py \
        --workdir /tmp/tlops-bench-strategies --json /tmp/tlops-bench-strategies/strategies.json

Three small datasets built offline from packaged data (written once under ``WORKDIR/sources``):

* ``digits``: scikit-learn's handwritten digits via ``write_digits_imagefolder`` (``--per-class`` images a class,
  10 classes, 32x32 grey PNGs);
* ``lfw``: scikit-image's ``lfw_subset()`` (all 200 25x25 grey images: the first 100 faces, the last 100 not),
  two classes (``--per-class`` does not apply);
* ``digits-far``: the same digits, colour-inverted (dark strokes on white) and each turned by 0 or 90 degrees at
  random: further from ImageNet than the plain digits. Only 0 and 90: with 180 and 270 too, a turned 6 would be
  a 9.

Each dataset is prepared once by ``prepare_data`` (``SplitConfig(seed=0)``: 15 % val, 15 % test), the
``select_backbone`` step scores ``efficientnet_lite0`` and the raw-pixel baseline on it (the evidence ``auto``
reads in the pipeline: kNN, probe accuracy, pixels against the backbone; ``--no-selection`` skips it), and
``extract_and_probe`` extracts the features of ``efficientnet_lite0`` at ``--image-size`` (from the feature cache
the selection filled) and fits the linear probe. Then every strategy of ``--strategies`` runs through the
``fine_tune`` step with ``TrainConfig(strategy=S, epochs=--epochs)`` (every other setting at its default) from
that same probe, and the ``evaluate`` step scores the model on the test split. Per strategy: the strategy the
step applied, validation accuracy, test accuracy with its standard error ``sqrt(p (1 - p) / n)``, training
throughput (the mean of the history's ``images_per_second``; none for the probes, which train no backbone) and
the wall seconds of the ``fine_tune`` step.

For ``auto``: the strategy its rule chose (``decide`` on the recorded evidence) and the one it kept (a fine-tuned
model is kept only if it beats the chosen probe on validation by more than one paired standard error), whether its
recorded validation accuracy is at least the best probe's (for a probe chosen by cross-validation that is its
cross-validated estimate, which the one-standard-error rule may put a little below another probe's), and whether its
test accuracy is within one standard error of the best test accuracy of the other strategies run
(``best - SE(best)``). bench/transfer.py is the broader benchmark that sets ``auto``'s rules.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from ranking import write_lfw  # bench/ is on sys.path when run as python bench/strategies.py

from tlops.data.demo import write_digits_imagefolder
from tlops.data.prepare import SplitConfig, prepare_data
from tlops.models.backbones import load_backbone
from tlops.steps.evaluate import evaluate
from tlops.steps.extract_features import extract_and_probe
from tlops.steps.fine_tune import fine_tune
from tlops.steps.outputs import PreparedData
from tlops.steps.runtime import Runtime, available_cpus
from tlops.steps.select_backbone import select_backbone
from tlops.train.auto import Evidence, decide
from tlops.train.config import TrainConfig
from tlops.train.strategies import IMAGE_CLASSIFICATION, STRATEGIES, strategies_for

PROBES = tuple(name for name, strategy in STRATEGIES if strategy.kind == "feature-based")

BACKBONE = "efficientnet_lite0"
DATASETS = ("digits", "lfw", "digits-far")
ORDER = ("linear-probe", "mlp-probe", "partial", "surgical", "lp-ft", "gradual", "auto")
assert set(ORDER) == set(strategies_for(IMAGE_CLASSIFICATION))  # the image strategies (lora is for texts)
TOLERANCE = 1e-9


# --- datasets ----------------------------------------------------------------------------------------------------


def write_digits_far(root: Path, per_class: int, seed: int = 0) -> Path:
    """The digits, inverted (255 - x) and turned by 0 or 90 degrees at random, as ``root/<digit>/`` PNGs."""
    plain = root.parent / f"{root.name}.plain"
    shutil.rmtree(plain, ignore_errors=True)
    write_digits_imagefolder(plain, per_class=per_class)
    rng = np.random.default_rng(seed)
    for path in sorted(plain.rglob("*.png")):
        pixels = 255 - np.asarray(Image.open(path).convert("L"))
        turned = np.ascontiguousarray(np.rot90(pixels, int(rng.integers(2))))
        folder = root / path.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(turned, mode="L").save(folder / path.name)
    shutil.rmtree(plain)
    return root


def build_dataset(name: str, workdir: Path, per_class: int) -> Path:
    """Write the source folder of ``name`` (once) and prepare it; return the prepare-data output folder."""
    size = "all" if name == "lfw" else per_class
    source = workdir / "sources" / f"{name}-{size}"
    marker = source / ".complete"  # hidden: prepare_data lists no hidden files
    if not marker.exists():
        shutil.rmtree(source, ignore_errors=True)
        if name == "digits":
            write_digits_imagefolder(source, per_class=per_class)
        elif name == "lfw":
            write_lfw(source)
        elif name == "digits-far":
            write_digits_far(source, per_class)
        else:
            raise SystemExit(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
        marker.write_text("{}")
    data_dir = workdir / "prepared" / f"{name}-{size}"
    shutil.rmtree(data_dir, ignore_errors=True)
    prepare_data(str(source), data_dir, SplitConfig(seed=0, workers=2))
    return data_dir


# --- measurements ------------------------------------------------------------------------------------------------


def standard_error(accuracy: float, images: int) -> float:
    """Binomial standard error of an accuracy measured on ``images`` images: ``sqrt(p (1 - p) / n)``."""
    return math.sqrt(accuracy * (1 - accuracy) / images) if images else float("nan")


def run_strategy(
    strategy: str, data_dir: Path, inputs: dict[str, Path | None], out: Path, args: argparse.Namespace, runtime: Runtime
) -> dict[str, Any]:
    """Fine-tune with ``strategy`` at the epoch budget, then evaluate on the test split."""
    shutil.rmtree(out, ignore_errors=True)
    config = TrainConfig(strategy=strategy, epochs=args.epochs, seed=args.seed, layer_decay=args.layer_decay)
    start = time.perf_counter()
    training = fine_tune(
        data_dir,
        inputs["probe"],
        out / "model",
        config,
        runtime,
        features_dir=inputs["features"],
        selection_dir=inputs["selection"],
    )
    seconds = time.perf_counter() - start
    assert training is not None  # one process: rank 0
    start = time.perf_counter()
    evaluated = evaluate(data_dir, out / "model", out / "evaluation", runtime, tracking_uri=args.tracking_uri)
    eval_seconds = time.perf_counter() - start
    test_images = int(sum(sum(row) for row in evaluated.evaluation.confusion))
    test_accuracy = float(evaluated.evaluation.metrics["test_accuracy"])
    rates = [r["images_per_second"] for r in training.history if r.get("images_per_second")]
    row = {
        "strategy": strategy,
        "applied": training.strategy,
        "best_epoch": training.best_epoch,
        "val_accuracy": training.val_accuracy,
        "probe_val_accuracy": training.probe_val_accuracy,
        "test_accuracy": test_accuracy,
        "test_std_error": standard_error(test_accuracy, test_images),
        "test_images": test_images,
        "images_per_second": round(sum(rates) / len(rates), 2) if rates else None,
        "seconds": round(seconds, 2),
        "evaluate_seconds": round(eval_seconds, 2),
        "epochs_trained": sum(1 for r in training.history if r.get("train_loss") is not None),
        "history": training.history,
        "reasons": training.reasons,
    }
    if strategy == "auto":
        evidence = Evidence(**training.evidence)
        row["decided"] = decide(config, evidence)[0]
        row["evidence"] = training.evidence
    return row


def auto_verdict(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Whether ``auto`` validated at least as well as the best probe and tested within one SE of the best strategy."""
    auto = next((r for r in rows if r["strategy"] == "auto"), None)
    others = [r for r in rows if r["strategy"] != "auto"]
    if auto is None:
        return None
    evidence = auto["evidence"]
    probe_vals = [evidence["linear_probe_val"], evidence.get("probe_accuracy")]
    probe_vals += [r["val_accuracy"] for r in others if r["strategy"] in PROBES]
    best_probe_val = max(v for v in probe_vals if v is not None)
    verdict: dict[str, Any] = {
        "decided": auto["decided"],
        "kept": auto["applied"],
        "val_accuracy": auto["val_accuracy"],
        "best_probe_val_accuracy": best_probe_val,
        "val_at_least_best_probe": auto["val_accuracy"] >= best_probe_val - TOLERANCE,
        "test_accuracy": auto["test_accuracy"],
        "reason": auto["reasons"][-1],
    }
    if others:
        best = max(others, key=lambda r: (r["test_accuracy"], r["val_accuracy"]))
        verdict |= {
            "best_strategy": best["strategy"],
            "best_test_accuracy": best["test_accuracy"],
            "best_test_std_error": best["test_std_error"],
            "test_within_one_se_of_best": auto["test_accuracy"]
            >= best["test_accuracy"] - best["test_std_error"] - TOLERANCE,
        }
    return verdict


def bench_dataset(name: str, args: argparse.Namespace, runtime: Runtime) -> dict[str, Any]:
    """Prepare and extract once, then every strategy at the same epoch budget, each evaluated on test."""
    start = time.perf_counter()
    data_dir = build_dataset(name, args.workdir, args.per_class)
    prepared = PreparedData.read(data_dir)
    prepare_seconds = time.perf_counter() - start
    work = args.workdir / "runs" / name
    shutil.rmtree(work, ignore_errors=True)
    cache = str(args.workdir / "feature-cache")
    start = time.perf_counter()
    selection = None
    if args.selection:
        print(f"{name}: select-backbone ({BACKBONE} and raw pixels) ...", file=sys.stderr)
        selection = work / "selection"
        select_backbone(data_dir, [BACKBONE], selection, runtime, image_size=args.image_size, feature_cache=cache)
    select_seconds = time.perf_counter() - start
    start = time.perf_counter()
    probe = extract_and_probe(
        data_dir, BACKBONE, work / "features", work / "probe", runtime, image_size=args.image_size, feature_cache=cache
    )
    extract_seconds = time.perf_counter() - start
    inputs = {"probe": work / "probe", "features": work / "features", "selection": selection}
    rows = []
    for strategy in args.strategies:
        print(f"{name}: {strategy}, {args.epochs} epoch(s) ...", file=sys.stderr)
        rows.append(run_strategy(strategy, data_dir, inputs, work / strategy, args, runtime))
    return {
        "dataset": name,
        "classes": len(prepared.classes),
        "counts": {split: sum(per_class.values()) for split, per_class in prepared.counts.items()},
        "prepare_seconds": round(prepare_seconds, 2),
        "select_seconds": round(select_seconds, 2),
        "extract_and_probe_seconds": round(extract_seconds, 2),
        "linear_probe_val_accuracy": probe.val_accuracy,
        "strategies": rows,
        "auto": auto_verdict(rows),
    }


# --- report ------------------------------------------------------------------------------------------------------


def yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def markdown(result: dict[str, Any], epochs: int, image_size: int) -> str:
    """One dataset's table, and the line on ``auto``."""
    counts = result["counts"]
    lines = [
        f"### {result['dataset']} ({result['classes']} classes; train / val / test = {counts.get('train', 0)} / "
        f"{counts.get('val', 0)} / {counts.get('test', 0)} images; {BACKBONE} at {image_size} px; {epochs} epochs)",
        "",
        "| strategy | applied | val acc | test acc ± SE | train img/s | fine-tune s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in result["strategies"]:
        rate = "-" if row["images_per_second"] is None else f"{row['images_per_second']:.1f}"
        lines.append(
            f"| {row['strategy']} | {row['applied']} | {row['val_accuracy']:.3f} | "
            f"{row['test_accuracy']:.3f} ± {row['test_std_error']:.3f} | {rate} | {row['seconds']:.1f} |"
        )
    verdict = result["auto"]
    if verdict is not None:
        text = (
            f"auto decided **{verdict['decided']}**, kept **{verdict['kept']}** ({verdict['reason']}); "
            f"val {verdict['val_accuracy']:.3f} >= best probe val {verdict['best_probe_val_accuracy']:.3f}: "
            f"{yes(verdict['val_at_least_best_probe'])}"
        )
        if "best_strategy" in verdict:
            text += (
                f"; test {verdict['test_accuracy']:.3f} within one SE of the best strategy's "
                f"({verdict['best_strategy']}, {verdict['best_test_accuracy']:.3f} ± "
                f"{verdict['best_test_std_error']:.3f}): {yes(verdict['test_within_one_se_of_best'])}"
            )
        lines += ["", text + "."]
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> str:
    """One row per dataset: what ``auto`` chose and whether it kept its promise."""
    lines = [
        "| dataset | auto decided | auto kept | auto val | best probe val | val >= best probe | auto test "
        "| best strategy (test ± SE) | auto test within 1 SE |",
        "|---|---|---|---:|---:|---|---:|---|---|",
    ]
    for result in results:
        v = result["auto"]
        if v is None:
            continue
        best = (
            f"{v['best_strategy']} ({v['best_test_accuracy']:.3f} ± {v['best_test_std_error']:.3f})"
            if "best_strategy" in v
            else "-"
        )
        within = yes(v["test_within_one_se_of_best"]) if "best_strategy" in v else "-"
        lines.append(
            f"| {result['dataset']} | {v['decided']} | {v['kept']} | {v['val_accuracy']:.3f} | "
            f"{v['best_probe_val_accuracy']:.3f} | {yes(v['val_at_least_best_probe'])} | {v['test_accuracy']:.3f} | "
            f"{best} | {within} |"
        )
    return "\n".join(lines)


def strategy_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STRATEGIES and name != "full"]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown strategies {unknown}; choose from {', '.join(ORDER)}")
    return names


def main(argv: list[str] | None = None) -> int:
    """Build the datasets, run every strategy on each, print the tables and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlops-bench-strategies"))
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, of {', '.join(DATASETS)}")
    parser.add_argument("--per-class", type=int, default=40, help="images a class of digits and digits-far (40)")
    parser.add_argument("--image-size", type=int, default=64, help=f"input size of {BACKBONE} (default 64)")
    parser.add_argument("--epochs", type=int, default=3, help="epoch budget of every strategy (default 3)")
    parser.add_argument(
        "--strategies", type=strategy_list, default=list(ORDER), help=f"comma-separated (default: {','.join(ORDER)})"
    )
    parser.add_argument("--seed", type=int, default=0, help="TrainConfig.seed (default 0)")
    parser.add_argument(
        "--layer-decay",
        type=float,
        default=TrainConfig.layer_decay,
        help=f"TrainConfig.layer_decay of the fine-tuning strategies (default {TrainConfig.layer_decay})",
    )
    parser.add_argument(
        "--no-selection",
        dest="selection",
        action="store_false",
        help="skip select-backbone: auto then decides without the kNN and raw-pixel evidence",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("TLOPS_WORKERS") or 0),
        help="DataLoader workers (default: $TLOPS_WORKERS, else 0)",
    )
    parser.add_argument("--verbose", action="store_true", help="log the steps' INFO lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.tracking_uri = f"sqlite:///{args.workdir.resolve() / 'none.db'}"  # evaluate's gate needs a registry
    shutil.rmtree(args.workdir / "feature-cache", ignore_errors=True)  # cold: extraction timed from scratch

    runtime = Runtime(device=torch.device("cpu"), batch_size=64, workers=args.workers)
    load_backbone(BACKBONE, cache_dir=runtime.cache_dir)  # the one-time conversion of bundled weights, untimed
    load_before = os.getloadavg()
    start = time.perf_counter()
    results = []
    for name in args.datasets.split(","):
        results.append(bench_dataset(name, args, runtime))
        print(markdown(results[-1], args.epochs, args.image_size) + "\n", flush=True)
    seconds = time.perf_counter() - start
    print("### auto\n\n" + summary(results) + "\n")
    print(
        f"{seconds:.0f} s in all; torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
        f"{runtime.workers} loader workers, {available_cpus()} CPUs"
    )
    report = {
        "backbone": BACKBONE,
        "per_class": args.per_class,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "strategies": args.strategies,
        "selection": args.selection,
        "workers": runtime.workers,
        "torch_threads": torch.get_num_threads(),
        "cpus": available_cpus(),
        "torch": torch.__version__,
        "seconds": round(seconds, 1),
        "load_average_before_after": [load_before, os.getloadavg()],
        "datasets": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
