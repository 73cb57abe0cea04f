"""The end-of-run summary: what data, which backbone and strategy, what it scored, where it is registered."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlops.models.names import BASELINES, TFIDF_BASELINE
from tlops.promotion.gate import GateConfig
from tlops.steps.export_summary import export_lines
from tlops.steps.gate_report import thresholds
from tlops.steps.outputs import Comparison, Evaluation, ModelConfig, PreparedData, RunSummary, Selection, Training

if TYPE_CHECKING:
    from tlops.promotion.registry import Registration


def run_summary(
    prepared: PreparedData,
    model_config: ModelConfig,
    training: Training,
    evaluation: Evaluation,
    comparison: Comparison | None,
    registration: Registration,
    selection: Selection | None = None,
) -> RunSummary:
    """Assemble the run summary from the step outputs, the registration and the backbone selection."""
    counts = prepared.num_images
    return RunSummary(
        dataset={
            "source": prepared.source,
            "layout": prepared.layout,
            "digest": prepared.digest,
            "classes": prepared.classes,
            "num_train": counts["train"],
            "num_val": counts["val"],
            "num_test": counts["test"],
            "quarantined": len(prepared.quarantined),
            "duplicates_removed": prepared.duplicates_removed,
        },
        backbone=model_config.backbone,
        strategy=training.strategy,
        strategy_reasons=training.reasons,
        metrics=evaluation.metrics | {"val_accuracy": training.val_accuracy},
        tracking_uri=registration.tracking_uri,
        experiment=registration.experiment,
        run_id=registration.run_id,
        registered_model=registration.registered_model,
        version=registration.version,
        model_uri=registration.model_uri,
        logged_model_uri=registration.logged_model_uri,
        aliases=registration.aliases,
        gate=None
        if comparison is None
        else {
            "promote": comparison.promote,
            "champion_version": comparison.champion_version,
            "reasons": comparison.reasons,
            "thresholds": thresholds(comparison.metric, GateConfig(**comparison.config)) if comparison.config else None,
        },
        champion={"version": registration.champion, "reason": registration.champion_reason},
        selection=None if selection is None else _selection_summary(selection),
        calibration=evaluation.calibration,
        tensor_model_uri=registration.tensor_model_uri,
    )


def _selection_summary(selection: Selection) -> dict:
    """The ranking rows (the baseline last), the reasons, and what the feature cache saved."""
    rows = selection.rows
    keep = ("name", "rank", "status", "probe_accuracy", "probe_std_error", "knn_accuracy", "logme", "params", "flops")
    hits = [row for row in rows if row.get("cache_hit")]
    return {
        "chosen": selection.chosen,
        "metric": selection.metric,
        "reasons": selection.reasons,
        "transfer_helps": selection.transfer_helps,
        "ranking": [{key: row.get(key) for key in (*keep, "latency_ms", "cache_hit", "cache_entry")} for row in rows],
        "feature_cache": {
            "hits": len(hits),
            "scored": len(rows),
            "saved_seconds": round(sum(row["extraction_seconds"] - row["feature_seconds"] for row in hits), 1),
            "extraction_seconds": round(sum(row["feature_seconds"] for row in rows if not row.get("cache_hit")), 1),
        },
    }


def format_summary(summary: RunSummary) -> str:
    """A short human-readable summary for the end of ``tlops run`` and ``tlops register``."""
    dataset, metrics = summary.dataset, summary.metrics
    return "\n".join(
        [
            "tlops run finished",
            f"  data       {dataset['source']}  ({len(dataset['classes'])} classes; train {dataset['num_train']}, "
            f"val {dataset['num_val']}, test {dataset['num_test']}; digest {dataset['digest'][:12]})",
            f"  backbone   {summary.backbone}",
            *_selection_lines(summary.selection),
            f"  strategy   {summary.strategy}: {'; '.join(summary.strategy_reasons)}",
            _test_line(metrics),
            *_calibration_lines(summary.calibration),
            f"  registered {summary.registered_model} version {summary.version} "
            f"[{', '.join(summary.aliases)}]  ({summary.model_uri})",
            f"  tracking   {summary.tracking_uri}",
            *_gate_lines(summary.gate),
            *([f"  champion   {summary.champion['reason']}"] if summary.champion.get("reason") else []),
            *export_lines(summary.export),
            *([f"  audit      {summary.audit['line']}"] if summary.audit else []),
        ]
    )


def _test_line(metrics: dict[str, float]) -> str:
    """The test metrics of the task: COCO mAP for a detector, accuracy, macro-F1 and ECE for a classifier."""
    if "test_map50" in metrics:
        return (
            f"  test       mAP50 {metrics['test_map50']:.4f}   mAP@[.5:.95] {metrics['test_map']:.4f}   "
            f"AP75 {metrics['test_map75']:.4f}   AR@100 {metrics['test_mar_100']:.4f}"
        )
    return (
        f"  test       accuracy {metrics['test_accuracy']:.4f}   macro-F1 {metrics['test_macro_f1']:.4f}   "
        f"ECE {metrics['test_ece']:.4f}"
    )


def _selection_lines(selection: dict | None) -> list[str]:
    """The ranking table (one line per candidate and the no-transfer baseline), the reasons and the cache status."""
    if not selection:
        return []
    lines = [f"             {'':2} {'candidate':<28} {'probe acc.':>14} {'kNN':>6} {'LogME':>7} {'params':>7}  status"]
    for row in selection["ranking"]:
        name = BASELINES[row["name"]].short if row["name"] in BASELINES else row["name"]
        lines.append(
            f"             {row['rank'] or '':>2} {name:<28} "
            f"{row['probe_accuracy']:>7.3f} ± {row['probe_std_error']:.3f} "
            + (
                f"{row['knn_accuracy']:>6.3f} {row['logme']:>7.3f} "
                if row["name"] != TFIDF_BASELINE
                else f"{'-':>6} {'-':>7} "
            )
            + f"{row['params'] / 1e6:>6.1f}M  {row['status']}"
        )
    lines += [f"             {reason}" for reason in selection["reasons"]]
    cache = selection["feature_cache"]
    if cache["hits"] == cache["scored"]:
        status = f"cache hit for all {cache['scored']} scored: no backbone ran (saved {cache['saved_seconds']:.0f} s)"
    else:
        status = (
            f"extracted in {cache['extraction_seconds']:.0f} s and cached; "
            f"{cache['hits']} of {cache['scored']} were cache hits"
        )
    return [*lines, f"  features   {status}"]


def _calibration_lines(calibration: dict) -> list[str]:
    if not calibration:
        return []
    before, after = calibration["before"], calibration["after"]
    return [
        f"  calibration {calibration['reason']}",
        f"             test ECE {before['ece']:.4f} -> {after['ece']:.4f}, log loss {before['log_loss']:.4f} -> "
        f"{after['log_loss']:.4f}, Brier {before['brier']:.4f} -> {after['brier']:.4f}",
    ]


def _gate_lines(gate: dict | None) -> list[str]:
    if gate is None:
        return []
    thresholds = [f"             thresholds: {gate['thresholds']}"] if gate.get("thresholds") else []
    if gate["champion_version"] is None:
        return [f"  gate       {gate['reasons'][0]}", *thresholds]
    verdict = "passed: promote" if gate["promote"] else "did not pass: keep the champion"
    lines = [f"  gate       {verdict} (against version {gate['champion_version']})", *thresholds]
    return lines + [f"             {reason}" for reason in gate["reasons"]]
