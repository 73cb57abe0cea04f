"""Label-noise benchmark of the audit: precision and recall of its flags against injected flips, and test accuracy.

Per dataset (``bench/transfer.py``'s offline builders), efficientnet_lite0 features of every split come from the
feature cache (one backbone pass). Per noise rate and seed, that share of the train+val labels is moved to another
class at random; the audit (out-of-fold probe + confident learning, :mod:`tlops.evaluation.audit`) flags examples,
scored against the flips; then a linear probe (standardised features, logistic regression) is trained on the noisy
train+val with and without the flagged examples and scored on the clean test split.

    python bench/label_noise.py --workdir /tmp/tlops-bench-noise --sets digits,textures --noise 0.05,0.2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from transfer import source_dir

from tlops.data.prepare import prepare_data
from tlops.evaluation.audit.confident import find_label_issues
from tlops.evaluation.audit.out_of_fold import out_of_fold_probabilities
from tlops.steps.encoders import encoder_features, load_encoder, prepared_manifest
from tlops.steps.features import open_feature_cache
from tlops.steps.runtime import Runtime


def features_of(name: str, workdir: Path, image_size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split, efficientnet_lite0 features and class ids of dataset ``name`` (cached under ``workdir``)."""
    runtime = Runtime(cache_dir=workdir / "cache")
    prepared = workdir / "prepared" / name
    if not (prepared / "manifest.csv").exists():
        prepare_data(str(source_dir(name, workdir)), prepared)
    manifest, classes, task = prepared_manifest(prepared, runtime)
    encoder = load_encoder(task, "efficientnet_lite0", runtime, image_size=image_size)
    splits = encoder_features(task, encoder, manifest, classes, runtime, open_feature_cache("", runtime)).splits
    return {split: (f.float().numpy(), t.numpy()) for split, (f, t) in splits.items()}


def probe_accuracy(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], seed: int) -> float:
    """Test accuracy of a logistic regression on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000, random_state=seed))
    probe.fit(*train)
    return float((probe.predict(test[0]) == test[1]).mean())


def cell(splits: dict, rate: float, seed: int, method: str) -> dict:
    """One noise rate and seed: flag precision and recall, test accuracy without and with exclusion."""
    features = np.concatenate([splits["train"][0], splits["val"][0]])
    labels = np.concatenate([splits["train"][1], splits["val"][1]])
    classes = int(labels.max()) + 1
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), size=round(rate * len(labels)), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, size=len(flipped))) % classes
    probabilities, _ = out_of_fold_probabilities(features, noisy, classes, seed=seed)
    flags = find_label_issues(probabilities, noisy, method).indices
    hits = len(np.intersect1d(flags, flipped))
    keep = np.setdiff1d(np.arange(len(labels)), flags)
    return {
        "noise": rate,
        "seed": seed,
        "examples": len(labels),
        "flipped": len(flipped),
        "flagged": len(flags),
        "precision": hits / max(len(flags), 1),
        "recall": hits / max(len(flipped), 1),
        "acc_noisy": probe_accuracy((features, noisy), splits["test"], seed),
        "acc_excluded": probe_accuracy((features[keep], noisy[keep]), splits["test"], seed),
        "acc_clean": probe_accuracy((features, labels), splits["test"], seed),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every dataset, noise rate and seed; print a Markdown table and (``--output``) the rows as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlops-bench-noise"))
    parser.add_argument("--sets", default="digits,textures", help="datasets of bench/transfer.py")
    parser.add_argument("--noise", default="0.05,0.2", help="noise rates")
    parser.add_argument("--seeds", default="0,1", help="seeds of the flips and folds")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--method", default="prune_by_noise_rate", choices=("prune_by_noise_rate", "confident_joint"))
    parser.add_argument("--output", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = []
    for name in args.sets.split(","):
        splits = features_of(name, args.workdir, args.image_size)
        for rate in (float(r) for r in args.noise.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows.append({"dataset": name, **cell(splits, rate, seed, args.method)})
    print("| dataset | noise | seed | train+val | flipped | flagged | precision | recall | test acc noisy | "
          "test acc excluded | test acc clean labels |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['noise']:.0%} | {r['seed']} | {r['examples']} | {r['flipped']} | "
              f"{r['flagged']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['acc_noisy']:.3f} | "
              f"{r['acc_excluded']:.3f} | {r['acc_clean']:.3f} |")  # fmt: skip
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
