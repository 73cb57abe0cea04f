"""The probe chosen by repeated k-fold cross-validation: the one-standard-error rule, out-of-fold logits, refits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tlops.train.probe_selection import (
    CandidateEstimate,
    ProbeCandidate,
    cross_validate_probes,
    cv_folds_for,
    fit_chosen,
    one_standard_error_choice,
    probe_candidates,
)


def _blobs(per_class: int, classes: int, spread: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, 16)) * 3
    x = np.concatenate([c + spread * rng.normal(size=(per_class, 16)) for c in centers])
    y = np.repeat(np.arange(classes), per_class)
    return torch.from_numpy(x).float(), torch.from_numpy(y)


def test_candidates_are_ordered_simplest_first() -> None:
    labels = [c.label for c in probe_candidates(["linear-probe", "mlp-probe"])]
    assert labels[0] == "linear probe (C=0.01)" and labels[3] == "linear probe (C=10)"
    assert labels[4:] == ["MLP probe (20 epochs)", "MLP probe (50 epochs)", "MLP probe (100 epochs)"]
    assert [c.strategy for c in probe_candidates(["mlp-probe"])] == ["mlp-probe"] * 3


def test_folds_are_limited_by_the_smallest_class() -> None:
    assert cv_folds_for(np.array([0] * 10 + [1] * 3)) == 3
    assert cv_folds_for(np.array([0] * 10 + [1] * 20)) == 5
    assert cv_folds_for(np.array([0] * 10 + [1])) == 0  # one image of a class: no stratified split


def test_separable_classes_choose_the_simplest_candidate_and_give_out_of_fold_logits() -> None:
    x, y = _blobs(8, 3, spread=0.1)
    candidates = probe_candidates(["linear-probe", "mlp-probe"])
    choice = cross_validate_probes(x, y, 3, candidates, repeats=2, seed=0)
    # Every candidate is perfect: the simplest one (strongest regularisation) is chosen.
    assert choice.best.mean == 1.0 and choice.chosen.candidate == ProbeCandidate("linear-probe", 0.01)
    assert choice.folds == 5 and choice.repeats == 2 and choice.images == 24
    assert all(len(e.fold_scores) == 10 for e in choice.estimates)
    assert choice.chosen.oof_logits.shape == (24, 3)
    assert (choice.chosen.oof_logits.argmax(1) == y.numpy()).all()  # each image predicted by a fold without it
    assert choice.reason().startswith("probe chosen by cross-validation: linear probe (C=0.01), 1.000 ± 0.000")
    assert "2 x 5-fold CV on 24 train+val images" in choice.reason()


def test_a_better_candidate_beyond_one_standard_error_is_chosen_over_a_simpler_one() -> None:
    # One informative feature of a tiny scale among 15 noisy ones: only weak regularisation can weigh it.
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    x = rng.normal(size=(60, 16))
    x[:, 0] = np.where(y == 1, 0.3, -0.3) + 0.05 * rng.normal(size=60)
    features, targets = torch.from_numpy(x).float(), torch.from_numpy(y)
    choice = cross_validate_probes(features, targets, 2, probe_candidates(["linear-probe"]), repeats=2, seed=0)
    means = [round(e.mean, 3) for e in choice.estimates]
    assert means[0] < 0.7 and means[-1] > 0.95, means
    assert choice.chosen.candidate == ProbeCandidate("linear-probe", 10.0) and choice.chosen is choice.best
    assert "the best mean; next: linear probe (C=1)" in choice.reason()


def test_the_one_standard_error_rule_prefers_the_simpler_of_near_ties() -> None:
    def estimate(value: float, scores: list[float]) -> CandidateEstimate:
        return CandidateEstimate(ProbeCandidate("linear-probe", value), scores, np.zeros((1, 2)))

    simple = estimate(0.01, [0.80, 0.70, 0.90, 0.80, 0.75])
    noisy_gain = estimate(0.1, [0.90, 0.65, 0.90, 0.80, 0.75])  # +0.01 on average, up and down: noise
    steady_gain = estimate(1.0, [0.90, 0.80, 1.00, 0.90, 0.85])  # +0.10 on every fold: beyond noise
    chosen, best, difference = one_standard_error_choice([simple, noisy_gain], 5, "x")
    assert chosen is simple and best is noisy_gain and difference.mean == pytest.approx(0.01)
    assert difference.mean <= difference.std_error
    chosen, best, _ = one_standard_error_choice([simple, noisy_gain, steady_gain], 5, "x")
    assert chosen is steady_gain is best


def test_cross_validation_is_deterministic_for_a_seed() -> None:
    x, y = _blobs(10, 3, spread=1.5, seed=2)
    candidates = probe_candidates(["linear-probe", "mlp-probe"])
    first = cross_validate_probes(x, y, 3, candidates, repeats=1, seed=3)
    second = cross_validate_probes(x, y, 3, candidates, repeats=1, seed=3)
    assert [e.fold_scores for e in first.estimates] == [e.fold_scores for e in second.estimates]
    np.testing.assert_array_equal(first.chosen.oof_logits, second.chosen.oof_logits)


def test_a_class_of_one_image_cannot_be_cross_validated() -> None:
    x, y = _blobs(5, 2, spread=0.1)
    with pytest.raises(ValueError, match="at least two images of every class"):
        cross_validate_probes(x[:6], y[:6], 2, probe_candidates(["linear-probe"]))


@pytest.mark.parametrize("candidate", [ProbeCandidate("linear-probe", 1.0), ProbeCandidate("mlp-probe", 20)])
def test_the_chosen_probe_is_refitted_on_all_images_and_applies_to_raw_features(candidate: ProbeCandidate) -> None:
    x, y = _blobs(10, 3, spread=0.2)
    shifted = x * 50 + 7  # far from standardised: the head folds the scaling in
    head = fit_chosen(candidate, (shifted, y), 3, mlp_hidden=16)
    with torch.no_grad():
        assert (head.eval()(shifted).argmax(1) == y).all()
