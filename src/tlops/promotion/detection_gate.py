"""The promotion gate for detectors: the challenger against the champion on the same test images, on mAP50.

The score is mAP at IoU 0.5 (COCO's AP50). The two models' detections are paired per image and the images
resampled with replacement (:func:`tlops.evaluation.detection_metrics.paired_bootstrap_map_difference`); the
challenger is promoted when the lower bound of the interval of the difference is above ``margin`` (the interval
is the test: a per-image McNemar has no meaning for sets of boxes) and no class's AP50 drops by more than
``max_class_drop``. The calibration check of classifiers does not apply.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from tlops.promotion.gate import GateConfig

METRIC = "map50"


def describe_detection_gate(config: GateConfig) -> str:
    """A one-line summary of the detection gate's thresholds, for report headers."""
    return (
        f"promote when mAP50 improves: {config.confidence:.0%} paired-bootstrap interval (images resampled) lower "
        f"bound > {config.margin:g}, no class's AP50 drops by more than {config.max_class_drop:g} "
        f"({config.resamples} resamples, seed {config.seed})"
    )


def compare_detections(
    truth: list[dict[str, Any]],
    challenger: list[dict[str, Any]],
    champion: list[dict[str, Any]],
    classes: list[str],
    config: GateConfig | None = None,
) -> dict[str, Any]:
    """Compare two detectors' detections on the same test images and decide on promotion.

    Args:
        truth: Per test image: ``boxes`` and 0-based ``labels``.
        challenger: The challenger's detections per image (``boxes``, ``labels``, ``scores``), in the same order.
        champion: The champion's.
        classes: Class names by class id.
        config: Thresholds (``margin``, ``confidence``, ``max_class_drop``, ``resamples``, ``seed``).

    Returns:
        The fields of a :class:`~tlops.steps.outputs.Comparison`: ``promote``, ``metric``, the scores, the
        difference and its interval, the worst class, ``reasons``, ``checks`` and ``config``.
    """
    from tlops.evaluation.detection_metrics import detection_metrics, paired_bootstrap_map_difference

    config = config or GateConfig()
    new = detection_metrics(truth, challenger, classes)
    old = detection_metrics(truth, champion, classes)
    interval = paired_bootstrap_map_difference(
        truth, challenger, champion, classes, resamples=config.resamples, seed=config.seed,
        confidence=config.confidence,
    )  # fmt: skip
    drops = {name: old.per_class_ap50[name] - new.per_class_ap50.get(name, 0.0) for name in old.per_class_ap50}
    worst = max(drops, key=drops.__getitem__) if drops else ""
    worst_drop = drops.get(worst, 0.0)
    new_score, old_score = new.metrics.get(METRIC, 0.0), old.metrics.get(METRIC, 0.0)
    level = f"{config.confidence:.0%}"
    checks = {
        "better": interval.low > config.margin,
        "classes": worst_drop <= config.max_class_drop,
    }
    reasons = [
        f"mAP50 {new_score:.4f} against the champion's {old_score:.4f}: difference {interval.observed:+.4f}, "
        f"{level} paired-bootstrap interval [{interval.low:+.4f}, {interval.high:+.4f}] over "
        f"{len(truth)} test images "
        + ("is above" if checks["better"] else "must lie above")
        + f" the margin {config.margin:+.4f}",
        f"worst class {worst!r}: AP50 {-worst_drop:+.4f} "
        + ("within" if checks["classes"] else "beyond")
        + f" the allowed drop of {config.max_class_drop:.4f}"
        if worst
        else "no class to compare",
    ]
    return {
        "promote": all(checks.values()),
        "metric": METRIC,
        "challenger_score": new_score,
        "champion_score": old_score,
        "challenger_accuracy": None,
        "champion_accuracy": None,
        "difference": interval.observed,
        "ci_low": interval.low,
        "ci_high": interval.high,
        "worst_class": worst or None,
        "worst_class_regression": worst_drop if worst else None,
        "reasons": reasons,
        "checks": checks,
        "config": asdict(config),
    }
