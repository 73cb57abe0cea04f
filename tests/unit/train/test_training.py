"""Training without a dataset: the linear probe head (standardization folded in, classes missing from training), the
features files, the strategy choice of ``auto``, the training settings and the class weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from tlops.errors import TlopsError
from tlops.steps.outputs import (
    FEATURES_FILE,
    ProbeSummary,
    read_head,
    write_probe,
)
from tlops.train.auto import Evidence, decide
from tlops.train.config import STRATEGIES, TrainConfig
from tlops.train.probe import ProbeResult, fit_linear_head, load_features, save_features


def _blobs(
    centers: np.ndarray, per_class: int, seed: int, labels: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs around ``centers`` (unit spread), features on very different scales per dimension."""
    rng = np.random.default_rng(seed)
    labels = list(range(len(centers))) if labels is None else labels
    x = np.concatenate([centers[k] + rng.normal(size=(per_class, centers.shape[1])) for k in labels])
    y = np.repeat(labels, per_class)
    scales = np.geomspace(0.5, 5.0, centers.shape[1])  # so the folded scaling matters
    return torch.from_numpy(x * scales + 3.0).float(), torch.from_numpy(y).long()


def _centers(num_classes: int, width: int, distance: float = 8.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(num_classes, width))
    return distance * directions / np.linalg.norm(directions, axis=1, keepdims=True)


class _GlobalScaler:
    """Per-dimension centering and one global scale: the feature scaling fit_linear_head documents."""

    def __init__(self, x: np.ndarray) -> None:
        self.mean, self.scale = x.mean(axis=0), float(x.std(axis=0).mean())

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


def _sklearn_reference(probe: ProbeResult, train: tuple[torch.Tensor, torch.Tensor]):
    """The scaler and the logistic regression that fit_linear_head fitted for the chosen C (it is deterministic)."""
    x = train[0].numpy().astype(np.float64)
    scaler = _GlobalScaler(x)
    model = LogisticRegression(C=probe.C, max_iter=2000, random_state=0).fit(scaler.transform(x), train[1].numpy())
    return scaler, model


def test_near_constant_features_get_no_huge_weights() -> None:
    """Dead channels (std ~1e-6) must not get huge weights: fine-tuning from such a head is unstable."""
    centers = _centers(3, 6)
    train, val = _blobs(centers, 40, 1), _blobs(centers, 20, 2)
    rng = np.random.default_rng(0)

    def with_dead_channels(split: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        dead = torch.from_numpy(1e-6 * rng.normal(size=(len(split[0]), 4))).float()
        return torch.cat([split[0], dead], dim=1), split[1]

    probe = fit_linear_head(with_dead_channels(train), with_dead_channels(val), 3)
    assert probe.val_accuracy >= 0.95
    assert probe.head.weight[:, 6:].abs().max().item() < 1.0


def _head_probabilities(probe: ProbeResult, features: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return probe.head(features).softmax(1).numpy()


@pytest.mark.parametrize("num_classes", [2, 4])
def test_linear_head_separates_blobs_and_folds_the_standardization(num_classes: int) -> None:
    width = 6
    centers = _centers(num_classes, width)
    train, val, test = _blobs(centers, 40, 1), _blobs(centers, 20, 2), _blobs(centers, 20, 3)

    probe = fit_linear_head(train, val, num_classes)

    assert isinstance(probe.head, torch.nn.Linear)
    assert (probe.head.in_features, probe.head.out_features) == (width, num_classes)
    assert probe.C in (0.01, 0.1, 1.0, 10.0)
    assert probe.val_accuracy >= 0.99
    assert probe.train_accuracy >= 0.95

    scaler, reference = _sklearn_reference(probe, train)
    z_test = scaler.transform(test[0].numpy().astype(np.float64))
    probabilities = _head_probabilities(probe, test[0])  # raw, unstandardized features
    assert np.array_equal(probabilities.argmax(1), reference.predict(z_test))
    assert np.allclose(probabilities, reference.predict_proba(z_test), atol=1e-4)
    assert (probabilities.argmax(1) == test[1].numpy()).mean() >= 0.97


def test_linear_head_without_standardization_folding_would_differ() -> None:
    """Guards the test above: the raw features are far from standardized, so the folding is not a no-op."""
    centers = _centers(3, 6)
    train = _blobs(centers, 40, 1)
    probe = fit_linear_head(train, _blobs(centers, 20, 2), 3)
    scaler, reference = _sklearn_reference(probe, train)
    raw = train[0].numpy().astype(np.float64)
    unfolded = raw @ reference.coef_.T + reference.intercept_
    with torch.no_grad():
        folded = probe.head(train[0]).numpy()
    assert not np.allclose(unfolded, folded, atol=1e-2)
    assert np.allclose(scaler.transform(raw) @ reference.coef_.T + reference.intercept_, folded, atol=1e-3)


def test_class_missing_from_training_gets_a_very_negative_bias() -> None:
    centers = _centers(4, 6)
    present = [0, 1, 3]
    train = _blobs(centers, 30, 1, labels=present)
    val = _blobs(centers, 10, 2, labels=present)

    probe = fit_linear_head(train, val, 4)

    assert probe.head.out_features == 4
    bias = probe.head.bias.detach()
    assert float(bias[2]) <= -1e3
    assert torch.count_nonzero(probe.head.weight.detach()[2]) == 0
    assert all(float(bias[k]) > -100 for k in present)
    everything = _blobs(centers, 20, 3)
    predictions = _head_probabilities(probe, everything[0]).argmax(1)
    assert 2 not in set(predictions.tolist())
    scaler, reference = _sklearn_reference(probe, train)
    assert np.array_equal(predictions, reference.predict(scaler.transform(everything[0].numpy().astype(np.float64))))


def test_binary_training_data_within_more_classes() -> None:
    centers = _centers(3, 5)
    train = _blobs(centers, 30, 1, labels=[0, 2])
    val = _blobs(centers, 10, 2, labels=[0, 2])

    probe = fit_linear_head(train, val, 3)

    assert float(probe.head.bias.detach()[1]) <= -1e3
    assert probe.val_accuracy >= 0.99
    scaler, reference = _sklearn_reference(probe, train)
    test = _blobs(centers, 15, 3, labels=[0, 2])
    z_test = scaler.transform(test[0].numpy().astype(np.float64))
    probabilities = _head_probabilities(probe, test[0])
    assert np.allclose(probabilities[:, [0, 2]], reference.predict_proba(z_test), atol=1e-4)
    assert np.array_equal(probabilities.argmax(1), reference.predict(z_test))


def test_probe_and_features_files_round_trip(tmp_path: Path) -> None:
    centers = _centers(3, 4)
    splits = {"train": _blobs(centers, 10, 1), "val": _blobs(centers, 5, 2), "test": _blobs(centers, 5, 3)}
    save_features(tmp_path / FEATURES_FILE, splits)
    loaded = load_features(tmp_path / FEATURES_FILE)
    assert set(loaded) == {"train", "val", "test"}
    for split, (features, targets) in splits.items():
        assert torch.equal(loaded[split][0], features) and torch.equal(loaded[split][1], targets)

    probe = fit_linear_head(splits["train"], splits["val"], 3)
    written = ProbeSummary(
        "efficientnet_lite0", ["a", "b", "c"], probe.C, probe.val_accuracy, probe.train_accuracy, 64, 4
    )
    write_probe(tmp_path, probe.head, written)
    head = read_head(tmp_path)
    assert torch.equal(head.weight, probe.head.weight) and torch.equal(head.bias, probe.head.bias)
    assert ProbeSummary.read(tmp_path) == written
    assert json.loads((tmp_path / ProbeSummary.FILE).read_text()) == {
        "C": probe.C,
        "val_accuracy": probe.val_accuracy,
        "train_accuracy": probe.train_accuracy,
        "backbone": "efficientnet_lite0",
        "classes": ["a", "b", "c"],
        "image_size": 64,
        "num_features": 4,
        "class_weighted": False,
        "cache_hit": False,
        "feature_seconds": 0.0,
        "cache_entry": "",
        "schema_version": 1,
    }


def _evidence(probe_val: float, counts: dict[str, int], **extra) -> Evidence:
    return Evidence(train_images_per_class=counts, val_images=100, linear_probe_val=probe_val, **extra)


@pytest.mark.parametrize("strategy", ["linear-probe", "mlp-probe", "partial", "surgical", "lp-ft", "gradual"])
def test_explicit_strategy_passes_through(strategy: str) -> None:
    # Even a perfect probe and tiny classes do not override an explicit choice.
    chosen, reasons = decide(TrainConfig(strategy=strategy), _evidence(1.0, {"a": 1, "b": 2}))
    assert chosen == strategy
    assert reasons == [f"strategy {strategy!r} was requested"]


def test_full_is_read_as_lp_ft() -> None:
    assert TrainConfig(strategy="full").strategy == "lp-ft"


def test_auto_keeps_probe_when_features_already_separate_classes() -> None:
    chosen, reasons = decide(TrainConfig(strategy="auto"), _evidence(0.985, {"a": 150, "b": 160}))
    assert chosen == "linear-probe"
    assert reasons[0].startswith("evidence: smallest class 150 training images, linear-probe 0.985")
    assert len(reasons) == 2 and "0.985" in reasons[1] and ">= 0.97" in reasons[1]
    # The threshold is inclusive, on the estimate of the probe chosen (cross-validated, with its error).
    config = TrainConfig(auto_probe_accuracy=0.9)
    assert decide(config, _evidence(0.9, {"a": 150, "b": 160}))[0] == "linear-probe"
    chosen_mlp = _evidence(0.8, {"a": 150}, probe="mlp-probe", probe_accuracy=0.93, probe_std_error=0.02)
    chosen, reasons = decide(config, chosen_mlp)
    assert chosen == "mlp-probe" and "mlp-probe 0.930 ± 0.020" in reasons[0]


def test_auto_keeps_probe_when_smallest_class_is_small() -> None:
    chosen, reasons = decide(TrainConfig(strategy="auto"), _evidence(0.5, {"a": 50, "b": 7, "c": 30}))
    assert chosen == "linear-probe"
    assert "7 training images" in reasons[-1] and "< 100" in reasons[-1]
    chosen, _ = decide(TrainConfig(auto_min_images_per_class=5), _evidence(0.5, {"a": 50, "b": 7}))
    assert chosen == "lp-ft"


def test_auto_tries_its_fine_tuning_strategy_where_it_may_pay_off_and_never_on_raw_pixels() -> None:
    chosen, reasons = decide(TrainConfig(strategy="auto"), _evidence(0.8, {"a": 150, "b": 100, "c": 130}))
    assert chosen == "lp-ft"
    assert "0.800 < 0.97" in reasons[-1] and "kept only if it beats" in reasons[-1]
    assert decide(TrainConfig(auto_fine_tune="partial"), _evidence(0.8, {"a": 100}))[0] == "partial"
    pixels = _evidence(0.5, {"a": 500, "b": 500}, backbone="pixels")
    chosen, reasons = decide(TrainConfig(strategy="auto"), pixels)
    assert chosen == "linear-probe" and "no backbone to fine-tune" in reasons[-1]
    with pytest.raises(TlopsError, match="auto-fine-tune must be one of partial, surgical, lp-ft, gradual"):
        TrainConfig(auto_fine_tune="mlp-probe")


def test_auto_keeps_a_fine_tuned_model_only_beyond_one_paired_standard_error() -> None:
    from tlops.estimates import image_difference
    from tlops.train.auto import keep_fine_tuned, standard_error

    evidence = _evidence(0.8, {"a": 50}, probe="mlp-probe")
    probe = np.array([1] * 80 + [0] * 20)
    better = probe.copy()
    better[80:95] = 1  # 15 more right, none lost: +0.15, clearly above its error
    kept, why = keep_fine_tuned(image_difference(better, probe, "paired on 100 validation images"), evidence)
    assert kept is True and why.startswith("kept the fine-tuned model: fine-tuned - mlp-probe +0.150 ±")
    noisy = probe.copy()
    noisy[80:90], noisy[:8] = 1, 0  # 10 gained, 8 lost: +0.02, within one standard error
    kept, why = keep_fine_tuned(image_difference(noisy, probe, "paired on 100 validation images"), evidence)
    assert kept is False and why.startswith("kept the mlp-probe: fine-tuned - mlp-probe +0.020 ±")
    assert standard_error(1.0, 50) == pytest.approx(0.01)  # never 0: half an image's share


def test_train_config_rejects_bad_settings() -> None:
    names = {"auto", "linear-probe", "mlp-probe", "partial", "surgical", "lp-ft", "gradual", "frozen", "lora"}
    assert set(STRATEGIES.names()) == names
    with pytest.raises(TlopsError, match=r"strategy must be one of auto, linear-probe, mlp-probe.*'freeze'"):
        TrainConfig(strategy="freeze")
    for bad in (
        {"epochs": 0},
        {"batch_size": 0},
        {"lr": 0.0},
        {"unfreeze_blocks": 0},
        {"layer_decay": 1.5},
        {"swa_epochs": 4, "epochs": 3},
        {"batch_size": 30, "grad_accumulation": 4},
        {"surgical_blocks": "top"},
        {"mixup": -1.0},
    ):
        with pytest.raises(TlopsError):
            TrainConfig(**bad)
    assert TrainConfig(strategy="lp-ft", epochs=1).epochs == 1


def test_balanced_class_weights_match_scikit_learn() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    from tlops.train.finetune import balanced_class_weights

    targets = [0] * 30 + [1] * 10 + [2] * 5
    expected = compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=np.array(targets))
    np.testing.assert_allclose(balanced_class_weights(targets, 3).numpy(), expected, rtol=1e-6)
    assert balanced_class_weights(targets, 4)[3].item() == 0.0  # a class absent from training


def test_class_weighted_probe_recovers_the_minority_class() -> None:
    rng = np.random.default_rng(0)
    # Two overlapping classes, 20:1 imbalance: an unweighted probe favours the majority class.
    majority = rng.normal(0.0, 1.0, size=(400, 4))
    minority = rng.normal(1.2, 1.0, size=(20, 4))
    train = (torch.tensor(np.vstack([majority, minority]), dtype=torch.float32), torch.tensor([0] * 400 + [1] * 20))
    val_x = np.vstack([rng.normal(0.0, 1.0, size=(100, 4)), rng.normal(1.2, 1.0, size=(100, 4))])
    val = (torch.tensor(val_x, dtype=torch.float32), torch.tensor([0] * 100 + [1] * 100))

    def minority_recall(probe: ProbeResult) -> float:
        predictions = probe.head(val[0]).argmax(1)
        return (predictions[100:] == 1).float().mean().item()

    plain = fit_linear_head(train, val, 2)
    weighted = fit_linear_head(train, val, 2, class_weighted=True)
    assert minority_recall(weighted) > minority_recall(plain) + 0.3
