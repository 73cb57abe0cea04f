"""The text task through the step functions, in process: prepare, score the encoder and the TF-IDF baseline on
the same folds, select, extract, fine-tune (the probe, or the TF-IDF model), evaluate; the saved models answer
texts and the reasons speak of texts."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tlops.data.text.demo import write_text_demo
from tlops.data.text.prepare import prepare_text_data
from tlops.steps.evaluate import evaluate
from tlops.steps.extract_features import extract_and_probe
from tlops.steps.fine_tune import fine_tune
from tlops.steps.outputs import BackboneScore, ModelConfig, load_model
from tlops.steps.runtime import Runtime
from tlops.steps.score_backbone import score_backbone
from tlops.steps.select_backbone import choose_backbone
from tlops.train.config import TrainConfig


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("texts")
    source = write_text_demo(folder / "demo", per_class=16)
    prepared = prepare_text_data(str(source), folder / "prepared")
    assert prepared.task == "text-classification"
    return folder / "prepared"


def test_encoder_and_baseline_score_on_the_same_folds_and_the_winner_ships(
    prepared: Path, runtime: Runtime, tmp_path: Path
) -> None:
    minilm = score_backbone(prepared, "minilm", tmp_path / "scores" / "minilm", runtime)
    tfidf = score_backbone(prepared, "tfidf", tmp_path / "scores" / "tfidf", runtime)
    assert minilm.num_features == 384 and minilm.params > 20_000_000 and minilm.input_size == 0
    assert tfidf.images == minilm.images and tfidf.folds == minilm.folds
    assert len(tfidf.probe_fold_accuracies) == len(minilm.probe_fold_accuracies) == minilm.folds
    again = score_backbone(prepared, "", tmp_path / "scores" / "default", runtime)  # "": the task's own (minilm)
    assert again.name == "minilm" and again.cache_hit  # the embeddings came from the feature cache
    selection = choose_backbone([tmp_path / "scores" / "minilm"], tmp_path / "selection",
                                baseline_dir=tmp_path / "scores" / "tfidf")  # fmt: skip
    better = "tfidf" if tfidf.probe_accuracy > minilm.probe_accuracy else "minilm"
    assert selection.chosen == better
    assert BackboneScore.read(tmp_path / "scores" / "tfidf").name == "tfidf"


def test_the_encoder_probe_is_trained_evaluated_and_answers_texts(
    prepared: Path, runtime: Runtime, tmp_path: Path
) -> None:
    features, probe, model_dir = tmp_path / "features", tmp_path / "probe", tmp_path / "model"
    extract_and_probe(prepared, "minilm", features, probe, runtime)
    training = fine_tune(prepared, probe, model_dir, TrainConfig(), runtime, features_dir=features)
    assert training.strategy in ("linear-probe", "mlp-probe")
    assert any("train+val texts" in reason for reason in training.reasons)
    assert any("too few to fine-tune" in reason for reason in training.reasons)  # 16 a class: auto keeps the probe
    evaluated = evaluate(prepared, model_dir, tmp_path / "evaluation", runtime,
                         tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")  # fmt: skip
    assert evaluated.evaluation.metrics["test_accuracy"] > 1 / len(evaluated.evaluation.classes)
    model, config = load_model(model_dir)
    assert config.task == "text-classification" and config.data_config["max_length"] == 256
    logits = model.logits(["Return a new array of given shape and type, filled with zeros.", "x"])
    assert logits.shape == (2, len(config.classes)) and np.isfinite(logits).all()


def test_the_tfidf_baseline_is_refitted_calibrated_and_loaded_without_an_encoder(
    prepared: Path, runtime: Runtime, tmp_path: Path
) -> None:
    features, probe, model_dir = tmp_path / "features", tmp_path / "probe", tmp_path / "model"
    summary = extract_and_probe(prepared, "tfidf", features, probe, runtime)
    assert summary.backbone == "tfidf" and summary.num_features > 100
    training = fine_tune(prepared, probe, model_dir, TrainConfig(), runtime, features_dir=features)
    assert training.strategy == "linear-probe" and "TF-IDF baseline" in training.reasons[1]
    assert (model_dir / "calibration_set.safetensors").is_file()  # out-of-fold logits calibrate it
    model, config = load_model(model_dir)
    assert config.backbone == "tfidf" and ModelConfig.read(model_dir).task == "text-classification"
    with open(Path(prepared) / "manifest.csv", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle) if row["split"] == "test"]
    assert model.logits(texts).shape == (len(texts), len(config.classes))
    with pytest.raises(Exception, match="fine-tunes an encoder"):
        fine_tune(prepared, probe, tmp_path / "lora", TrainConfig(strategy="lora"), runtime, features_dir=features)
