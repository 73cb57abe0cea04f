"""Linear probe, strategy choice, fine-tuning and evaluation, on real features and a real (tiny) dataset.

The end-to-end tests run the steps (prepare data -> extract features and probe -> fine-tune -> evaluate) on
scikit-learn's handwritten digits written as an ImageFolder (10 classes x 10 images), with the bundled
ImageNet-pretrained EfficientNet-Lite0 at 64x64 pixels.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sklearn import metrics as sk
from sklearn.linear_model import LogisticRegression

from tlops.data.demo import DIGIT_NAMES, write_digits_imagefolder
from tlops.data.prepare import SplitConfig, prepare_data, read_manifest
from tlops.data.preprocessing import DataConfig, eval_transform
from tlops.errors import TlopsError
from tlops.evaluation.metrics import compute_metrics, expected_calibration_error
from tlops.models.backbones import build_classifier, load_backbone
from tlops.steps.evaluate import evaluate
from tlops.steps.extract_features import extract_and_probe
from tlops.steps.fine_tune import fine_tune
from tlops.steps.outputs import (
    EVALUATION_FILE,
    FEATURES_FILE,
    HEAD_FILE,
    MODEL_CONFIG_FILE,
    TRAINING_FILE,
    WEIGHTS_FILE,
    ModelConfig,
    ProbeSummary,
    load_model,
    read_features,
    read_head,
    write_probe,
)
from tlops.steps.runtime import Runtime
from tlops.train.auto import Evidence, decide
from tlops.train.config import STRATEGIES, TrainConfig
from tlops.train.probe import ProbeResult, fit_linear_head, load_features, save_features

IMAGE_SIZE = 64
PER_CLASS = 10
METRIC_KEYS = ("test_accuracy", "test_macro_f1", "test_balanced_accuracy", "test_ece", "test_log_loss")


# --- linear probe on synthetic features ----------------------------------------------------------------------


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


# --- strategy and config ---------------------------------------------------------------------------------------


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
    chosen, reasons = decide(TrainConfig(strategy="auto"), _evidence(0.985, {"a": 50, "b": 60}))
    assert chosen == "linear-probe"
    assert reasons[0].startswith("evidence: smallest class 50 training images, linear probe val 0.985")
    assert len(reasons) == 2 and "0.985" in reasons[1] and ">= 0.97" in reasons[1]
    # The threshold is inclusive; a better MLP probe is the one kept.
    config = TrainConfig(auto_probe_accuracy=0.9)
    assert decide(config, _evidence(0.9, {"a": 50, "b": 60}))[0] == "linear-probe"
    assert decide(config, _evidence(0.9, {"a": 50, "b": 60}, mlp_probe_val=0.93))[0] == "mlp-probe"


def test_auto_keeps_probe_when_smallest_class_is_small() -> None:
    chosen, reasons = decide(TrainConfig(strategy="auto"), _evidence(0.5, {"a": 50, "b": 7, "c": 30}))
    assert chosen == "linear-probe"
    assert "7 training images" in reasons[-1] and "< 10" in reasons[-1]
    chosen, _ = decide(TrainConfig(auto_min_images_per_class=5), _evidence(0.5, {"a": 50, "b": 7}))
    assert chosen == "partial"


def test_auto_fine_tunes_the_top_blocks_on_moderate_data_and_everything_on_much() -> None:
    chosen, reasons = decide(TrainConfig(strategy="auto"), _evidence(0.8, {"a": 50, "b": 10, "c": 30}))
    assert chosen == "partial"
    assert "0.800 < 0.97" in reasons[-1] and "top 2 blocks" in reasons[-1]
    chosen, reasons = decide(TrainConfig(strategy="auto"), _evidence(0.8, {"a": 150, "b": 100}))
    assert chosen == "lp-ft" and "100+ training images per class" in reasons[-1]
    # Raw pixels as good as the pretrained features: low-level statistics differ, tune the first blocks.
    far = _evidence(0.8, {"a": 50, "b": 30}, baseline_probe=0.9, backbone_probe=0.85, knn_accuracy=0.7)
    chosen, reasons = decide(TrainConfig(strategy="auto"), far)
    assert chosen == "surgical" and "first 2 blocks (surgical, input-level shift)" in reasons[-1]
    assert "kNN 0.700" in reasons[0] and "raw pixels 0.900 vs backbone 0.850" in reasons[0]


def test_auto_keeps_a_fine_tuned_model_only_beyond_one_standard_error() -> None:
    from tlops.train.auto import keep_fine_tuned, standard_error

    evidence = _evidence(0.8, {"a": 50}, mlp_probe_val=0.82)
    error = standard_error(0.82, 100)
    assert error == pytest.approx((0.82 * 0.18 / 100) ** 0.5)
    assert keep_fine_tuned(0.82 + error + 1e-9, evidence)[0] is True
    kept, why = keep_fine_tuned(0.82 + error - 1e-9, evidence)
    assert kept is False and why.startswith("kept the mlp-probe")
    assert standard_error(1.0, 50) == pytest.approx(0.01)  # never 0: half an image's share


def test_train_config_rejects_bad_settings() -> None:
    assert set(STRATEGIES.names()) == {"auto", "linear-probe", "mlp-probe", "partial", "surgical", "lp-ft", "gradual"}
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


# --- evaluation metrics ----------------------------------------------------------------------------------------


def test_ece_is_zero_for_confident_correct_predictions() -> None:
    targets = np.array([0, 1, 2, 1, 0])
    probabilities = np.eye(3)[targets]
    assert expected_calibration_error(probabilities, targets) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("confidence", "accuracy"), [(0.7, 0.5), (0.9, 1.0), (0.4, 0.25)])
def test_ece_equals_gap_for_constant_confidence(confidence: float, accuracy: float) -> None:
    n, num_classes = 40, 3
    targets = np.zeros(n, dtype=int)
    rest = (1 - confidence) / (num_classes - 1)
    probabilities = np.full((n, num_classes), rest)
    predicted = np.where(np.arange(n) < round(accuracy * n), 0, 1)
    probabilities[np.arange(n), predicted] = confidence
    assert expected_calibration_error(probabilities, targets) == pytest.approx(abs(accuracy - confidence))


def test_ece_weights_bins_by_their_share() -> None:
    # 3 predictions at confidence 0.95, all correct; 1 at 0.55, wrong: 3/4 * 0.05 + 1/4 * 0.55.
    probabilities = np.array([[0.95, 0.05], [0.05, 0.95], [0.95, 0.05], [0.55, 0.45]])
    targets = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probabilities, targets) == pytest.approx(0.75 * 0.05 + 0.25 * 0.55)


def _reference_ece(probabilities: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    """ECE written out here: bin k holds the confidences in (k/bins, (k+1)/bins], weighted by its share."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == targets
    which = np.maximum(np.ceil(confidence * bins).astype(int) - 1, 0)
    return float(
        sum(
            (which == k).mean() * abs(correct[which == k].mean() - confidence[which == k].mean())
            for k in range(bins)
            if (which == k).any()
        )
    )


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_compute_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    classes = [f"c{k}" for k in range(7)]
    targets = rng.integers(0, 6, size=80)  # class c6 never occurs in the targets
    logits = rng.normal(size=(80, 7)) + 2.5 * np.eye(7)[targets]
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    predictions = probabilities.argmax(1)
    labels = list(range(7))

    result = compute_metrics(probabilities, targets, classes)

    m = result.metrics
    assert m["test_accuracy"] == pytest.approx(sk.accuracy_score(targets, predictions))
    assert m["test_balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(targets, predictions))
    assert m["test_macro_f1"] == pytest.approx(
        sk.f1_score(targets, predictions, labels=labels, average="macro", zero_division=0)
    )
    assert m["test_log_loss"] == pytest.approx(sk.log_loss(targets, probabilities, labels=labels))
    assert m["test_top5_accuracy"] == pytest.approx(sk.top_k_accuracy_score(targets, probabilities, k=5, labels=labels))
    assert m["test_ece"] == pytest.approx(_reference_ece(probabilities, targets))
    assert m["test_images"] == 80
    assert 0.3 < m["test_accuracy"] < 1.0  # a non-trivial case
    assert np.array_equal(np.array(result.confusion), sk.confusion_matrix(targets, predictions, labels=labels))
    assert np.array(result.confusion).shape == (7, 7)
    assert result.report["c0"]["support"] == int((targets == 0).sum())
    assert result.report["c6"]["support"] == 0
    assert result.classes == classes


def test_compute_metrics_binary_has_no_top5() -> None:
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    targets = np.array([0, 1, 1, 1])
    result = compute_metrics(probabilities, targets, ["no", "yes"])
    assert "test_top5_accuracy" not in result.metrics
    assert result.metrics["test_accuracy"] == pytest.approx(0.75)
    assert result.metrics["test_log_loss"] == pytest.approx(sk.log_loss(targets, probabilities))
    assert result.confusion == [[1, 0], [1, 2]]


# --- the steps end to end, on real images ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    return Runtime(cache_dir=tmp_path_factory.mktemp("cache"), batch_size=32)


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory, runtime: Runtime) -> dict[str, Path]:
    """Digits ImageFolder -> prepared data -> cached features and the probe head (EfficientNet-Lite0 at 64 px)."""
    root = tmp_path_factory.mktemp("e2e")
    images = write_digits_imagefolder(root / "images", per_class=PER_CLASS)
    data_dir, features_dir, probe_dir = root / "data", root / "features", root / "probe"
    prepared = prepare_data(str(images), data_dir, SplitConfig(seed=0, workers=2))
    assert prepared.classes == sorted(DIGIT_NAMES)
    summary = extract_and_probe(data_dir, "efficientnet_lite0", features_dir, probe_dir, runtime, image_size=IMAGE_SIZE)
    assert summary.image_size == IMAGE_SIZE and summary.backbone == "efficientnet_lite0"
    return {"root": root, "data": data_dir, "features": features_dir, "probe": probe_dir}


def _no_registry(tmp_path: Path) -> str:
    """A local tracking URI whose store does not exist: the gate finds no champion and creates nothing."""
    return f"sqlite:///{tmp_path / 'no-registry.db'}"


def _manifest(data_dir: Path) -> pd.DataFrame:
    return read_manifest(data_dir)


def _probe_classifier(probe_dir: Path, runtime: Runtime) -> torch.nn.Module:
    summary = ProbeSummary.read(probe_dir)
    backbone = load_backbone(summary.backbone, image_size=summary.image_size, cache_dir=runtime.cache_dir)
    return build_classifier(backbone, read_head(probe_dir).out_features, head=read_head(probe_dir))


def _predict_test_images(data_dir: Path, model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and class ids of the test images, computed without the evaluate step's code paths:
    PIL decoding, the model's own preprocessing, one batch."""
    model, config = load_model(model_dir)
    transform = eval_transform(DataConfig.from_dict(config.data_config))
    manifest = _manifest(data_dir)
    test = manifest[manifest["split"] == "test"]
    images = torch.stack([transform(Image.open(data_dir / uri if not Path(uri).is_absolute() else uri).convert("RGB"))
                          for uri in test["uri"]])  # fmt: skip
    with torch.no_grad():
        probabilities = model.eval()(images).double().softmax(1).numpy()
    return probabilities, np.array([config.classes.index(label) for label in test["label"]])


def test_extract_and_probe_writes_features_and_head(probed: dict[str, Path]) -> None:
    manifest = _manifest(probed["data"])
    features = read_features(probed["features"])
    assert set(features) == {"train", "val", "test"}
    for split, (x, y) in features.items():
        assert x.shape == ((manifest["split"] == split).sum(), 1280)
        assert x.dtype == torch.float32 and torch.isfinite(x).all()
        assert set(y.tolist()) == set(range(10))
    assert (probed["probe"] / HEAD_FILE).is_file()
    summary = ProbeSummary.read(probed["probe"])
    assert summary.num_features == 1280
    # The summary's accuracies are the saved head's, recomputed on the cached features.
    head = read_head(probed["probe"])
    with torch.no_grad():
        accuracy = {split: float((head(x).argmax(1) == y).float().mean()) for split, (x, y) in features.items()}
    assert accuracy["train"] == pytest.approx(summary.train_accuracy)
    assert accuracy["val"] == pytest.approx(summary.val_accuracy)
    assert summary.val_accuracy > 0.1  # above chance for 10 classes: the ImageNet features carry the digits


def test_full_fine_tune_then_evaluate(probed: dict[str, Path], runtime: Runtime, tmp_path: Path) -> None:
    model_dir, evaluation_dir = tmp_path / "model", tmp_path / "evaluation"
    config = TrainConfig(strategy="lp-ft", epochs=1, batch_size=16)

    summary = fine_tune(probed["data"], probed["probe"], model_dir, config, runtime).to_dict()

    for name in (WEIGHTS_FILE, MODEL_CONFIG_FILE, TRAINING_FILE, "learning_curves.png"):
        assert (model_dir / name).is_file(), name
    assert Image.open(model_dir / "learning_curves.png").format == "PNG"
    assert summary == json.loads((model_dir / TRAINING_FILE).read_text())
    assert summary["strategy"] == "lp-ft" and summary["requested_strategy"] == "lp-ft"
    assert summary["reasons"] == ["strategy 'lp-ft' was requested"]
    assert [r["epoch"] for r in summary["history"]] == [0, 1]
    assert summary["history"][0]["train_loss"] is None
    assert summary["history"][1]["train_loss"] > 0
    assert summary["best_epoch"] == 1  # an explicit 'lp-ft' keeps the fine-tuned weights
    assert summary["val_accuracy"] == summary["history"][1]["val_accuracy"]
    assert summary["probe_val_accuracy"] == summary["history"][0]["val_accuracy"]
    model_config = ModelConfig.read(model_dir)
    assert model_config.strategy == "lp-ft" and model_config.data_config["input_size"] == IMAGE_SIZE
    assert model_config.classes == sorted(DIGIT_NAMES)

    # Every layer was trained: backbone and head weights differ from the probe classifier's.
    saved = load_file(str(model_dir / WEIGHTS_FILE))
    probe_state = _probe_classifier(probed["probe"], runtime).state_dict()
    assert saved.keys() == probe_state.keys()
    changed = {k for k in saved if not torch.equal(saved[k], probe_state[k])}
    assert "2.weight" in changed  # the head
    assert any(k.startswith("1.conv_stem") for k in changed)  # the first backbone layer
    assert not any("running_mean" in k or "running_var" in k for k in changed)  # BatchNorm statistics stay frozen

    evaluated = evaluate(probed["data"], model_dir, evaluation_dir, runtime, tracking_uri=_no_registry(tmp_path))
    evaluation = evaluated.evaluation.to_dict()

    assert evaluated.comparison.promote is True and evaluated.comparison.champion_version is None
    for name in (EVALUATION_FILE, "comparison.json", "confusion_matrix.png", "reliability_diagram.png"):
        assert (evaluation_dir / name).is_file(), name
        if name.endswith(".png"):
            assert Image.open(evaluation_dir / name).format == "PNG"
    assert evaluation == json.loads((evaluation_dir / EVALUATION_FILE).read_text())
    metrics = evaluation["metrics"]
    for key in (*METRIC_KEYS, "test_top5_accuracy"):
        assert key in metrics, key
    # The metrics, recomputed with scikit-learn on predictions made here by the saved model, image by image.
    raw, targets = _predict_test_images(probed["data"], model_dir)
    # The reported probabilities are calibrated by the temperature fitted on the validation split.
    calibration = evaluation["calibration"]
    temperature = calibration["temperature"]
    assert temperature > 0 and calibration["reason"]
    assert metrics["temperature"] == temperature
    assert metrics["test_log_loss_uncalibrated"] == pytest.approx(sk.log_loss(targets, raw, labels=list(range(10))))
    logits = np.log(np.clip(raw, 1e-30, 1.0)) / temperature
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    predictions, labels = probabilities.argmax(1), list(range(10))
    assert (predictions == raw.argmax(1)).all()  # a temperature never changes a prediction
    expected = {
        "test_accuracy": sk.accuracy_score(targets, predictions),
        "test_balanced_accuracy": sk.balanced_accuracy_score(targets, predictions),
        "test_macro_f1": sk.f1_score(targets, predictions, labels=labels, average="macro", zero_division=0),
        "test_top5_accuracy": sk.top_k_accuracy_score(targets, probabilities, k=5, labels=labels),
        "test_log_loss": sk.log_loss(targets, probabilities, labels=labels),
        "test_ece": _reference_ece(probabilities, targets),
    }
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key
    assert evaluation["confusion"] == sk.confusion_matrix(targets, predictions, labels=labels).tolist()
    test_count = int((_manifest(probed["data"])["split"] == "test").sum())
    assert metrics["test_images"] == test_count == 20
    confusion = np.array(evaluation["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == test_count
    assert metrics["test_accuracy"] == pytest.approx(np.trace(confusion) / test_count)
    assert metrics["test_accuracy"] > 0.1  # above chance for 10 classes
    assert evaluation["classes"] == sorted(DIGIT_NAMES)
    assert evaluation["strategy"] == "lp-ft" and evaluation["backbone"] == "efficientnet_lite0"
    assert evaluation["report"]["zero"]["support"] == 2


def test_linear_probe_strategy_model_is_the_probe(probed: dict[str, Path], runtime: Runtime, tmp_path: Path) -> None:
    model_dir, evaluation_dir = tmp_path / "model", tmp_path / "evaluation"

    summary = fine_tune(probed["data"], probed["probe"], model_dir, TrainConfig(strategy="linear-probe"), runtime)

    assert summary.strategy == "linear-probe" and summary.best_epoch == 0
    assert [r["epoch"] for r in summary.history] == [0]
    assert not (model_dir / "learning_curves.png").exists()
    assert summary.val_accuracy == ProbeSummary.read(probed["probe"]).val_accuracy
    saved = load_file(str(model_dir / WEIGHTS_FILE))
    head = read_head(probed["probe"])
    assert torch.equal(saved["2.weight"], head.weight) and torch.equal(saved["2.bias"], head.bias)

    evaluation = evaluate(
        probed["data"], model_dir, evaluation_dir, runtime, tracking_uri=_no_registry(tmp_path)
    ).evaluation.to_dict()

    # The registered model, run on the test images, predicts what the probe head predicts on the cached features.
    test_features, test_targets = load_features(probed["features"] / FEATURES_FILE)["test"]
    with torch.no_grad():
        head_predictions = head(test_features).argmax(1).numpy()
    expected = sk.confusion_matrix(test_targets.numpy(), head_predictions, labels=list(range(10)))
    assert np.array_equal(np.array(evaluation["confusion"]), expected)
    assert evaluation["metrics"]["test_accuracy"] == pytest.approx((head_predictions == test_targets.numpy()).mean())
    assert evaluation["strategy"] == "linear-probe"


def test_auto_keeps_the_probe_when_fine_tuning_does_not_improve(
    probed: dict[str, Path], runtime: Runtime, tmp_path: Path
) -> None:
    # auto picks 'partial' (threshold out of reach, no minimum class size); a learning rate far too high for
    # fine-tuning wrecks the network, so epoch 1 validates worse and the probe (epoch 0) must be kept.
    config = TrainConfig(
        strategy="auto", epochs=1, batch_size=16, lr=1.0, auto_probe_accuracy=1.01, auto_min_images_per_class=1
    )

    summary = fine_tune(probed["data"], probed["probe"], tmp_path, config, runtime).to_dict()

    history = summary["history"]
    assert [r["epoch"] for r in history] == [0, 1]
    assert history[1]["val_accuracy"] < history[0]["val_accuracy"], history
    assert summary["requested_strategy"] == "auto"
    assert summary["strategy"] == "linear-probe"
    assert summary["best_epoch"] == 0
    assert summary["val_accuracy"] == summary["probe_val_accuracy"] == history[0]["val_accuracy"]
    assert "< 1.01" in summary["reasons"][1] and "(partial)" in summary["reasons"][1]
    assert summary["reasons"][-1].startswith("kept the linear-probe")
    assert ModelConfig.read(tmp_path).strategy == "linear-probe"
    assert (tmp_path / "learning_curves.png").is_file()

    saved = load_file(str(tmp_path / WEIGHTS_FILE))
    probe_state = _probe_classifier(probed["probe"], runtime).state_dict()
    assert saved.keys() == probe_state.keys()
    for key, value in probe_state.items():
        assert torch.equal(saved[key], value), key


def test_fine_tune_command_logs_lines_not_progress_bars(
    probed: dict[str, Path], runtime: Runtime, tmp_path: Path
) -> None:
    """As in a pod or under kfp.local, stderr is a pipe: progress is a log line per interval, never a '\r' bar."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TLOPS_", "AWS_", "MLFLOW_"))}
    env |= {"TLOPS_DEVICE": "cpu", "TLOPS_CACHE_DIR": str(runtime.cache_dir), "TLOPS_WORKERS": "0"}
    command = [sys.executable, "-m", "tlops.cli", "fine-tune", "--dataset", str(probed["data"]),
               "--probe", str(probed["probe"]), "--output", str(tmp_path / "model"), "--strategy", "full",
               "--epochs", "2", "--batch-size", "16"]  # fmt: skip
    start = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, timeout=600, check=False)  # bytes: '\r' kept
    elapsed = time.monotonic() - start

    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert b"\r" not in result.stderr and b"\r" not in result.stdout
    stderr = result.stderr.decode()
    logged = [line for line in stderr.splitlines() if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO tlops\.", line)]
    requested = "tlops.steps.fine_tune: strategy lp-ft: strategy 'lp-ft' was requested"
    assert any(line.endswith(requested) for line in logged)
    for epoch in (1, 2):
        trained = f"tlops.train.finetune: epoch {epoch}: 8 blocks trained, train loss "
        assert any(trained in line for line in logged), stderr
    # 2 epochs of 5 batches: at most one progress line per 30 s and loop, plus each loop's closing line.
    progress_lines = [line for line in logged if " tlops.io.progress: " in line]
    assert len(progress_lines) <= 2 * (elapsed // 30 + 1), progress_lines
    assert not re.search(r"\d%\|", stderr), stderr  # no tqdm bar (" 40%|####      | 2/5 [...]") anywhere
    assert json.loads(result.stdout)["strategy"] == "lp-ft"  # stdout holds the result only


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
