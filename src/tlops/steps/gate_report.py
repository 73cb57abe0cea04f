"""The promotion gate's decision as a Markdown report (the evaluate step's KFP Markdown artifact)."""

from __future__ import annotations

from tlops.promotion.detection_gate import METRIC as DETECTION_METRIC
from tlops.promotion.detection_gate import describe_detection_gate
from tlops.promotion.gate import GateConfig, describe
from tlops.steps.outputs import Comparison

_ROWS = (
    ("score", "challenger_score", "champion_score"),
    ("accuracy", "challenger_accuracy", "champion_accuracy"),
    ("ECE (calibrated)", "challenger_ece", "champion_ece"),
)


def thresholds(metric: str | None, config: GateConfig) -> str:
    """The one-line thresholds of the gate that compared on ``metric`` (a detector's: mAP50)."""
    return describe_detection_gate(config) if metric == DETECTION_METRIC else describe(config)


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
        f"Thresholds: {thresholds(comparison.metric, config)}.",
        "",
    ]
    if comparison.challenger_score is not None:
        lines += ["| | challenger | champion |", "|---|---|---|"]
        for label, new, old in _ROWS:
            name = f"{label} ({comparison.metric})" if label == "score" else label
            if getattr(comparison, new) is not None:  # a detector has no accuracy or ECE
                lines.append(f"| {name} | {getattr(comparison, new):.4f} | {getattr(comparison, old):.4f} |")
        mcnemar = f"; McNemar p = {comparison.mcnemar_p:.4g}" if comparison.mcnemar_p is not None else ""
        lines += [
            "",
            f"Difference {comparison.difference:+.4f}, {config.confidence:.0%} CI "
            f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]{mcnemar}.",
            "",
            "| check | passed |",
            "|---|---|",
            *(f"| {name} | {'yes' if passed else 'no'} |" for name, passed in comparison.checks.items()),
            "",
        ]
    lines += ["Reasons:", "", *(f"- {reason}" for reason in comparison.reasons), ""]
    return "\n".join(lines)
