"""The export gate: the paired bootstrap interval of the accuracy loss (exported - fp32) against the margin."""

from __future__ import annotations

import numpy as np
import pytest

from tlops.promotion.export_gate import export_verdict

CLASSES = ["a", "b", "c"]


def _one_hot(predictions: np.ndarray) -> np.ndarray:
    return np.eye(len(CLASSES))[predictions]


def _pair(images: int, flipped: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fp32 right on every image; the export wrong on the first ``flipped`` of them."""
    targets = np.arange(images) % len(CLASSES)
    exported = targets.copy()
    exported[:flipped] = (targets[:flipped] + 1) % len(CLASSES)
    return _one_hot(exported), _one_hot(targets), targets


def test_identical_predictions_pass_even_a_zero_margin():
    exported, fp32, targets = _pair(300, 0)
    verdict = export_verdict(exported, fp32, targets, CLASSES, margin=0.0)
    assert verdict.accepted
    assert (verdict.difference, verdict.ci_low, verdict.ci_high, verdict.changed) == (0.0, 0.0, 0.0, 0)
    assert "within the margin of 0" in verdict.reason


def test_a_loss_beyond_the_margin_is_refused_with_its_interval():
    exported, fp32, targets = _pair(300, 30)  # 10 points lost
    verdict = export_verdict(exported, fp32, targets, CLASSES, margin=0.01)
    assert not verdict.accepted
    assert verdict.difference == pytest.approx(-0.1)
    assert verdict.ci_low < -0.01 and verdict.ci_high < 0
    assert verdict.changed == 30
    assert "beyond the margin of 0.01" in verdict.reason
    assert f"CI [{verdict.ci_low:+.4f}, {verdict.ci_high:+.4f}]" in verdict.reason


def test_a_small_loss_within_the_margin_passes_and_the_same_loss_fails_a_tighter_margin():
    exported, fp32, targets = _pair(2000, 2)  # 0.1 point lost, interval well inside 1 point
    assert export_verdict(exported, fp32, targets, CLASSES, margin=0.01).accepted
    assert not export_verdict(exported, fp32, targets, CLASSES, margin=0.0).accepted
