"""The end-of-run summary: what data, which backbone and strategy, what it scored, where it is registered."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlops.steps.outputs import Comparison, Evaluation, ModelConfig, PreparedData, RunSummary, Training

if TYPE_CHECKING:
    from tlops.promotion.registry import Registration


def run_summary(
    prepared: PreparedData,
    model_config: ModelConfig,
    training: Training,
    evaluation: Evaluation,
    comparison: Comparison | None,
    registration: Registration,
) -> RunSummary:
    """Assemble the run summary from the step outputs and the registration."""
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
        },
        champion={"version": registration.champion, "reason": registration.champion_reason},
    )


def format_summary(summary: RunSummary) -> str:
    """A short human-readable summary for the end of ``tlops run`` and ``tlops register``."""
    dataset, metrics = summary.dataset, summary.metrics
    return "\n".join(
        [
            "tlops run finished",
            f"  data       {dataset['source']}  ({len(dataset['classes'])} classes; train {dataset['num_train']}, "
            f"val {dataset['num_val']}, test {dataset['num_test']}; digest {dataset['digest'][:12]})",
            f"  backbone   {summary.backbone}",
            f"  strategy   {summary.strategy}: {'; '.join(summary.strategy_reasons)}",
            f"  test       accuracy {metrics['test_accuracy']:.4f}   macro-F1 {metrics['test_macro_f1']:.4f}   "
            f"ECE {metrics['test_ece']:.4f}",
            f"  registered {summary.registered_model} version {summary.version} "
            f"[{', '.join(summary.aliases)}]  ({summary.model_uri})",
            f"  tracking   {summary.tracking_uri}",
            *_gate_lines(summary.gate),
            *([f"  champion   {summary.champion['reason']}"] if summary.champion.get("reason") else []),
        ]
    )


def _gate_lines(gate: dict | None) -> list[str]:
    if gate is None or gate["champion_version"] is None:
        return []
    verdict = "passed" if gate["promote"] else "did not pass"
    return [f"  gate       {verdict} against version {gate['champion_version']}: " + "; ".join(gate["reasons"])]
