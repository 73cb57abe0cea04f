"""Shared pytest fixtures (real SeaweedFS S3 and MLflow services for integration tests) and the lane markers.

If ``TLOPS_TEST_MLFLOW_URI`` and ``TLOPS_TEST_S3_ENDPOINT`` are set (``.ci/run`` started the
services and exported their environment), those are used. Otherwise the ``services`` fixture
starts both once per test session and stops them at the end.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# One BLAS/OpenMP thread per process, unless set: the suite runs processes side by side (CLI runs, kfp.local steps)
# on small machines, and oversubscribed thread pools spin instead of computing. On 2 busy cores the training tests
# took 4.5 minutes with the default pools and 34 s with these (set before anything imports torch or numpy).
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

# The shared helpers (tests/support: services, fake_kfp, fake_kubernetes, loopback) and the README contract's
# helpers (tests/e2e/test_readme.py, imported by tests of other lanes) import by module name, whatever
# pytest's --import-mode is and whichever lane runs.
_TESTS = Path(__file__).resolve().parent
for _helpers in (_TESTS / "support", _TESTS / "e2e"):
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))

from services import Services, make_s3_client, start_services, stop_services  # noqa: E402

# The lane of a test is the folder it is in (tests/README.md): a marker each, so `-m unit` selects the fast lane.
LANES = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its lane, the first folder of its path under tests/."""
    for item in items:
        parts = Path(item.path).resolve().relative_to(_TESTS).parts
        if len(parts) > 1 and parts[0] in LANES:
            item.add_marker(parts[0])


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Running SeaweedFS S3 gateway and MLflow server (from the environment, or started here)."""
    from_env = Services.from_env()
    if from_env is not None:
        yield from_env
        return
    workdir = tmp_path_factory.mktemp("services")
    started = start_services(workdir)
    try:
        yield started
    finally:
        stop_services(workdir)


@pytest.fixture
def s3_env(services: Services, monkeypatch: pytest.MonkeyPatch) -> Services:
    """Point AWS SDKs (``AWS_ENDPOINT_URL``, credentials, region) at the test S3 for one test."""
    for key, value in services.env().items():
        monkeypatch.setenv(key, value)
    return services


@pytest.fixture
def s3_client(services: Services) -> Any:
    """A boto3 S3 client for the test S3 gateway."""
    return make_s3_client(services)


@pytest.fixture
def bucket(s3_client: Any) -> Iterator[str]:
    """A fresh, uniquely named bucket (``t-<uuid8>``), emptied and deleted after the test."""
    from botocore.exceptions import ClientError

    name = f"t-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    try:
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                s3_client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        s3_client.delete_bucket(Bucket=name)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "NoSuchBucket":
            raise


@pytest.fixture
def mlflow_uri(services: Services) -> str:
    """URI of the MLflow tracking server (artifacts proxied to the ``mlflow-artifacts`` bucket)."""
    return services.mlflow_uri


@pytest.fixture(scope="session")
def small_imagefolder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 10-class ImageFolder: 9 scikit-learn digits per class, written as PNG files."""
    from tlops.data.demo import write_digits_imagefolder

    return write_digits_imagefolder(tmp_path_factory.mktemp("digits"), per_class=9)


@pytest.fixture(scope="session")
def trained_model(small_imagefolder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Step outputs of a real run on the small ImageFolder: data, features, probe, model, evaluation."""
    from tlops.data.prepare import prepare_data
    from tlops.steps.evaluate import evaluate
    from tlops.steps.extract_features import extract_and_probe
    from tlops.steps.fine_tune import fine_tune
    from tlops.steps.runtime import Runtime
    from tlops.train.finetune import TrainConfig

    root = tmp_path_factory.mktemp("trained")
    runtime = Runtime(cache_dir=root / "cache")
    dirs = {name: root / name for name in ("data", "features", "probe", "model", "evaluation")}
    prepare_data(str(small_imagefolder), dirs["data"])
    extract_and_probe(dirs["data"], "efficientnet_lite0", dirs["features"], dirs["probe"], runtime, image_size=64)
    fine_tune(dirs["data"], dirs["probe"], dirs["model"], TrainConfig(strategy="full", epochs=1), runtime)
    # The gate looks in a local registry that does not exist: no champion, nothing created.
    evaluate(dirs["data"], dirs["model"], dirs["evaluation"], runtime, tracking_uri=f"sqlite:///{root}/mlflow.db")
    return dirs


@pytest.fixture(scope="session")
def minilm() -> Any:
    """The bundled all-MiniLM-L6-v2 text encoder, loaded once per session (importing transformers takes seconds)."""
    from tlops.models.text_encoders import load_text_encoder

    return load_text_encoder("minilm")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A CPU step runtime with a feature cache of its own, one for each module (batches of 32)."""
    from tlops.steps.runtime import Runtime

    return Runtime(cache_dir=tmp_path_factory.mktemp("cache"), batch_size=32)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite store for the module (creating one takes seconds); each test uses an experiment of its own."""
    return f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}"


@pytest.fixture
def client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` of the module's sqlite store (a module may define a ``client`` of another store)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


@pytest.fixture
def experiment() -> str:
    """A fresh experiment name, ``tlops-<uuid8>``."""
    return f"tlops-{uuid.uuid4().hex[:8]}"
