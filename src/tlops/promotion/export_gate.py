"""The export gate: does the exported model keep the fp32 model's test accuracy, within a margin?

A non-inferiority check on the same test images: the paired bootstrap interval of the accuracy difference
(exported - fp32), computed by the promotion gate's own :func:`tlops.promotion.gate.compare`, must not reach below
``-margin``. Refused, the export is not registered and the verdict says the measured loss, its interval and the
margin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tlops.promotion.gate import GateConfig, compare


@dataclass(frozen=True)
class ExportVerdict:
    """The exported model against the fp32 model it came from.

    Attributes:
        accepted: The interval's lower bound is at least ``-margin``.
        exported_accuracy: The exported model's test accuracy.
        fp32_accuracy: The fp32 model's, on the same images.
        difference: ``exported_accuracy - fp32_accuracy``.
        ci_low: Lower bound of the paired bootstrap interval of the difference.
        ci_high: Upper bound.
        margin: The largest accepted loss.
        confidence: Level of the interval.
        changed: Test images whose predicted class differs between the two.
        reason: One line saying the verdict, the numbers and the margin.
    """

    accepted: bool
    exported_accuracy: float
    fp32_accuracy: float
    difference: float
    ci_low: float
    ci_high: float
    margin: float
    confidence: float
    changed: int
    reason: str

    def to_dict(self) -> dict:
        """As plain data."""
        return asdict(self)


def export_verdict(
    exported: np.ndarray,
    fp32: np.ndarray,
    targets: np.ndarray,
    classes: list[str],
    margin: float,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
) -> ExportVerdict:
    """Accept the export when the paired bootstrap interval of its accuracy loss stays within ``margin``.

    Args:
        exported: The exported model's class probabilities ``(N, C)`` on the test images.
        fp32: The fp32 model's, on the same images in the same order.
        targets: True class ids ``(N,)``.
        classes: Class names.
        margin: Largest accepted accuracy loss (0.01: one point).
        confidence: Level of the interval.
        resamples: Bootstrap resamples.
    """
    result = compare(exported, fp32, targets, classes, GateConfig(confidence=confidence, resamples=resamples))
    accepted = result.ci_low >= -margin - 1e-12
    changed = int((np.asarray(exported).argmax(1) != np.asarray(fp32).argmax(1)).sum())
    numbers = (
        f"test accuracy {result.challenger_score:.4f} vs fp32 {result.champion_score:.4f} (difference "
        f"{result.difference:+.4f}, {confidence:.0%} paired-bootstrap CI [{result.ci_low:+.4f}, "
        f"{result.ci_high:+.4f}]; "
        f"{changed} of {len(targets)} predictions changed)"
    )
    verdict = "within" if accepted else "beyond"
    reason = f"{numbers}: the loss is {verdict} the margin of {margin:g} (needs lower bound >= {-margin:+g})"
    return ExportVerdict(
        accepted=accepted,
        exported_accuracy=result.challenger_score,
        fp32_accuracy=result.champion_score,
        difference=result.difference,
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        margin=margin,
        confidence=confidence,
        changed=changed,
        reason=reason,
    )
