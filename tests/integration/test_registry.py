"""Registration against the real MLflow server (sqlite backend, artifacts proxied to SeaweedFS)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from predictions import read_predictions
from tlops.errors import TlopsError
from tlops.promotion.aliases import CHALLENGER, CHAMPION
from tlops.promotion.gate import GateConfig, describe
from tlops.promotion.registry import RegistryConfig
from tlops.steps.outputs import load_model
from tlops.steps.register import register

pytestmark = pytest.mark.integration


def _config(mlflow_uri: str) -> RegistryConfig:
    return RegistryConfig(tracking_uri=mlflow_uri, experiment="tlops-tests", model_name=f"m-{uuid.uuid4().hex[:8]}")


def _register(dirs: dict[str, Path], config: RegistryConfig, client=None, evaluation: Path | None = None):
    """The register step; the evaluation's gate looked in another (empty) registry, so it decides nothing here."""
    return register(dirs["data"], dirs["model"], evaluation or dirs["evaluation"], config, client=client)


def test_first_version_is_champion_and_challenger_and_artifacts_land_in_s3(trained_model, mlflow_uri, s3_client):
    from mlflow import MlflowClient

    config = _config(mlflow_uri)
    registration = _register(trained_model, config)

    client = MlflowClient(mlflow_uri)
    assert registration.version == 1
    assert sorted(registration.aliases) == [CHALLENGER, CHAMPION]
    assert client.get_model_version_by_alias(config.model_name, CHAMPION).version == "1"
    assert client.get_model_version_by_alias(config.model_name, CHALLENGER).version == "1"
    run = client.get_run(registration.run_id)
    assert run.data.params["backbone"] == "efficientnet_lite0"
    assert run.data.tags["tlops.champion"] == "no champion yet: the new version becomes it"
    probabilities, targets = read_predictions(trained_model["evaluation"])  # recomputed from the predictions
    assert run.data.metrics["test_accuracy"] == pytest.approx(float((probabilities.argmax(1) == targets).mean()))
    assert run.inputs.dataset_inputs, "the dataset should be logged as a run input"
    keys = [
        obj["Key"]
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket="mlflow-artifacts")
        for obj in page.get("Contents", [])
    ]
    assert any(key.endswith("model.pt2") for key in keys), "the exported model should be stored in S3"
    assert any(registration.run_id in key and key.endswith("confusion_matrix.png") for key in keys)
    assert any(registration.run_id in key and key.endswith("data/report.md") for key in keys)
    assert any(registration.run_id in key and key.endswith("report/comparison.json") for key in keys)


def test_second_version_becomes_challenger_and_champion_stays(trained_model, mlflow_uri):
    from mlflow import MlflowClient

    config = _config(mlflow_uri)
    _register(trained_model, config)
    second = _register(trained_model, config)

    client = MlflowClient(mlflow_uri)
    assert second.version == 2
    assert second.aliases == [CHALLENGER]
    assert client.get_model_version_by_alias(config.model_name, CHAMPION).version == "1"
    assert client.get_model_version_by_alias(config.model_name, CHALLENGER).version == "2"


def test_a_retried_register_step_of_one_pipeline_run_registers_once(trained_model, mlflow_uri):
    """KFP retries the register step after a network error: the attempt after a success must not add a version."""
    from mlflow import MlflowClient

    config = _config(mlflow_uri)
    steps = (trained_model["data"], trained_model["model"], trained_model["evaluation"], config)
    first = register(*steps, lineage={"kfp_run_id": "run-7f3a", "kfp_run_name": "nightly"})
    retried = register(*steps, lineage={"kfp_run_id": "run-7f3a", "kfp_run_name": "nightly"})
    other_run = register(*steps, lineage={"kfp_run_id": "run-9c1d"})

    client = MlflowClient(mlflow_uri)
    assert (first.version, retried.version, other_run.version) == (1, 1, 2)
    assert (retried.run_id, retried.logged_model_uri) == (first.run_id, first.logged_model_uri)
    assert retried.tensor_model_uri == first.tensor_model_uri and retried.champion["version"] == 1
    assert sorted(retried.aliases) == [CHALLENGER, CHAMPION] and other_run.aliases == [CHALLENGER]
    assert len(client.search_model_versions(f"name = '{config.model_name}'")) == 2


def test_registered_model_serves_image_bytes_like_the_trained_model_and_keeps_the_tensor_model(
    trained_model, mlflow_uri
):
    import mlflow
    import mlflow.pytorch
    import pandas as pd
    from mlflow import MlflowClient

    from tlops.data.images import decode_image
    from tlops.data.preprocessing import eval_transform
    from tlops.steps.outputs import Evaluation, load_prepared

    config = _config(mlflow_uri)
    registration = _register(trained_model, config)
    mlflow.set_tracking_uri(mlflow_uri)
    served = mlflow.pyfunc.load_model(f"models:/{config.model_name}@{CHAMPION}")
    local, model_config = load_model(trained_model["model"])
    temperature = Evaluation.read(trained_model["evaluation"]).calibration["temperature"]
    manifest, _ = load_prepared(trained_model["data"])
    files = list(manifest["uri"][:4])
    images = [Path(uri).read_bytes() for uri in files]
    predictions = served.predict(pd.DataFrame({"image": images}))
    batch = torch.stack([eval_transform(model_config.preprocessing)(decode_image(data).image) for data in images])
    with torch.no_grad():
        expected = torch.softmax(local(batch) / temperature, dim=1).numpy()
    actual = np.array([[row[c] for c in model_config.classes] for row in predictions["probabilities"]])
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    assert list(predictions["label"]) == [model_config.classes[i] for i in expected.argmax(1)]
    # The tensor model: preprocessed (N, 3, S, S) floats in, logits out, for users who batch their own tensors.
    tags = MlflowClient(mlflow_uri).get_model_version(config.model_name, "1").tags
    assert tags["tensor_model_uri"] == registration.tensor_model_uri
    tensors = mlflow.pytorch.load_model(registration.tensor_model_uri)
    with torch.no_grad():
        np.testing.assert_allclose(tensors(batch).numpy(), local(batch).numpy(), rtol=1e-4, atol=1e-4)


def test_unreachable_server_is_a_clear_error(trained_model):
    config = RegistryConfig(tracking_uri="http://127.0.0.1:9", model_name="never")
    with pytest.raises(TlopsError, match=r"MLflow server at http://127\.0\.0\.1:9 does not answer"):
        _register(trained_model, config)


class _AliasFailingClient:
    """A real MlflowClient whose alias call fails, as when the server drops mid-registration."""

    def __new__(cls, uri: str):
        from mlflow import MlflowClient

        class Client(MlflowClient):
            def set_registered_model_alias(self, name, alias, version):
                raise RuntimeError("connection reset while setting the alias")

        return Client(uri)


def test_failed_registration_leaves_no_version_or_alias(trained_model, mlflow_uri):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    config = _config(mlflow_uri)
    expected = r"failed \(connection reset while setting the alias\); version 1 was deleted again; fix the cause"
    with pytest.raises(TlopsError, match=expected):
        _register(trained_model, config, client=_AliasFailingClient(mlflow_uri))
    client = MlflowClient(mlflow_uri)
    with pytest.raises(MlflowException):
        client.get_registered_model(config.model_name)


def test_failed_registration_keeps_the_existing_champion(trained_model, mlflow_uri):
    from mlflow import MlflowClient

    config = _config(mlflow_uri)
    _register(trained_model, config)
    with pytest.raises(TlopsError):
        _register(trained_model, config, client=_AliasFailingClient(mlflow_uri))
    client = MlflowClient(mlflow_uri)
    versions = client.search_model_versions(f"name='{config.model_name}'")
    assert [v.version for v in versions] == ["1"]
    assert client.get_model_version_by_alias(config.model_name, CHAMPION).version == "1"
    assert client.get_model_version_by_alias(config.model_name, CHALLENGER).version == "1"


def test_promote_and_roll_back(trained_model, mlflow_uri, tmp_path):
    import subprocess
    import sys

    from mlflow import MlflowClient

    from tlops.promotion.aliases import PREVIOUS_CHAMPION, promote

    config = _config(mlflow_uri)
    _register(trained_model, config)
    _register(trained_model, config)
    client = MlflowClient(mlflow_uri)

    def alias(name: str) -> str:
        return client.get_model_version_by_alias(config.model_name, name).version

    promoted = promote(client, config.model_name)  # the challenger, version 2
    assert (promoted.champion, promoted.previous) == (2, 1)
    assert (alias(CHAMPION), alias(PREVIOUS_CHAMPION), alias(CHALLENGER)) == ("2", "1", "2")

    rolled_back = promote(client, config.model_name, rollback=True)
    assert (rolled_back.champion, rolled_back.previous) == (1, 2)
    assert (alias(CHAMPION), alias(PREVIOUS_CHAMPION)) == ("1", "2")

    with pytest.raises(TlopsError, match="has no version 7"):
        promote(client, config.model_name, version=7)
    with pytest.raises(TlopsError, match="does not exist"):
        promote(client, "no-such-model")
    assert alias(CHAMPION) == "1"  # nothing moved by the bad requests

    command = [sys.executable, "-m", "tlops.cli", "promote", "--model-name", config.model_name]
    moved = subprocess.run([*command, "--version", "2", "--tracking-uri", mlflow_uri], capture_output=True, text=True)
    assert moved.returncode == 0, moved.stderr
    assert "champion is version 2 (was version 1)" in moved.stdout
    bad = subprocess.run([*command, "--version", "9", "--tracking-uri", mlflow_uri], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"tlops: error: {config.model_name!r} has no version 9; list its versions with tlops models --model-name "
        f"{config.model_name}"
    ]
    assert alias(CHAMPION) == "2"


def test_champion_gate_keeps_the_champion_against_an_identical_challenger(trained_model, mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    from tlops.steps.evaluate import evaluate
    from tlops.steps.outputs import Comparison
    from tlops.steps.runtime import Runtime

    config = _config(mlflow_uri)
    runtime = Runtime(cache_dir=tmp_path / "cache")

    def evaluated(name: str) -> Path:
        output = tmp_path / name
        evaluate(
            trained_model["data"], trained_model["model"], output, runtime, tracking_uri=mlflow_uri,
            model_name=config.model_name,
        )  # fmt: skip
        return output

    first = evaluated("first")
    assert Comparison.read(first).promote is True and Comparison.read(first).champion_version is None
    assert _register(trained_model, config, evaluation=first).aliases == [CHALLENGER, CHAMPION]

    # The same model again: the champion (loaded back from the registry) predicts exactly like the challenger.
    second = evaluated("second")
    comparison = Comparison.read(second)
    assert comparison.promote is False and comparison.champion_version == 1
    assert comparison.difference == 0 and comparison.mcnemar_p == 1.0
    assert (comparison.tracking_uri, comparison.model_name) == (mlflow_uri, config.model_name)
    summary = _register(trained_model, config, evaluation=second)
    assert summary.version == 2 and summary.aliases == [CHALLENGER]
    assert summary.champion == {"version": 1, "reason": "the gate kept version 1"}
    assert summary.gate == {
        "promote": False,
        "champion_version": 1,
        "reasons": comparison.reasons,
        "thresholds": describe(GateConfig()),
    }
    client = MlflowClient(mlflow_uri)
    assert client.get_model_version_by_alias(config.model_name, CHAMPION).version == "1"
    assert client.get_run(summary.run_id).data.metrics["gate.mcnemar_p"] == 1.0


def test_a_promoting_gate_moves_the_champion_and_keeps_the_previous(trained_model, mlflow_uri):
    from mlflow import MlflowClient

    from tlops.promotion.aliases import PREVIOUS_CHAMPION, assign_aliases

    config = _config(mlflow_uri)
    _register(trained_model, config)
    _register(trained_model, config)
    client = MlflowClient(mlflow_uri)
    moved = assign_aliases(client, config.model_name, 2, promote=True, compared_champion=1)
    assert (moved.aliases, moved.champion) == ([CHALLENGER, CHAMPION], 2)
    assert moved.reason == f"the gate passed against version 1: the new version replaces it ({PREVIOUS_CHAMPION})"
    assert client.get_model_version_by_alias(config.model_name, CHAMPION).version == "2"
    assert client.get_model_version_by_alias(config.model_name, PREVIOUS_CHAMPION).version == "1"
    kept = assign_aliases(client, config.model_name, 1, promote=False, compared_champion=2)
    assert (kept.aliases, kept.champion, kept.reason) == ([CHALLENGER], 2, "the gate kept version 2")
    assert client.get_model_version_by_alias(config.model_name, CHAMPION).version == "2"
