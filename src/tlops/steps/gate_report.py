"""The promotion gate's decision as a Markdown report (the evaluate step's KFP Markdown artifact)."""

from __future__ import annotations

from tlops.promotion.gate import GateConfig, describe
from tlops.steps.outputs import Comparison

_ROWS = (
    ("score", "challenger_score", "champion_score"),
    ("accuracy", "challenger_accuracy", "champion_accuracy"),
    ("ECE (calibrated)", "challenger_ece", "champion_ece"),
)


def gate_report(comparison: Comparison) -> str:
    """Decision, thresholds, the two models' numbers side by side, each check and its reason."""
    config = GateConfig(**comparison.config) if comparison.config else GateConfig()
    if comparison.champion_version is None:
        decision = "**promote**: no champion yet, the first version becomes it"
    else:
        verdict = "promote" if comparison.promote else "keep the champion"
        decision = f"**{verdict}** (against champion version {comparison.champion_version})"
    lines = [
        "# Promotion gate",
        "",
        f"Decision: {decision}",
        "",
        f"Thresholds: {describe(config)}.",
        "",
    ]
    if comparison.challenger_score is not None:
        lines += ["| | challenger | champion |", "|---|---|---|"]
        for label, new, old in _ROWS:
            name = f"{label} ({comparison.metric})" if label == "score" else label
            lines.append(f"| {name} | {getattr(comparison, new):.4f} | {getattr(comparison, old):.4f} |")
        lines += [
            "",
            f"Difference {comparison.difference:+.4f}, {config.confidence:.0%} CI "
            f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]; McNemar p = {comparison.mcnemar_p:.4g}.",
            "",
            "| check | passed |",
            "|---|---|",
            *(f"| {name} | {'yes' if passed else 'no'} |" for name, passed in comparison.checks.items()),
            "",
        ]
    lines += ["Reasons:", "", *(f"- {reason}" for reason in comparison.reasons), ""]
    return "\n".join(lines)
