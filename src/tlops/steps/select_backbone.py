"""The select-backbone step: rank the scored candidates against the no-transfer baseline and choose one.

:func:`choose_backbone` is the step (the KFP component gathers the scores of candidates scored in parallel);
:func:`select_backbone` scores each candidate and the baseline in turn, then chooses (the command line).
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.errors import TlopsError
from tlops.estimates import PairedDifference, fold_difference
from tlops.models.names import BASELINES, TFIDF_BASELINE
from tlops.settings import SettingError
from tlops.steps.config import SELECTION_METRICS, RunConfig, SelectionConfig, StorageConfig
from tlops.steps.outputs import SELECTION_TABLE_FILE, BackboneScore, PreparedData, Selection
from tlops.tasks import task_of
from tlops.train.config import TrainConfig
from tlops.train.strategies import STRATEGIES

if TYPE_CHECKING:
    from tlops.steps.runtime import Runtime

logger = logging.getLogger(__name__)

METRICS = {
    "probe": ("probe_accuracy", "probe_std_error", "cross-validated linear-probe accuracy"),
    "knn": ("knn_accuracy", "knn_std_error", "cross-validated kNN accuracy"),
    "logme": ("logme", None, "LogME"),
}
assert set(METRICS) == set(SELECTION_METRICS)
TIE = 1e-9
"""A baseline-minus-backbone difference at most this large is a tie (the mean of fold differences rounds)."""


def select_backbone(
    data_dir: Path,
    candidates: list[str],
    output_dir: Path,
    runtime: Runtime,
    *,
    image_size: int = SelectionConfig.image_size,
    feature_cache: str = StorageConfig.feature_cache,
    scoring_images_per_class: int = SelectionConfig.scoring_images_per_class,
    class_weighted: bool = TrainConfig.class_weighted,
    metric: str = SelectionConfig.metric,
    max_params: int = SelectionConfig.max_params,
    max_latency_ms: float = SelectionConfig.max_latency_ms,
    ship_baseline: bool = SelectionConfig.ship_baseline,
    strategy: str = TrainConfig.strategy,
    seed: int = RunConfig.seed,
) -> Selection:
    """Score every candidate and the raw-pixel baseline one after the other, then choose (see :func:`choose_backbone`).

    Each score goes to ``output_dir/scores/<candidate>/score.json``; the features land in the feature cache, so
    extracting the chosen backbone's features afterwards runs no backbone.

    Raises:
        TlopsError: when no candidate is given, a name is unknown, ``data_dir`` is not a prepare-data output, an
            option is invalid, or no candidate fits the budgets.
    """
    from tlops.steps.score_backbone import score_backbone  # torch: not needed to choose from scores

    task = task_of(PreparedData.read(data_dir).task)
    candidates = list(dict.fromkeys(candidates)) or list(task.default_backbones)
    for name in candidates:
        task.check_backbone(name)
    _check_selection(metric, max_params, max_latency_ms)
    options = {
        "image_size": image_size,
        "feature_cache": feature_cache,
        "scoring_images_per_class": scoring_images_per_class,
        "class_weighted": class_weighted,
        "seed": seed,
    }
    folders = []
    for name in [*candidates, task.baseline]:
        folder = output_dir / "scores" / _folder_name(name)
        score_backbone(data_dir, name, folder, runtime, **options)
        folders.append(folder)
    return choose_backbone(
        folders[:-1],
        output_dir,
        baseline_dir=folders[-1],
        metric=metric,
        max_params=max_params,
        max_latency_ms=max_latency_ms,
        ship_baseline=ship_baseline,
        strategy=strategy,
    )


def _folder_name(name: str) -> str:
    """A folder name for a backbone name (``timm:resnet18@s3://b/w`` -> ``timm_resnet18_s3_b_w``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "backbone"


def choose_backbone(
    score_dirs: list[Path],
    output_dir: Path,
    *,
    baseline_dir: Path | None = None,
    metric: str = SelectionConfig.metric,
    max_params: int = SelectionConfig.max_params,
    max_latency_ms: float = SelectionConfig.max_latency_ms,
    ship_baseline: bool = SelectionConfig.ship_baseline,
    strategy: str = TrainConfig.strategy,
) -> Selection:
    """Rank the scored candidates and choose one; write ``selection.json`` and the table ``selection.md``.

    The candidates within the budgets are ranked by ``metric`` (ties broken by kNN accuracy, then by FLOPs). A
    candidate within one standard error of the best is a near-tie and the cheapest of those (FLOPs, then
    parameters) is chosen. When the raw-pixel baseline's probe accuracy beats the chosen backbone's beyond noise,
    the reasons say that transfer does not help here (see :func:`_compare_with_baseline`); when it is higher at
    all, the baseline is the model chosen (``chosen == "pixels"``), unless ``ship_baseline`` is off or ``strategy``
    fine-tunes a backbone.

    Args:
        score_dirs: Outputs of the score-backbone step, one per candidate.
        output_dir: Where the selection goes.
        baseline_dir: The score-backbone output of the ``pixels`` baseline, if scored.
        metric: ``probe``, ``knn`` or ``logme``.
        max_params: Largest parameter count allowed (0: no limit).
        max_latency_ms: Largest latency per image allowed, in milliseconds (0: no limit).
        ship_baseline: Whether the baseline may be the chosen model.
        strategy: The training strategy (one that fine-tunes a backbone needs a backbone).

    Raises:
        TlopsError: for an unknown metric, no scores, or when no candidate fits the budgets.
    """
    _check_selection(metric, max_params, max_latency_ms)
    scores = [BackboneScore.read(folder) for folder in score_dirs]
    if not scores:
        raise TlopsError("no scored candidates to choose from: run tlops score-backbone for each candidate first")
    baseline = BackboneScore.read(baseline_dir) if baseline_dir else None
    value_field, error_field, description = METRICS[metric]
    rows = [_row(score) for score in scores]
    eligible = []
    for row in rows:
        over = _over_budget(row, max_params, max_latency_ms)
        row["status"] = over or "ranked"
        if not over:
            eligible.append(row)
    if not eligible:
        raise SettingError(
            ("selection.max_params", "selection.max_latency_ms"),
            "no candidate fits the budget ("
            + "; ".join(f"{row['name']}: {row['status']}" for row in rows).replace("{", "{{").replace("}", "}}")
            + "): raise {0} / {1} or add smaller candidates",
        )
    eligible.sort(key=lambda row: (-row[value_field], -row["knn_accuracy"], row["flops"], row["params"]))
    best = eligible[0]
    margin = best[error_field] if error_field else 0.0
    near = [row for row in eligible if row[value_field] >= best[value_field] - margin]
    chosen = min(near, key=lambda row: (row["flops"], row["params"], -row[value_field]))
    reasons = [_why(chosen, best, eligible, value_field, error_field, description)]
    transfer_helps, shipped = None, False
    if baseline is not None:
        transfer_helps, reason = _compare_with_baseline(chosen, baseline)
        reasons.append(reason)
        shipped, why = _ship_baseline(chosen, baseline, ship_baseline, strategy)
        reasons += [why] if why else []
    ordered = [*eligible, *(row for row in rows if row["status"] != "ranked")]
    for rank, row in enumerate(ordered, start=1):
        row["rank"] = rank if row["status"] == "ranked" else None
        if row is chosen and not shipped:
            row["status"] = "chosen"
    baseline_row = _row(baseline) | {"status": "chosen" if shipped else "baseline", "rank": None} if baseline else None
    selection = Selection(
        chosen=baseline.name if shipped and baseline else chosen["name"],
        ranking=ordered,
        reasons=reasons,
        metric=metric,
        baseline=baseline_row,
        transfer_helps=transfer_helps,
    )
    selection.write(output_dir)
    (output_dir / SELECTION_TABLE_FILE).write_text(selection_table(selection))
    for reason in reasons:
        (logger.warning if reason.startswith(("transfer does not help", "shipping")) else logger.info)(
            "backbone selection: %s", reason
        )
    return selection


def _compare_with_baseline(chosen: dict[str, Any], baseline: BackboneScore) -> tuple[bool | None, str]:
    """Whether transfer helps, judged on linear-probe accuracy beyond noise, and the reason in whole sentences.

    The difference is measured fold by fold (every candidate is scored on the same images and folds) with its
    corrected standard error (:func:`~tlops.estimates.fold_difference`). Transfer does not help only when
    the raw pixels are strictly better beyond one standard error; a difference within it is said as such (``None``:
    no clear answer).
    """
    ours, theirs = chosen["probe_accuracy"], baseline.probe_accuracy
    difference = baseline_difference(chosen, baseline)
    name, described = baseline.name, BASELINES[baseline.name].short
    compared = f"{chosen['name']} {ours:.3f} vs {described} {theirs:.3f} (linear probe"
    if -difference.mean > difference.std_error:
        return (
            True,
            f"transfer helps: {compared}, backbone - {name} {-difference.mean:+.3f} ± {difference.std_error:.3f})",
        )
    if difference.mean > difference.std_error:
        return False, (
            f"transfer does not help here: a linear probe on {described} reaches {theirs:.3f}, the chosen "
            f"backbone {ours:.3f} ({name} - backbone {difference.describe()})"
        )
    within = "a tie" if ours == theirs else f"within one standard error, {name} - backbone {difference.describe()}"
    return None, f"transfer and {described} score alike here: {compared}, {within}); neither is clearly better"


def baseline_difference(chosen: dict[str, Any], baseline: BackboneScore) -> PairedDifference:
    """Baseline minus chosen cross-validated probe accuracy, paired by fold when both scores have fold scores."""
    ours, theirs = chosen.get("probe_fold_accuracies") or [], baseline.probe_fold_accuracies
    unit = BASELINES[baseline.name].unit if baseline.name in BASELINES else "images"
    basis = f"{baseline.folds}-fold CV on {baseline.images} training {unit}"
    if len(ours) == len(theirs) > 1:
        return fold_difference(theirs, ours, baseline.folds, basis + ", paired by fold")
    noise = (chosen["probe_std_error"] ** 2 + baseline.probe_std_error**2) ** 0.5  # scores of an older version
    return PairedDifference(baseline.probe_accuracy - chosen["probe_accuracy"], noise, basis)


def _ship_baseline(
    chosen: dict[str, Any], baseline: BackboneScore, ship_baseline: bool, strategy: str
) -> tuple[bool, str | None]:
    """Whether the raw-pixel baseline is the model to ship instead of ``chosen``, and the reason when it matters.

    The baseline is shipped when its cross-validated probe accuracy is the higher one (the best estimate there is;
    the fine-tune step then chooses its head by cross-validation as for any backbone), unless the user turned that
    off or asked for a strategy that fine-tunes a backbone.
    """
    difference = baseline_difference(chosen, baseline)
    if difference.mean <= TIE:  # equal fold sums can leave a rounding residue: a tie keeps the backbone
        return False, None
    described = BASELINES[baseline.name]
    if baseline.task and not task_of(baseline.task).ships_baseline:
        return False, (
            f"the {described.short} baseline scores higher on the labelled boxes, but a detector needs a backbone, so "
            f"{chosen['name']} is kept"
        )
    if not ship_baseline:
        return False, f"the {described.short} baseline scores higher but --no-ship-baseline keeps the backbone"
    if STRATEGIES.get(strategy).trains_backbone:
        return False, (
            f"the {described.short} baseline scores higher but strategy {strategy!r} fine-tunes a backbone, so "
            f"{chosen['name']} is kept"
        )
    return True, (
        f"shipping the no-transfer baseline ({described.long}): its cross-validated "
        f"probe accuracy {baseline.probe_accuracy:.3f} is above {chosen['name']}'s {chosen['probe_accuracy']:.3f}, "
        f"{baseline.name} - backbone {difference.describe()} (--no-ship-baseline keeps a backbone)"
    )


def _row(score: BackboneScore) -> dict[str, Any]:
    row = asdict(score)
    row.pop("schema_version", None)
    row.pop("task", None)
    return row


def _over_budget(row: dict[str, Any], max_params: int, max_latency_ms: float) -> str:
    if max_params and row["params"] > max_params:
        return f"over budget: {row['params'] / 1e6:.1f}M parameters > {max_params / 1e6:.1f}M"
    if max_latency_ms and row["latency_ms"] > max_latency_ms:
        return f"over budget: {row['latency_ms']:.1f} ms per image > {max_latency_ms:g} ms on {row['device']}"
    return ""


def _why(
    chosen: dict[str, Any],
    best: dict[str, Any],
    eligible: list[dict[str, Any]],
    value_field: str,
    error_field: str | None,
    description: str,
) -> str:
    if len(eligible) == 1:
        return f"{chosen['name']} is the only candidate in the budget ({description} {chosen[value_field]:.3f})"
    if chosen is not best:
        return (
            f"{chosen['name']} ({description} {chosen[value_field]:.3f}) is within one standard error "
            f"({best[error_field] if error_field else 0:.3f}) of {best['name']} ({best[value_field]:.3f}) and "
            f"cheaper ({chosen['flops'] / 1e9:.2f} vs {best['flops'] / 1e9:.2f} GFLOPs per image)"
        )
    runner_up = eligible[1]
    return (
        f"{chosen['name']} has the best {description}: {chosen[value_field]:.3f}"
        + (f" ± {chosen[error_field]:.3f}" if error_field else "")
        + f" on {chosen['images']} training images; next: {runner_up['name']} {runner_up[value_field]:.3f}"
    )


def selection_table(selection: Selection) -> str:
    """The ranking as a Markdown table (candidates, then the raw-pixel baseline), followed by the reasons."""
    header = (
        "| rank | backbone | probe acc. | kNN acc. (k) | LogME | params | GFLOPs | latency ms | seconds | "
        "features | status |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = selection.rows
    lines = []
    for row in rows:
        name = f"{BASELINES[row['name']].short} (no transfer)" if row["name"] in BASELINES else row["name"]
        lines.append(
            f"| {row.get('rank') or ''} | {name} | {row['probe_accuracy']:.3f} ± {row['probe_std_error']:.3f} | "
            + (
                f"{row['knn_accuracy']:.3f} ({row['knn_k']}) | {row['logme']:.3f} | "
                if row["name"] != TFIDF_BASELINE
                else "- | - | "  # scored by its probe alone (the TF-IDF baseline has no dense features)
            )
            + f"{row['params'] / 1e6:.1f}M | "
            f"{row['flops'] / 1e9:.2f} | {row['latency_ms']:.1f} | "
            f"{row['feature_seconds'] + row['scoring_seconds']:.1f} | "
            f"{'cache hit' if row['cache_hit'] else 'extracted'} | {row['status']} |"
        )
    reasons = "".join(f"- {reason}\n" for reason in selection.reasons)
    return (
        f"## Backbone selection (ranked by {METRICS[selection.metric][2]})\n\n"
        + header
        + "\n".join(lines)
        + "\n\n"
        + reasons
    )


def _check_selection(metric: str, max_params: int, max_latency_ms: float) -> None:
    """Check the ranking options as the run config does, naming them by their flags.

    Raises:
        TlopsError: for an unknown metric or a negative budget.
    """
    try:
        SelectionConfig(metric=metric, max_params=max_params, max_latency_ms=max_latency_ms)
    except SettingError as error:
        raise error.within("selection") from None
