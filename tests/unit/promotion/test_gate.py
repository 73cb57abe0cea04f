"""The promotion gate on constructed paired outcomes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tlops.promotion.gate import GATE_METRICS, GateConfig, compare, describe

CLASSES = ["a", "b"]


def _probabilities(
    targets: np.ndarray, correct: np.ndarray, num_classes: int = 2, confidence: float = 0.9
) -> np.ndarray:
    """Probabilities with ``confidence`` on the predicted class: the target when correct, the next class if not."""
    predicted = np.where(correct, targets, (targets + 1) % num_classes)
    return _on(predicted, num_classes, confidence)


def _on(predicted: np.ndarray, num_classes: int, confidence: float = 0.9) -> np.ndarray:
    probabilities = np.full((len(predicted), num_classes), (1 - confidence) / (num_classes - 1))
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def _outcomes(n: int, champion_right: float, challenger_extra: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    targets = np.arange(n) % 2
    champion = rng.random(n) < champion_right
    challenger = champion.copy()
    wrong = np.flatnonzero(~champion)
    challenger[wrong[:challenger_extra]] = True
    return _probabilities(targets, challenger), _probabilities(targets, champion), targets


def test_clearly_better_challenger_is_promoted():
    challenger, champion, targets = _outcomes(400, 0.7, 60)
    result = compare(challenger, champion, targets, CLASSES)
    assert result.promote
    assert result.ci_low > 0
    # All 60 discordant pairs favour the challenger: the exact two-sided p is 2 * 0.5**60.
    assert result.mcnemar_p == pytest.approx(2 * 0.5**60, rel=1e-9)
    assert result.challenger_only_correct == 60 and result.champion_only_correct == 0
    assert abs(result.difference - 60 / 400) < 1e-12
    assert result.reasons[0].startswith("accuracy ")


def test_identical_models_are_not_promoted():
    challenger, champion, targets = _outcomes(400, 0.8, 0)
    result = compare(challenger, champion, targets, CLASSES)
    assert not result.promote
    assert result.difference == 0 and result.mcnemar_p == 1.0
    assert result.ci_low == result.ci_high == 0


def test_a_small_gain_on_few_images_is_not_significant():
    challenger, champion, targets = _outcomes(60, 0.8, 2)
    result = compare(challenger, champion, targets, CLASSES)
    assert result.difference == pytest.approx(2 / 60)
    assert not result.promote and not result.checks["significant"]
    # 2 discordant pairs, both the challenger's: p = 2 * 0.5**2.
    assert result.mcnemar_p == pytest.approx(0.5)


def test_a_class_regression_blocks_promotion_despite_a_better_total():
    targets = np.array([0] * 200 + [1] * 200)
    champion = np.array([False] * 100 + [True] * 100 + [True] * 200)
    challenger = np.array([True] * 200 + [True] * 170 + [False] * 30)  # class b drops 15 points
    result = compare(
        _probabilities(targets, challenger), _probabilities(targets, champion), targets, CLASSES, GateConfig()
    )
    assert result.ci_low > 0 and result.mcnemar_p < 0.05
    assert result.worst_class == "b" and abs(result.worst_class_regression - 0.15) < 1e-12
    assert (result.worst_class_images_lost, result.worst_class_images_allowed) == (30, 10)
    assert not result.checks["classes"] and not result.promote


def test_margin_is_respected():
    challenger, champion, targets = _outcomes(400, 0.7, 40)
    assert compare(challenger, champion, targets, CLASSES).promote
    assert not compare(challenger, champion, targets, CLASSES, GateConfig(margin=0.2)).promote


def _class_loss(small: int, lost: int, large: int = 400, fixed: int = 60):
    """Class a (``small`` images, all right for the champion) loses ``lost``; class b gains ``fixed``."""
    targets = np.array([0] * small + [1] * large)
    champion = np.concatenate([np.ones(small, bool), np.arange(large) % 10 < 7])
    challenger = champion.copy()
    challenger[:lost] = False
    challenger[np.flatnonzero(~champion)[:fixed]] = True
    return compare(_probabilities(targets, challenger), _probabilities(targets, champion), targets, CLASSES)


@pytest.mark.parametrize(
    ("small", "lost", "allowed", "vetoed"),
    [(15, 1, 1, False), (15, 2, 1, True), (200, 10, 10, False), (200, 11, 10, True)],
)
def test_the_class_guard_respects_class_size(small: int, lost: int, allowed: int, vetoed: bool):
    result = _class_loss(small, lost, large=1000 if small == 200 else 400, fixed=100 if small == 200 else 60)
    assert result.worst_class == "a"
    assert (result.worst_class_images_lost, result.worst_class_images_allowed) == (lost, allowed)
    assert result.worst_class_regression == pytest.approx(lost / small)
    assert result.checks["classes"] is not vetoed
    assert result.checks["better"] and result.checks["significant"] and result.checks["calibration"]
    assert result.promote is not vetoed
    assert f"allowed {allowed} of {small}" in result.reasons[2]


def test_macro_f1_rewards_fixing_a_minority_class_at_equal_accuracy():
    # big (0): 500 images, mid (1): 500, small (2): 20. The champion calls every small image big; the
    # challenger gets them all right but calls 20 big images mid: the same accuracy, a much better macro-F1.
    classes = ["big", "mid", "small"]
    targets = np.array([0] * 500 + [1] * 500 + [2] * 20)
    champion = targets.copy()
    champion[1000:] = 0
    champion[500:560] = 0  # mid: 60 mistakes, shared by both
    challenger = targets.copy()
    challenger[500:560] = 0
    challenger[:20] = 1
    challenger_probabilities, champion_probabilities = _on(challenger, 3), _on(champion, 3)
    by_accuracy = compare(challenger_probabilities, champion_probabilities, targets, classes)
    by_f1 = compare(challenger_probabilities, champion_probabilities, targets, classes, GateConfig(metric="macro-f1"))
    assert by_accuracy.challenger_accuracy == by_accuracy.champion_accuracy
    assert not by_accuracy.promote and not by_accuracy.checks["better"]
    assert by_f1.metric == "macro-f1" and by_f1.difference > 0.2 and by_f1.ci_low > 0
    assert by_f1.checks == {"better": True, "significant": True, "classes": True, "calibration": True}
    assert by_f1.promote and by_f1.reasons[0].startswith("macro-f1 ")
    assert by_f1.mcnemar_p == 1.0  # 20 discordant pairs each way: McNemar sees no accuracy difference


def test_macro_f1_bootstrap_is_fast():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 10, 1000)
    champion = np.where(rng.random(1000) < 0.8, targets, rng.integers(0, 10, 1000))
    challenger = np.where(rng.random(1000) < 0.9, targets, champion)
    config = GateConfig(metric="macro-f1", resamples=2000)
    start = time.perf_counter()
    result = compare(_on(challenger, 10), _on(champion, 10), targets, [str(c) for c in range(10)], config)
    assert time.perf_counter() - start < 1.0
    assert result.ci_low < result.difference < result.ci_high


def test_the_ece_guard_vetoes_an_overconfident_challenger():
    targets = np.arange(400) % 2
    champion_right = np.arange(400) % 10 < 7
    challenger_right = np.arange(400) % 20 < 17
    champion = _probabilities(targets, champion_right, confidence=0.7)  # accuracy 0.7: calibrated
    challenger = _probabilities(targets, challenger_right, confidence=0.999)  # accuracy 0.85: overconfident
    result = compare(challenger, champion, targets, CLASSES)
    assert result.challenger_ece == pytest.approx(0.149) and result.champion_ece == pytest.approx(0.0, abs=1e-12)
    assert result.checks["better"] and result.checks["significant"] and result.checks["classes"]
    assert not result.checks["calibration"] and not result.promote
    assert compare(challenger, champion, targets, CLASSES, GateConfig(max_ece_increase=1)).promote


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metric", "top5"),
        ("margin", 1.5),
        ("confidence", 1.0),
        ("confidence", 0.0),
        ("alpha", 0.0),
        ("max_class_drop", 1.1),
        ("class_drop_images", -1),
        ("max_ece_increase", -0.01),
    ],
)
def test_invalid_configs_are_rejected_naming_the_field(field: str, value: object):
    from tlops.settings import SettingError

    with pytest.raises(SettingError) as error:
        GateConfig(**{field: value})
    assert error.value.render(lambda path: path).startswith(f"{field} must be ") and f"got {value!r}" in str(
        error.value
    )
    assert error.value.render(lambda path: f"--gate-{path.replace('_', '-')}").startswith(
        f"--gate-{field.replace('_', '-')} must be"
    )


def test_the_result_records_its_checks_and_config():
    challenger, champion, targets = _outcomes(400, 0.7, 60)
    config = GateConfig(metric="accuracy", margin=0.01, seed=3)
    result = compare(challenger, champion, targets, CLASSES, config)
    assert set(result.checks) == {"better", "significant", "classes", "calibration"}
    assert all(result.checks.values()) and result.promote
    assert result.config == {
        "metric": "accuracy",
        "margin": 0.01,
        "confidence": 0.95,
        "alpha": 0.05,
        "max_class_drop": 0.05,
        "class_drop_images": 1,
        "max_ece_increase": 0.02,
        "resamples": 2000,
        "seed": 3,
    }
    assert len(result.reasons) == 4 and all("needs" in r or "allowed" in r for r in result.reasons)
    assert "accuracy" in describe(config) and "0.01" in describe(config)
    assert GATE_METRICS == ("accuracy", "macro-f1")


def test_the_markdown_report_shows_the_decision_thresholds_numbers_and_reasons():
    from dataclasses import asdict

    from tlops.steps.gate_report import gate_report
    from tlops.steps.outputs import Comparison

    challenger, champion, targets = _outcomes(400, 0.7, 60)
    config = GateConfig(metric="macro-f1", margin=0.01)
    result = compare(challenger, champion, targets, CLASSES, config)
    report = gate_report(Comparison(champion_version=4, **asdict(result)))
    assert "Decision: **promote** (against champion version 4)" in report
    assert "Thresholds: promote when macro-f1 improves: 95% paired-bootstrap CI lower bound > 0.01" in report
    assert f"| score (macro-f1) | {result.challenger_score:.4f} | {result.champion_score:.4f} |" in report
    assert "| classes | yes |" in report and "| calibration | yes |" in report
    assert all(f"- {reason}" in report for reason in result.reasons)
    first = gate_report(Comparison(True, None, ["no champion yet: the first becomes it"], config=asdict(config)))
    assert "Decision: **promote**: no champion yet" in first and "| score" not in first
