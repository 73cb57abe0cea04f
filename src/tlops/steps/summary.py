"""The end-of-run summary: what data, which backbone and strategy, what it scored, where it is registered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from tlops.data.prepare import load_prepared
from tlops.promotion.gate import read_comparison

if TYPE_CHECKING:
    from tlops.promotion.registry import Registration


def run_summary(data_dir: Path, model_dir: Path, evaluation_dir: Path, registration: Registration) -> dict:
    """Assemble ``run_summary.json`` from the step outputs and the registration."""
    _manifest, prepared = load_prepared(data_dir)
    training = json.loads((Path(model_dir) / "training.json").read_text())
    evaluation = json.loads((Path(evaluation_dir) / "evaluation.json").read_text())
    model_config = json.loads((Path(model_dir) / "model_config.json").read_text())
    comparison = read_comparison(evaluation_dir)
    counts = prepared.num_images
    return {
        "dataset": {
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
        "backbone": model_config["backbone"],
        "strategy": training["strategy"],
        "strategy_reasons": training["reasons"],
        "metrics": evaluation["metrics"] | {"val_accuracy": training["val_accuracy"]},
        "tracking_uri": registration.tracking_uri,
        "experiment": registration.experiment,
        "run_id": registration.run_id,
        "registered_model": registration.registered_model,
        "version": registration.version,
        "model_uri": registration.model_uri,
        "logged_model_uri": registration.logged_model_uri,
        "aliases": registration.aliases,
        "gate": None
        if comparison is None
        else {
            "promote": comparison["promote"],
            "champion_version": comparison["champion_version"],
            "reasons": comparison["reasons"],
        },
    }


def format_summary(summary: dict) -> str:
    """A short human-readable summary for the end of ``tlops run``."""
    dataset, metrics = summary["dataset"], summary["metrics"]
    return "\n".join(
        [
            "tlops run finished",
            f"  data       {dataset['source']}  ({len(dataset['classes'])} classes; train {dataset['num_train']}, "
            f"val {dataset['num_val']}, test {dataset['num_test']}; digest {dataset['digest'][:12]})",
            f"  backbone   {summary['backbone']}",
            f"  strategy   {summary['strategy']}: {'; '.join(summary['strategy_reasons'])}",
            f"  test       accuracy {metrics['test_accuracy']:.4f}   macro-F1 {metrics['test_macro_f1']:.4f}   "
            f"ECE {metrics['test_ece']:.4f}",
            f"  registered {summary['registered_model']} version {summary['version']} "
            f"[{', '.join(summary['aliases'])}]  ({summary['model_uri']})",
            f"  tracking   {summary['tracking_uri']}",
            *_gate_lines(summary.get("gate")),
        ]
    )


def _gate_lines(gate: dict | None) -> list[str]:
    if gate is None or gate["champion_version"] is None:
        return []
    verdict = "promoted over" if gate["promote"] else "kept"
    return [f"  champion   {verdict} version {gate['champion_version']}: " + "; ".join(gate["reasons"])]
