"""Object-detection transfer: Faster R-CNN on efficientnet_lite0, frozen / partial / full against a random backbone.

Usage (run by hand; bench/README.md has the measured run and its time)::

    OMP_NUM_THREADS=1 python bench/detection_transfer.py --workdir /tmp/tlops-bench-det \
        --json /tmp/tlops-bench-det/detection.json

Sets (:mod:`detection_datasets`): ``shapes`` (tlops's demo, its own seed) and ``digits`` (scikit-learn digit glyphs
on scikit-image pictures), each written once as a COCO pool export. A cell (set, size, seed) is the export of the
pool's first ``size`` training images and its fixed validation and test images, prepared by
:func:`tlops.data.detection.prepare.prepare_detection_data` (the data step's own path). Arms, every one the same
detector (``build_detector``: Faster R-CNN, ``--image-size``), trained by ``train_detector`` with the same epochs,
learning rate and batch, keeping the epoch of the best validation mAP50 (COCO metrics of the validation split,
as the fine-tune step's callback computes them), scored by ``detection_metrics`` on the test split:

* ``frozen``, ``partial`` (the top 2 blocks), ``full``: efficientnet_lite0's pretrained backbone;
* ``random``: the same network with a randomly initialised backbone (``pretrained=False``), trained ``full``.

``--rank`` adds the crop-probe check on the first set at the largest size: each backbone's ``score_backbone`` (the
selection step's cross-validated linear probe on the crops of the training boxes, ``pixels`` as the no-transfer
row) beside the test mAP50 of its detector (``--rank-strategy``; efficientnet_lite0's and the random backbone's
from the grid). ``--throughput-batches`` times ``detection_throughput`` (a training step through the loader
against forward+backward of one batch already in memory) on the largest training set.

One torch thread (``torch.set_num_threads(1)``): on a shared 2-core machine two threads made a step 2-3x slower.
The JSON (``--json``) is written after every arm.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detection_datasets  # the sibling module (bench/ is not a package)

SETS = detection_datasets.SETS
ARMS = ("frozen", "partial", "full", "random")
BACKBONE = "efficientnet_lite0"
SET_SEEDS = {"shapes": 11, "digits": 12}  # the pools' own seeds (the demo's is 0)


# --- one cell ------------------------------------------------------------------------------------------------------


def prepare_cell(name: str, size: int, args) -> Path:
    """The prepared folder (manifest, summary) of set ``name`` with ``size`` training images."""
    from tlops.data.detection.prepare import prepare_detection_data

    counts = {"train": max(args.sizes), "valid": args.val_images, "test": args.test_images}
    pool = detection_datasets.write_pool(
        name, args.workdir / "sources" / name, counts, args.image_size, SET_SEEDS[name]
    )
    cell = f"{name}-{size}"
    export = detection_datasets.subset_export(pool, args.workdir / "exports" / cell, counts | {"train": size})
    output = args.workdir / "prepared" / cell
    import shutil

    shutil.rmtree(output, ignore_errors=True)
    prepare_detection_data(str(export), output)
    return output


def loaders(manifest, classes: list[str], args) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    from tlops.train.detection_data import DetectionDataset, collate_detections

    result = {}
    for split, train in (("train", True), ("val", False), ("test", False)):
        rows = manifest[manifest["split"] == split].reset_index(drop=True)
        dataset = DetectionDataset(rows, classes, args.image_size, train=train)
        result[split] = DataLoader(
            dataset, batch_size=args.batch_size, shuffle=train, num_workers=0, collate_fn=collate_detections
        )
    return result


def train_arm(data: Path, backbone: str, strategy: str, pretrained: bool, seed: int, args) -> dict[str, Any]:
    """Train one detector on the prepared cell and score it on the test split."""
    import torch

    from tlops.data.loading import localize
    from tlops.evaluation.detection_metrics import detection_metrics, manifest_ground_truth, predict_detections
    from tlops.models.detector import backbone_blocks, build_detector
    from tlops.steps.outputs import load_prepared
    from tlops.train.detection_finetune import DetectionTrainConfig, train_detector

    manifest, prepared = load_prepared(data)
    manifest = localize(manifest, args.workdir / "cache" / "images", None)
    classes = prepared.classes
    split_rows = {s: manifest[manifest["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    batches = loaders(manifest, classes, args)
    val_truth = manifest_ground_truth(split_rows["val"], classes)

    def evaluate(model, loader, device) -> dict[str, float]:  # the fine-tune step's callback
        return detection_metrics(val_truth, predict_detections(model, loader, device), classes).metrics

    torch.manual_seed(seed)
    model = build_detector(
        backbone, len(classes), image_size=args.image_size, pretrained=pretrained, cache_dir=args.workdir / "cache"
    )
    config = DetectionTrainConfig(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, max_side=args.image_size, seed=seed
    )
    device = torch.device("cpu")
    began = time.perf_counter()
    history = train_detector(
        model,
        batches["train"],
        batches["val"],
        config,
        device,
        strategy=strategy,
        blocks=backbone_blocks(model),
        evaluate=evaluate,
        progress=False,
    )
    train_seconds = time.perf_counter() - began
    test = detection_metrics(
        manifest_ground_truth(split_rows["test"], classes), predict_detections(model, batches["test"], device), classes
    )
    boxes = {label: count for label, count in prepared.counts.get("train", {}).items()}
    return {
        "map50": test.metrics.get("map50", 0.0),
        "map": test.metrics.get("map", 0.0),
        "per_class_ap50": test.per_class_ap50,
        "best_epoch": history.best_epoch,
        "val_map50": [round(e.val.get("map50", float("nan")), 4) for e in history.epochs],
        "train_loss": [round(e.train_loss, 4) for e in history.epochs],
        "images_per_second": round(statistics.fmean(e.images_per_second for e in history.epochs), 3),
        "train_seconds": round(train_seconds, 1),
        "train_images": len(split_rows["train"]),
        "train_boxes": boxes,
        "test_images": len(split_rows["test"]),
    }


ARM_SETUP = {  # arm -> (strategy, pretrained)
    "frozen": ("frozen", True),
    "partial": ("partial", True),
    "full": ("full", True),
    "random": ("full", False),
}


# --- ranking and throughput ----------------------------------------------------------------------------------------


def crop_probe(data: Path, backbone: str, args) -> dict[str, Any]:
    """The selection step's score of ``backbone`` on the crops of the cell's training boxes."""
    from tlops.steps.runtime import Runtime
    from tlops.steps.score_backbone import score_backbone

    runtime = Runtime(cache_dir=args.workdir / "cache")
    score = score_backbone(data, backbone, args.workdir / "scores" / f"{data.name}-{backbone}", runtime)
    return {
        "probe_accuracy": score.probe_accuracy,
        "probe_std_error": score.probe_std_error,
        "knn_accuracy": score.knn_accuracy,
        "logme": score.logme,
        "crops": score.images,
    }


def throughput(data: Path, args) -> dict[str, Any]:
    """``detection_throughput`` of efficientnet_lite0's detector (``partial``) on the cell's training batches."""
    import torch

    from tlops.data.loading import localize
    from tlops.models.detector import backbone_blocks, build_detector
    from tlops.steps.outputs import load_prepared
    from tlops.train.detection_finetune import apply_strategy, detection_throughput, trained_block_indices

    manifest, prepared = load_prepared(data)
    manifest = localize(manifest, args.workdir / "cache" / "images", None)
    train = loaders(manifest, prepared.classes, args)["train"]
    batches = min(args.throughput_batches, len(train) - 1)
    if batches < 1:
        return {"error": f"{len(train)} training batches: need at least 2 (one to warm up)"}
    model = build_detector(
        BACKBONE, len(prepared.classes), image_size=args.image_size, cache_dir=args.workdir / "cache"
    )
    blocks = backbone_blocks(model)
    apply_strategy(model, blocks, trained_block_indices("partial", len(blocks), 2))
    measured = detection_throughput(model, train, torch.device("cpu"), batches=batches)
    return {
        "training": round(measured.training, 3),
        "forward_backward": round(measured.forward_backward, 3),
        "efficiency": round(measured.efficiency, 3),
        "batch_size": measured.batch_size,
        "batches": measured.batches,
    }


# --- report --------------------------------------------------------------------------------------------------------


def results_table(rows: list[dict]) -> str:
    """Per set and size: test mAP50 / mAP@[.5:.95] per arm (mean over seeds), best epoch, the best arm."""
    arms = [arm for arm in ARMS if any(r["arm"] == arm for r in rows)]
    lines = [
        "| set | train images | boxes (rarest class) | " + " | ".join(arms) + " | best arm |",
        "|---|---:|---:|" + "---:|" * len(arms) + "---|",
    ]
    keys = sorted({(r["set"], r["size"]) for r in rows}, key=lambda k: (SETS.index(k[0]) if k[0] in SETS else 9, k[1]))
    for name, size in keys:
        cells, means = [], {}
        rarest = "-"
        for arm in arms:
            found = [r for r in rows if (r["set"], r["size"], r["arm"]) == (name, size, arm)]
            if not found:
                cells.append("-")
                continue
            means[arm] = statistics.fmean(r["map50"] for r in found)
            coco = statistics.fmean(r["map"] for r in found)
            epochs = "/".join(str(r["best_epoch"]) for r in found)
            cells.append(f"{means[arm]:.3f} / {coco:.3f} (ep {epochs})")
            if found[0].get("train_boxes"):
                rarest = str(min(found[0]["train_boxes"].values()))
        best = max(means, key=means.get) if means else "-"
        lines.append(f"| {name} | {size} | {rarest} | " + " | ".join(cells) + f" | {best} |")
    return "\n".join(lines)


def ranking_table(ranking: list[dict]) -> str:
    lines = ["| backbone | crop probe CV accuracy | kNN | detector | test mAP50 |", "|---|---:|---:|---|---:|"]
    for row in ranking:
        probe = row.get("probe", {})
        lines.append(
            f"| {row['backbone']} | {probe.get('probe_accuracy', float('nan')):.3f} "
            f"± {probe.get('probe_std_error', float('nan')):.3f} | {probe.get('knn_accuracy', float('nan')):.3f} | "
            f"{row['detector']} | {row.get('map50', float('nan')):.3f} |"
        )
    return "\n".join(lines)


def rank_agreement(ranking: list[dict]) -> str:
    """Kendall's tau between the crop probe's accuracy and the detector's mAP50 (over the rows having both)."""
    from scipy.stats import kendalltau

    pairs = [(r["probe"]["probe_accuracy"], r["map50"]) for r in ranking if "probe" in r and "map50" in r]
    if len(pairs) < 2:
        return "too few rows for a rank agreement"
    tau = kendalltau([p for p, _ in pairs], [m for _, m in pairs]).statistic
    return f"Kendall's tau (crop probe vs detector mAP50, {len(pairs)} backbones): {tau:+.2f}"


# --- command line --------------------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def name_list(choices: tuple[str, ...] | None):
    def parse(text: str) -> list[str]:
        names = [v.strip() for v in text.split(",") if v.strip()]
        if names == ["none"]:
            return []
        unknown = [n for n in names if choices is not None and n not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(choices or ())} or none")
        return names

    return parse


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlops-bench-det"))
    parser.add_argument("--json", type=Path, help="write every row here (after each arm)")
    parser.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="an earlier --json whose rows join this run's (the ranking takes lite0's and random's mAP50 from them)",
    )
    parser.add_argument("--sets", type=name_list(SETS), default=list(SETS), help=f"comma-separated of {SETS}")
    parser.add_argument("--sizes", type=int_list, default=[24, 64], help="training images (nested subsets)")
    parser.add_argument("--seeds", type=int_list, default=[0], help="seeds of the detectors' training")
    parser.add_argument("--arms", type=name_list(ARMS), default=list(ARMS), help=f"comma-separated of {ARMS}")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of every arm (default 4)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate of every arm (tlops's default)")
    parser.add_argument("--batch-size", type=int, default=8, help="images a step (tlops's default 8)")
    parser.add_argument("--image-size", type=int, default=160, help="image side, written and trained (default 160)")
    parser.add_argument("--val-images", type=int, default=12, help="validation images (scored every epoch)")
    parser.add_argument("--test-images", type=int, default=30, help="test images")
    parser.add_argument(
        "--rank",
        type=name_list(None),
        default=["efficientnet_lite1", "efficientnet_lite2"],
        help="more backbones whose detector and crop probe join efficientnet_lite0's and pixels' (none: only those)",
    )
    parser.add_argument("--rank-strategy", default="partial", choices=ARMS[:3], help="their detectors' strategy")
    parser.add_argument("--no-rank", action="store_true", help="skip the crop-probe ranking")
    parser.add_argument("--throughput-batches", type=int, default=3, help="batches timed each way (0: skip)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the grid (smallest size first), then the ranking and the throughput; write the JSON, print the tables."""
    args = parse(argv)
    import torch

    torch.set_num_threads(1)
    args.workdir.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report: dict[str, Any] = {"config": config | {"torch": torch.__version__}, "rows": [], "ranking": []}
    for old in args.merge:
        report["rows"] += json.loads(old.read_text())["rows"]
    start = time.perf_counter()

    def save() -> None:
        report["seconds"] = round(time.perf_counter() - start, 1)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1, default=str))

    prepared: dict[tuple[str, int], Path] = {}
    for size in sorted(args.sizes):
        for name in args.sets:
            prepared[(name, size)] = prepare_cell(name, size, args)
            for seed in args.seeds:
                for arm in args.arms:
                    strategy, pretrained = ARM_SETUP[arm]
                    began = time.perf_counter()
                    result = train_arm(prepared[(name, size)], BACKBONE, strategy, pretrained, seed, args)
                    row = {"set": name, "size": size, "seed": seed, "arm": arm} | result
                    report["rows"].append(row | {"seconds": round(time.perf_counter() - began, 1)})
                    print(
                        f"{name} n={size} seed={seed} {arm}: mAP50 {row['map50']:.3f} mAP {row['map']:.3f} "
                        f"(best epoch {row['best_epoch']}, {time.perf_counter() - began:.0f} s; "
                        f"{time.perf_counter() - start:.0f} s in all)",
                        file=sys.stderr,
                        flush=True,
                    )
                    save()
    largest = (args.sets[0], max(args.sizes))
    if not args.no_rank:
        seed = args.seeds[0]
        data = prepared[largest]
        grid = {r["arm"]: r for r in report["rows"] if (r["set"], r["size"], r["seed"]) == (*largest, seed)}
        ranking: list[dict[str, Any]] = []
        for backbone in ["pixels", BACKBONE, *args.rank]:
            row: dict[str, Any] = {"backbone": backbone, "probe": crop_probe(data, backbone, args)}
            if backbone == "pixels":
                row |= {"detector": "random backbone, full"} | (
                    {"map50": grid["random"]["map50"]} if "random" in grid else {}
                )
            elif backbone == BACKBONE:
                row |= {"detector": args.rank_strategy} | (
                    {"map50": grid[args.rank_strategy]["map50"]} if args.rank_strategy in grid else {}
                )
            else:
                result = train_arm(data, backbone, args.rank_strategy, True, seed, args)
                row |= {"detector": args.rank_strategy, "map50": result["map50"], "run": result}
            ranking.append(row)
            report["ranking"] = ranking
            print(f"rank {backbone}: {row.get('map50', float('nan')):.3f}", file=sys.stderr, flush=True)
            save()
    if args.throughput_batches > 0:
        report["throughput"] = throughput(prepared[largest], args)
        save()
    print(f"{time.perf_counter() - start:.0f} s in all")
    print(f"### Test mAP50 / mAP@[.5:.95] (best epoch of {args.epochs})\n\n" + results_table(report["rows"]) + "\n")
    if report["ranking"]:
        print(f"### Crop probe against the detector ({largest[0]}, {largest[1]} training images)\n")
        print(ranking_table(report["ranking"]) + "\n\n" + rank_agreement(report["ranking"]) + "\n")
    if "throughput" in report:
        t = report["throughput"]
        loop = [r["images_per_second"] for r in report["rows"] if r["arm"] == "partial"]
        print("### Training throughput (images/s, one thread)\n")
        print(f"detection_throughput: {json.dumps(t)}")
        if loop:
            print(f"train_detector's epochs (partial arms, mean): {statistics.fmean(loop):.3f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
