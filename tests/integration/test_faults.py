"""Registration under faults, against real services: the MLflow server or S3 gone mid-registration, a champion
whose artifacts were deleted, a champion trained on other classes. Nothing half-written, no alias moved, and a
re-run succeeds."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from services import MLFLOW_BUCKET, Services, _read_pids, make_s3_client, start_services, stop_services
from tlops.errors import TlopsError
from tlops.promotion.aliases import CHALLENGER, CHAMPION
from tlops.promotion.registry import RegistryConfig
from tlops.steps.evaluate import evaluate
from tlops.steps.outputs import Comparison
from tlops.steps.register import register
from tlops.steps.runtime import Runtime

pytestmark = pytest.mark.integration


@pytest.fixture
def own_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Services]]:
    """A SeaweedFS + MLflow server pair of this test's own, which it may break (the session's stay up)."""
    workdir = tmp_path / "services"
    services = start_services(workdir)
    # Fail fast instead of MLflow's default of 7 retries with exponential backoff (minutes).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        yield workdir, services
    finally:
        stop_services(workdir)


def _kill(workdir: Path, name: str) -> None:
    for service, pid in _read_pids(workdir):
        if service == name:
            os.killpg(pid, signal.SIGKILL)


def _aliases(uri: str, name: str) -> dict[str, int]:
    from mlflow import MlflowClient

    return {alias: int(v) for alias, v in MlflowClient(uri).get_registered_model(name).aliases.items()}


def _versions(uri: str, name: str) -> list[int]:
    from mlflow import MlflowClient

    return sorted(int(v.version) for v in MlflowClient(uri).search_model_versions(f"name='{name}'"))


def _evaluate(trained_model: dict[str, Path], tmp_path: Path, uri: str, name: str):
    """The evaluate step on the trained model, its gate against ``name``'s champion in the registry at ``uri``."""
    runtime = Runtime(cache_dir=tmp_path / "cache")
    data, model = trained_model["data"], trained_model["model"]
    return evaluate(data, model, tmp_path / "evaluation", runtime, tracking_uri=uri, model_name=name)


def _register(trained_model: dict[str, Path], uri: str, name: str):
    config = RegistryConfig(tracking_uri=uri, experiment="faults", model_name=name)
    return register(trained_model["data"], trained_model["model"], trained_model["evaluation"], config)


def test_mlflow_or_s3_lost_during_registration_moves_nothing_and_a_rerun_succeeds(
    trained_model, own_services, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tlops.serving.package as package

    workdir, services = own_services
    name = f"faults-{uuid.uuid4().hex[:6]}"
    assert _register(trained_model, services.mlflow_uri, name).version == 1
    log_served_model = package.log_served_model
    for service, version in (("mlflow", 2), ("weed", 3)):  # the tracking server, then the S3 store behind it

        def lose_the_service_then_upload(*args, service=service, **kwargs):
            _kill(workdir, service)  # the run is open, params and metrics are logged: now the model upload fails
            return log_served_model(*args, **kwargs)

        monkeypatch.setattr(package, "log_served_model", lose_the_service_then_upload)
        with pytest.raises(TlopsError) as failure:
            _register(trained_model, services.mlflow_uri, name)
        message = str(failure.value)
        assert message.startswith(f"registering the model in MLflow at {services.mlflow_uri} failed ("), service
        assert "no version was registered and no alias was moved" in message and "\n" not in message, service
        monkeypatch.setattr(package, "log_served_model", log_served_model)

        # Back up (same data, new ports): the champion where it was, no new version; the re-run registers.
        stop_services(workdir)
        services = start_services(workdir)
        assert _versions(services.mlflow_uri, name) == list(range(1, version))
        assert _aliases(services.mlflow_uri, name) == {CHAMPION: 1, CHALLENGER: version - 1}
        assert _register(trained_model, services.mlflow_uri, name).version == version


def test_a_champion_whose_artifacts_were_deleted_is_reported_not_a_crash(
    trained_model, mlflow_uri: str, s3_env, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    name = f"gone-{uuid.uuid4().hex[:6]}"
    registration = _register(trained_model, mlflow_uri, name)
    client = MlflowClient(mlflow_uri)
    source = client.get_model_version(name, "1").source  # models:/m-<id>: the logged model's artifacts
    location = client.get_logged_model(source.removeprefix("models:/")).artifact_location
    prefix = location.removeprefix("mlflow-artifacts:/")  # the server proxies to s3://MLFLOW_BUCKET/
    s3 = make_s3_client(s3_env)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=MLFLOW_BUCKET, Prefix=prefix)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    assert keys, location
    s3.delete_objects(Bucket=MLFLOW_BUCKET, Delete={"Objects": [{"Key": key} for key in keys]})

    evaluated = _evaluate(trained_model, tmp_path, mlflow_uri, name)
    comparison = evaluated.comparison
    assert comparison.promote is False and comparison.champion_version == registration.version
    (reason,) = comparison.reasons
    assert reason.startswith("the champion (version 1) cannot be loaded or run (") and "promote by hand" in reason
    assert Comparison.read(tmp_path / "evaluation") == comparison


def test_a_champion_of_other_classes_is_not_replaced_and_the_reason_is_recorded(
    trained_model, mlflow_uri: str, tmp_path: Path
) -> None:
    import mlflow
    import torch
    from mlflow import MlflowClient

    from tlops.models.backbones import build_classifier, load_backbone
    from tlops.serving.model import ServingConfig
    from tlops.serving.package import log_served_model

    name = f"classes-{uuid.uuid4().hex[:6]}"
    torch.manual_seed(0)
    backbone = load_backbone("efficientnet_lite0", image_size=64)
    mlflow.set_tracking_uri(mlflow_uri)
    with mlflow.start_run():
        config = ServingConfig(["cat", "dog"], asdict(backbone.data_config))
        model = build_classifier(backbone, 2)
        info = log_served_model(model, config, {"classes": ["cat", "dog"]}, tensor_model=False).served
    mlflow.register_model(info.model_uri, name)
    client = MlflowClient(mlflow_uri)
    client.set_registered_model_alias(name, CHAMPION, "1")

    evaluated = _evaluate(trained_model, tmp_path, mlflow_uri, name)
    assert not evaluated.comparison.promote
    assert "trained on other classes: not comparable" in evaluated.comparison.reasons[0]
    config = RegistryConfig(tracking_uri=mlflow_uri, experiment="faults", model_name=name)
    summary = register(trained_model["data"], trained_model["model"], tmp_path / "evaluation", config)
    assert summary.version == 2 and summary.aliases == [CHALLENGER]
    assert _aliases(mlflow_uri, name) == {CHAMPION: 1, CHALLENGER: 2}
    tags = client.get_model_version(name, "2").tags
    assert tags["gate.decision"] == "keep" and "other classes" in tags["gate.reasons"]
    assert tags["champion.reason"] == "the gate kept version 1"
