"""Linear probe, strategy choice, fine-tuning and evaluation, on real features and a real (tiny) dataset.

The end-to-end tests run the steps (prepare data -> extract features and probe -> fine-tune -> evaluate) on
scikit-learn's handwritten digits written as an ImageFolder (10 classes x 10 images), with the bundled
ImageNet-pretrained EfficientNet-Lite0 at 64x64 pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sklearn import metrics as sk

from calibration import reference_ece as _reference_ece
from probes import IMAGE_SIZE, probe_digits
from tlops.data.demo import DIGIT_NAMES
from tlops.data.prepare import read_manifest
from tlops.data.preprocessing import DataConfig, eval_transform
from tlops.models.backbones import build_classifier, load_backbone
from tlops.steps.evaluate import evaluate
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
)
from tlops.steps.runtime import Runtime
from tlops.train.config import TrainConfig
from tlops.train.probe import load_features

METRIC_KEYS = ("test_accuracy", "test_macro_f1", "test_balanced_accuracy", "test_ece", "test_log_loss")


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory, runtime: Runtime) -> dict[str, Path]:
    """The digits probed once for this module (``runtime`` from tests/conftest.py)."""
    return probe_digits(tmp_path_factory.mktemp("e2e"), runtime)


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
    # auto tries lp-ft (threshold out of reach, no minimum class size); a learning rate far too high for
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
    (tried,) = [reason for reason in summary["reasons"] if reason.startswith("try lp-ft")]
    assert "< 1.01" in tried
    assert summary["reasons"][-1].startswith("kept the linear-probe: fine-tuned - linear-probe -")
    assert ModelConfig.read(tmp_path).strategy == "linear-probe"
    assert (tmp_path / "learning_curves.png").is_file()

    saved = load_file(str(tmp_path / WEIGHTS_FILE))
    probe_state = _probe_classifier(probed["probe"], runtime).state_dict()
    assert saved.keys() == probe_state.keys()
    for key, value in probe_state.items():
        assert torch.equal(saved[key], value), key
