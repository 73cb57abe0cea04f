"""The promotion gate on constructed paired outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from tlops.promotion.gate import GateConfig, compare

CLASSES = ["a", "b"]


def _outcomes(n: int, champion_right: float, challenger_extra: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    targets = np.arange(n) % 2
    champion = rng.random(n) < champion_right
    challenger = champion.copy()
    wrong = np.flatnonzero(~champion)
    challenger[wrong[:challenger_extra]] = True
    return challenger, champion, targets


def test_clearly_better_challenger_is_promoted():
    challenger, champion, targets = _outcomes(400, 0.7, 60)
    result = compare(challenger, champion, targets, CLASSES)
    assert result.promote
    assert result.ci_low > 0
    # All 60 discordant pairs favour the challenger: the exact two-sided p is 2 * 0.5**60.
    assert result.mcnemar_p == pytest.approx(2 * 0.5**60, rel=1e-9)
    assert result.challenger_only_correct == 60 and result.champion_only_correct == 0
    assert abs(result.difference - 60 / 400) < 1e-12


def test_identical_models_are_not_promoted():
    challenger, champion, targets = _outcomes(400, 0.8, 0)
    result = compare(challenger, champion, targets, CLASSES)
    assert not result.promote
    assert result.difference == 0 and result.mcnemar_p == 1.0


def test_a_small_gain_on_few_images_is_not_significant():
    challenger, champion, targets = _outcomes(60, 0.8, 2)
    result = compare(challenger, champion, targets, CLASSES)
    assert result.difference == pytest.approx(2 / 60)
    assert not result.promote
    # 2 discordant pairs, both the challenger's: p = 2 * 0.5**2.
    assert result.mcnemar_p == pytest.approx(0.5)


def test_a_class_regression_blocks_promotion_despite_a_better_total():
    targets = np.array([0] * 200 + [1] * 200)
    champion = np.array([False] * 100 + [True] * 100 + [True] * 200)
    challenger = np.array([True] * 200 + [True] * 170 + [False] * 30)  # class b drops 15 points
    result = compare(challenger, champion, targets, CLASSES, GateConfig(max_class_regression=0.05))
    assert result.ci_low > 0 and result.mcnemar_p < 0.05
    assert result.worst_class == "b" and abs(result.worst_class_regression - 0.15) < 1e-12
    assert not result.promote


def test_margin_is_respected():
    challenger, champion, targets = _outcomes(400, 0.7, 40)
    assert compare(challenger, champion, targets, CLASSES).promote
    assert not compare(challenger, champion, targets, CLASSES, GateConfig(margin=0.2)).promote
