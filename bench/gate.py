"""The promotion gate on the digits demo: how often it promotes an equal model, and how often a better one.

Usage (run by hand; about 3.5 minutes on 2 busy CPU cores)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TLOPS_WORKERS=0 python bench/gate.py \
        --workdir /tmp/tlops-bench-gate --json /tmp/tlops-bench-gate/gate.json

Data: all of scikit-learn's digits (1,797 images, 10 classes) written by ``write_digits_imagefolder``, prepared by
``prepare_data`` with the default split (``SplitConfig()``: 15 % val, 15 % test, seed 0), and the features of
``efficientnet_lite0`` at ``--image-size`` extracted once by ``extract_and_probe`` (through the feature cache in
the workdir, kept between runs). Every model is then the ``mlp-probe`` head of the ``fine_tune`` step
(``fit_mlp_head`` with TrainConfig's hidden width and dropout) fitted on the cached features with a seed; its
test probabilities are calibrated as the ``evaluate`` step does: ``calibrate`` on the validation logits, then
``softmax(test_logits / T)``.

* False promotion: ``--pairs`` pairs of equal recipes, champion seed ``2k``, challenger seed ``2k + 1``; the share
  ``compare`` promotes, with a Wilson 95 % interval.
* Power: the champion is the same head stopped after a fraction of an epoch (``--champion-steps`` optimizer
  steps: ``fit_mlp_head`` with ``epochs=1`` on the first ``steps x 256`` training images of a seeded permutation,
  so one epoch of that subset is exactly that many mini-batches of 256); the challenger the fully trained head;
  seeds paired (``2k`` both). The share promoted, with a Wilson interval. ``--champion-epochs`` adds a closer
  champion, ``fit_mlp_head(..., epochs=n)`` (default 4; 0 skips it).

Every scenario at the default ``GateConfig`` and with ``class_drop_images=0`` (the per-class bound without its
floor of one image), for ``metric="accuracy"`` and ``"macro-f1"``; per setting, the promotions the per-class
check vetoed (``checks["classes"]`` False while the other three checks passed) and the pairs it failed at all.
``--small-test N`` adds the same comparisons on the first ``N`` test images of every class (a smaller test split,
where ``floor(0.05 n)`` is 0 and the floor decides).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlops.data.config import SplitConfig
from tlops.data.demo import write_digits_imagefolder
from tlops.data.prepare import prepare_data
from tlops.evaluation.calibration import calibrate, softmax
from tlops.promotion.gate import GateConfig, GateResult, compare
from tlops.steps.extract_features import extract_and_probe
from tlops.steps.outputs import read_features
from tlops.steps.runtime import Runtime, available_cpus
from tlops.train.config import TrainConfig
from tlops.train.mlp import fit_mlp_head

BACKBONE = "efficientnet_lite0"
BATCH = 256  # fit_mlp_head's mini-batch
METRICS = ("accuracy", "macro-f1")
CHECKS = ("better", "significant", "classes", "calibration")

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Model:
    """One head's calibrated test probabilities and how it was trained."""

    probabilities: np.ndarray
    temperature: float
    test_accuracy: float
    best_epoch: int
    steps: int


# --- data --------------------------------------------------------------------------------------------------------


def digits_features(workdir: Path, image_size: int, runtime: Runtime) -> tuple[dict[str, Split], list[str], float]:
    """All digits as an ImageFolder, prepared and extracted once; the features per split, classes, seconds."""
    source = workdir / "sources" / "digits-all"
    if not (source / ".complete").exists():  # hidden: prepare_data lists no hidden files
        shutil.rmtree(source, ignore_errors=True)
        write_digits_imagefolder(source)
        (source / ".complete").write_text("{}")
    start = time.perf_counter()
    data_dir = workdir / "prepared" / "digits-all"
    shutil.rmtree(data_dir, ignore_errors=True)
    prepared = prepare_data(str(source), data_dir, replace(SplitConfig(), workers=2))
    work = workdir / "runs" / f"digits-{image_size}"
    cache = str(workdir / "feature-cache")
    extract_and_probe(
        data_dir, BACKBONE, work / "features", work / "probe", runtime, image_size=image_size, feature_cache=cache
    )
    return read_features(work / "features"), prepared.classes, time.perf_counter() - start


def first_per_class(targets: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` test images of every class."""
    return np.concatenate([np.flatnonzero(targets == c)[:per_class] for c in np.unique(targets)])


# --- models ------------------------------------------------------------------------------------------------------


def logits(head: torch.nn.Module, features: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return head(features.float()).numpy().astype(np.float64)


def calibrated(head: torch.nn.Module, splits: dict[str, Split], classes: list[str]) -> tuple[np.ndarray, float]:
    """Test probabilities as the evaluate step computes them: the temperature fitted on the val logits."""
    (val_x, val_y), (test_x, test_y) = splits["val"], splits["test"]
    test_logits = logits(head, test_x)
    calibration = calibrate(logits(head, val_x), val_y.numpy(), test_logits, test_y.numpy(), len(classes))
    return softmax(test_logits, calibration.temperature), calibration.temperature


def fit(splits: dict[str, Split], classes: list[str], seed: int, budget: tuple[str, int] | None = None) -> Model:
    """The mlp-probe head with ``seed``: fully trained, or stopped after ``("steps", n)`` or ``("epochs", n)``.

    ``("steps", n)``: one epoch over the first ``n x 256`` training images of a permutation seeded by ``seed``,
    so exactly ``n`` mini-batches (fit_mlp_head's epoch is the unit it can stop at).
    """
    train = splits["train"]
    kwargs: dict[str, Any] = {"seed": seed}
    if budget is not None and budget[0] == "steps":
        order = torch.randperm(len(train[1]), generator=torch.Generator().manual_seed(seed))[: budget[1] * BATCH]
        train, kwargs["epochs"] = (train[0][order], train[1][order]), 1
    elif budget is not None:
        kwargs["epochs"] = budget[1]
    result = fit_mlp_head(train, splits["val"], len(classes), TrainConfig.mlp_hidden, TrainConfig.mlp_dropout, **kwargs)
    probabilities, temperature = calibrated(result.head, splits, classes)
    accuracy = float((probabilities.argmax(1) == splits["test"][1].numpy()).mean())
    steps = result.best_epoch * math.ceil(len(train[1]) / BATCH)
    return Model(probabilities, temperature, accuracy, result.best_epoch, steps)


def budget_name(budget: tuple[str, int]) -> str:
    return f"{budget[1]} {budget[0][:-1] if budget[1] == 1 else budget[0]}"


def train_models(
    splits: dict[str, Split], classes: list[str], pairs: int, budgets: list[tuple[str, int]]
) -> dict[str, list[Model]]:
    """Fully trained heads of seeds ``0 .. 2 pairs - 1``, and per budget the stopped champions of seeds 0, 2, ..."""
    models: dict[str, list[Model]] = {"full": []}
    for seed in range(2 * pairs):
        models["full"].append(fit(splits, classes, seed))
        print(f"  head seed {seed}: test accuracy {models['full'][-1].test_accuracy:.3f}", file=sys.stderr, flush=True)
    for budget in budgets:
        models[budget_name(budget)] = [fit(splits, classes, 2 * k, budget) for k in range(pairs)]
    return models


def scenarios(models: dict[str, list[Model]], pairs: int) -> dict[str, list[tuple[Model, Model]]]:
    """(challenger, champion) pairs: equal recipes (seeds 2k+1 vs 2k); full vs stopped early (seed 2k both)."""
    full = models["full"]
    result = {"false-promotion": [(full[2 * k + 1], full[2 * k]) for k in range(pairs)]}
    for name, stopped in models.items():
        if name != "full":
            result[f"power: champion {name}"] = [(full[2 * k], stopped[k]) for k in range(pairs)]
    return result


# --- the gate ----------------------------------------------------------------------------------------------------


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default)."""
    if not trials:
        return float("nan"), float("nan")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def gate_row(result: GateResult) -> dict[str, Any]:
    """What the JSON keeps of one comparison."""
    return {
        "promote": result.promote,
        "checks": result.checks,
        "difference": round(result.difference, 4),
        "ci_low": round(result.ci_low, 4),
        "mcnemar_p": result.mcnemar_p,
        "challenger_only_correct": result.challenger_only_correct,
        "champion_only_correct": result.champion_only_correct,
        "worst_class": result.worst_class,
        "worst_class_images_lost": result.worst_class_images_lost,
        "worst_class_images_allowed": result.worst_class_images_allowed,
        "ece_change": round(result.challenger_ece - result.champion_ece, 4),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Promotions with their Wilson interval, failures of each check, and the promotions the class check vetoed."""
    promoted = sum(r["promote"] for r in rows)
    others = [c for c in CHECKS if c != "classes"]
    vetoed = sum(not r["checks"]["classes"] and all(r["checks"][c] for c in others) for r in rows)
    low, high = wilson(promoted, len(rows))
    return {
        "pairs": len(rows),
        "promoted": promoted,
        "rate": promoted / len(rows),
        "wilson_low": low,
        "wilson_high": high,
        "failed": {c: sum(not r["checks"][c] for r in rows) for c in CHECKS},
        "class_vetoes": vetoed,
        "mean_difference": float(np.mean([r["difference"] for r in rows])),
    }


def run_setting(
    pairs: list[tuple[Model, Model]], targets: np.ndarray, classes: list[str], config: GateConfig, index: np.ndarray
) -> dict[str, Any]:
    """``compare`` on every pair, restricted to the test images ``index``."""
    rows = [
        gate_row(compare(new.probabilities[index], old.probabilities[index], targets[index], classes, config))
        for new, old in pairs
    ]
    return {"summary": summarize(rows), "pairs": rows}


def settings(small_test: int) -> list[tuple[str, str, int]]:
    """(test set, metric, class_drop_images) of every setting."""
    tests = ["all"] + ([f"first {small_test}/class"] if small_test else [])
    return [(test, metric, floor) for test in tests for metric in METRICS for floor in (1, 0)]


def run_gate(
    scenario_pairs: dict[str, list[tuple[Model, Model]]], targets: np.ndarray, classes: list[str], small_test: int
) -> list[dict[str, Any]]:
    """Every scenario under every setting."""
    results = []
    for test, metric, floor in settings(small_test):
        index = np.arange(len(targets)) if test == "all" else first_per_class(targets, small_test)
        config = GateConfig(metric=metric, class_drop_images=floor)
        for scenario, pairs in scenario_pairs.items():
            outcome = run_setting(pairs, targets, classes, config, index)
            results.append({"scenario": scenario, "test": test, "test_images": len(index)} | _config(config) | outcome)
    return results


def _config(config: GateConfig) -> dict[str, Any]:
    return {"metric": config.metric, "class_drop_images": config.class_drop_images}


# --- report ------------------------------------------------------------------------------------------------------


def markdown(results: list[dict[str, Any]]) -> str:
    """One row per (scenario, test set, metric, floor)."""
    lines = [
        "| scenario | test images | metric | class_drop_images | promoted | rate [Wilson 95 %] | failed better / "
        "significant / classes / calibration | class-check vetoes | mean difference |",
        "|---|---:|---|---:|---:|---|---|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (r["scenario"], r["test"] != "all", r["metric"], -r["class_drop_images"])):
        s, f = r["summary"], r["summary"]["failed"]
        lines.append(
            f"| {r['scenario']} | {r['test_images']} | {r['metric']} | {r['class_drop_images']} | "
            f"{s['promoted']}/{s['pairs']} | {s['rate']:.2f} [{s['wilson_low']:.2f}, {s['wilson_high']:.2f}] | "
            f"{f['better']} / {f['significant']} / {f['classes']} / {f['calibration']} | {s['class_vetoes']} | "
            f"{s['mean_difference']:+.4f} |"
        )
    return "\n".join(lines)


def models_line(models: dict[str, list[Model]]) -> str:
    """Test accuracies of the heads of every budget."""
    parts = []
    for name, group in models.items():
        accuracy = [m.test_accuracy for m in group]
        temperature = [m.temperature for m in group]
        parts.append(
            f"- {name}: test accuracy {np.mean(accuracy):.3f} (range {min(accuracy):.3f}-{max(accuracy):.3f}), "
            f"temperature {min(temperature):.2f}-{max(temperature):.2f}, optimizer steps to the kept epoch "
            f"{min(m.steps for m in group)}-{max(m.steps for m in group)}"
        )
    return "\n".join(parts)


def model_record(model: Model, seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "test_accuracy": model.test_accuracy,
        "temperature": model.temperature,
        "best_epoch": model.best_epoch,
        "optimizer_steps": model.steps,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlops-bench-gate"))
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--pairs", type=int, default=20, help="pairs per scenario (default 20)")
    parser.add_argument("--image-size", type=int, default=64, help=f"input size of {BACKBONE} (default 64)")
    parser.add_argument(
        "--champion-steps", type=int, default=2, help="optimizer steps of the power champion (default 2: 0.4 epoch)"
    )
    parser.add_argument(
        "--champion-epochs", type=int, default=4, help="epochs of a second, closer power champion (0: skip; 4)"
    )
    parser.add_argument(
        "--small-test", type=int, default=13, help="also gate on the first N test images a class (0: skip; 13)"
    )
    return parser.parse_args(argv)


def report(args: argparse.Namespace, models: dict[str, list[Model]], targets: np.ndarray, **extra: Any) -> dict:
    """The JSON: settings, every head, every comparison."""
    return {
        "backbone": BACKBONE,
        "image_size": args.image_size,
        "pairs": args.pairs,
        "champion_steps": args.champion_steps,
        "champion_epochs": args.champion_epochs,
        "small_test": args.small_test,
        "test_images_per_class": np.bincount(targets).tolist(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
        "models": {
            name: [model_record(m, seed if name == "full" else 2 * seed) for seed, m in enumerate(group)]
            for name, group in models.items()
        },
    } | extra


def main(argv: list[str] | None = None) -> int:
    """Extract once, train the heads, run the gate in every setting, print the table and write the JSON."""
    args = parse(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    runtime = Runtime(device=torch.device("cpu"), batch_size=64, workers=int(os.environ.get("TLOPS_WORKERS") or 0))
    budgets = [("steps", args.champion_steps)] + ([("epochs", args.champion_epochs)] if args.champion_epochs else [])
    start = time.perf_counter()
    splits, classes, feature_seconds = digits_features(args.workdir, args.image_size, runtime)
    models = train_models(splits, classes, args.pairs, budgets)
    train_seconds = time.perf_counter() - start - feature_seconds
    targets = splits["test"][1].numpy()
    results = run_gate(scenarios(models, args.pairs), targets, classes, args.small_test)
    seconds = time.perf_counter() - start
    counts = {split: len(y) for split, (_, y) in splits.items()}
    print(
        f"digits, train / val / test = {counts['train']} / {counts['val']} / {counts['test']}; {BACKBONE} at "
        f"{args.image_size} px; mlp-probe heads\n\n{models_line(models)}\n"
    )
    print(markdown(results) + "\n")
    heads = sum(len(group) for group in models.values())
    print(
        f"{seconds:.0f} s in all (prepare + features {feature_seconds:.0f} s, {heads} heads {train_seconds:.0f} s); "
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {available_cpus()} CPUs"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        data = report(args, models, targets, counts=counts, seconds=round(seconds, 1), results=results)
        args.json.write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
