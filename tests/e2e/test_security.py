"""No secret anywhere a run leaves a trace, tracked on an MLflow server that asks for a password.

This module starts its own ``mlflow server --app-name basic-auth`` (sqlite stores in a temporary folder, artifacts
proxied to a bucket on the suite's SeaweedFS), adds a non-admin user with a random password, uploads a small
labelled ImageFolder to S3 and runs ``tlops run`` once as that user. The run must register a version, and neither
the S3 secret key nor an MLflow password (nor the basic-auth header made of one) may appear in what it printed,
in any file under ``--output``, in the compiled pipeline YAMLs, or in anything MLflow keeps of the run and the
model version: params, tags, metric names, every artifact, the registered model's tags and descriptions.

Wrong, missing or URI-embedded credentials must fail ``tlops run`` before any step, in one line that names
``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``, with nothing registered.

The S3 secret is the suite's (SeaweedFS keeps its identities read-only), the MLflow passwords are random.
A password in a tracking URI, refused without a server, is tested in tests/integration/test_security_commands.py
(``tlops submit``) and tests/unit/promotion/test_security_uris.py (the URI checks).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from commands import CLI_TIMEOUT_S as SHORT_TIMEOUT_S
from commands import tlops_script as _tlops
from credentials import CREDENTIAL_VARIABLES, USER
from credentials import secret as _secret
from refusals import only_error_line as _one_error_line
from repository import REPO
from services import Services, make_s3_client
from test_readme import _shape, base_env, succeeded

HOST = "127.0.0.1"
ADMIN = "admin"
MODEL = "tlops-classifier"  # tlops's default; the server is this module's own
CLASSES = ("circle", "square", "triangle")
PER_CLASS = 8
READY_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 900
HTTP = requests.Session()
HTTP.trust_env = False  # loopback: no proxy


@dataclass(frozen=True)
class AuthServer:
    """An MLflow server with basic auth: its URL, the bucket behind its artifacts, and its two users."""

    uri: str
    bucket: str
    admin_password: str
    password: str  # USER's, a non-admin

    def credentials(self, username: str = USER, password: str | None = None) -> dict[str, str]:
        """``MLFLOW_TRACKING_*`` variables for ``username`` (``password``: another than the real one)."""
        real = self.admin_password if username == ADMIN else self.password
        return {
            "MLFLOW_TRACKING_URI": self.uri,
            "MLFLOW_TRACKING_USERNAME": username,
            "MLFLOW_TRACKING_PASSWORD": real if password is None else password,
        }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _s3_env(services: Services) -> dict[str, str]:
    return {key: value for key, value in services.env().items() if key.startswith("AWS_")}


def _empty_bucket(client: Any, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


def _wait_until_ready(uri: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        assert process.poll() is None, f"the basic-auth MLflow server exited:\n{log.read_text()[-3000:]}"
        with contextlib.suppress(requests.RequestException):
            if HTTP.get(f"{uri}/health", timeout=5).status_code == 200:
                return
        assert time.monotonic() < deadline, (
            f"no answer from {uri} in {READY_TIMEOUT_S:.0f}s:\n{log.read_text()[-3000:]}"
        )
        time.sleep(0.5)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's process group (uvicorn and its worker), the way it was started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def auth_server(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """``mlflow server --app-name basic-auth`` on a free loopback port, with an admin and a non-admin user."""
    workdir = tmp_path_factory.mktemp("auth-mlflow")
    bucket = f"sec-{secrets.token_hex(4)}"
    s3 = make_s3_client(services)
    s3.create_bucket(Bucket=bucket)
    server = AuthServer(
        uri=f"http://{HOST}:{_free_port()}", bucket=bucket, admin_password=_secret("adm"), password=_secret("pw")
    )
    config = workdir / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{workdir / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN}\n"
        f"admin_password = {server.admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Each request otherwise re-hashes the password (PBKDF2): downloading ~130 artifacts took a minute more.
        "auth_cache_ttl_seconds = 600\n"
    )
    environment = {k: v for k, v in base_env().items() if not k.startswith(("AWS_", "MLFLOW_"))} | _s3_env(services)
    environment |= {
        "MLFLOW_S3_ENDPOINT_URL": services.s3_endpoint,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": _secret("flask"),  # the auth app's CSRF protection wants one
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    command = [
        sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{bucket}/mlflow",
        "--host", HOST, "--port", server.uri.rsplit(":", 1)[1], "--workers", "1",
    ]  # fmt: skip
    log = workdir / "mlflow.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=workdir, env=environment, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_until_ready(server.uri, process, log)
        created = HTTP.post(
            f"{server.uri}/api/2.0/mlflow/users/create",
            json={"username": USER, "password": server.password},
            auth=(ADMIN, server.admin_password),
            timeout=30,
        )
        assert created.status_code == 200, created.text
        yield server
    finally:
        _stop(process)
        _empty_bucket(s3, bucket)


def _png(kind: str, rng: np.random.Generator) -> bytes:
    """A 40-pixel shape image of ``kind`` (the README tests' generator), as PNG bytes."""
    buffer = io.BytesIO()
    _shape(kind, rng, size=40).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def dataset(services: Services, auth_server: AuthServer) -> str:
    """``s3://BUCKET/images``: 3 classes x 8 PNG files, labelled by folder."""
    s3 = make_s3_client(services)
    rng = np.random.default_rng(7)
    for kind in CLASSES:
        for index in range(PER_CLASS):
            s3.put_object(Bucket=auth_server.bucket, Key=f"images/{kind}/{kind}-{index}.png", Body=_png(kind, rng))
    return f"s3://{auth_server.bucket}/images"


def _run_arguments(data: str, output: Path) -> list[str]:
    return [
        "run", "--data", data, "--image-size", "32", "--strategy", "linear-probe",
        "--backbones", "efficientnet_lite0", "--output", str(output),
    ]  # fmt: skip


@dataclass(frozen=True)
class SecuredRun:
    """The one ``tlops run`` of this module: its result, output folder, wall time and the secrets to look for."""

    result: subprocess.CompletedProcess
    output: Path
    seconds: float
    needles: dict[str, bytes]


@pytest.fixture(scope="module")
def secured_run(
    services: Services, auth_server: AuthServer, dataset: str, tmp_path_factory: pytest.TempPathFactory
) -> SecuredRun:
    cwd = tmp_path_factory.mktemp("secured-run")
    output = cwd / "out"
    environment = _s3_env(services) | auth_server.credentials()
    start = time.perf_counter()
    result = _tlops(_run_arguments(dataset, output), cwd, environment, RUN_TIMEOUT_S)
    seconds = time.perf_counter() - start
    print(f"\nsecured `tlops run` took {seconds:.1f}s")
    basic = base64.b64encode(f"{USER}:{auth_server.password}".encode())
    needles = {
        "S3 secret key": services.secret_key.encode(),
        "MLflow password": auth_server.password.encode(),
        "MLflow admin password": auth_server.admin_password.encode(),
        "basic-auth header": basic,
    }
    return SecuredRun(result, output, seconds, needles)


def _leaks(data: bytes, needles: dict[str, bytes]) -> list[str]:
    return [name for name, needle in needles.items() if needle in data]


def _scan_tree(root: Path, needles: dict[str, bytes]) -> tuple[int, list[str]]:
    """How many files under ``root`` were read, and ``path: secret`` for each one holding a secret."""
    files = [path for path in root.rglob("*") if path.is_file() and not path.is_symlink()]
    found = [f"{path.relative_to(root)}: {name}" for path in files for name in _leaks(path.read_bytes(), needles)]
    return len(files), found


@pytest.mark.integration
@pytest.mark.pipeline
def test_run_as_a_non_admin_user_registers_on_the_auth_server(secured_run: SecuredRun, auth_server: AuthServer) -> None:
    succeeded(secured_run.result)
    assert secured_run.seconds < RUN_TIMEOUT_S
    summary = (secured_run.output / "run_summary.json").read_text()
    versions = HTTP.get(
        f"{auth_server.uri}/api/2.0/mlflow/model-versions/search",
        params={"filter": f"name='{MODEL}'"},
        auth=(ADMIN, auth_server.admin_password),
        timeout=30,
    )
    assert versions.status_code == 200, versions.text
    (version,) = versions.json()["model_versions"]
    assert version["version"] == "1" and version["run_id"] in summary
    assert version.get("user_id") in (None, "", USER)


@pytest.mark.integration
@pytest.mark.pipeline
def test_no_secret_in_what_the_run_printed_or_wrote(secured_run: SecuredRun) -> None:
    succeeded(secured_run.result)
    printed = (secured_run.result.stdout + secured_run.result.stderr).encode()
    assert not _leaks(printed, secured_run.needles)
    count, found = _scan_tree(secured_run.output, secured_run.needles)
    names = {path.name for path in secured_run.output.rglob("*")}
    # The scan covered the summaries, the kept runs and kfp.local's pipeline root (step outputs and logs).
    assert {"run_summary.json", "runs", "pipeline_root"} <= names and count > 10, sorted(names)
    assert not found, found


@pytest.mark.integration
@pytest.mark.pipeline
def test_no_secret_in_the_compiled_pipeline(secured_run: SecuredRun, tmp_path: Path) -> None:
    checked_in = [path for folder in ("pipelines", "components") for path in (REPO / folder).glob("*.yaml")]
    succeeded(_tlops(["compile", "--root", str(tmp_path)], tmp_path, {}, SHORT_TIMEOUT_S))
    fresh = list(tmp_path.rglob("*.yaml"))
    assert checked_in and len(fresh) == len(checked_in)
    found = [
        f"{path}: {name}" for path in checked_in + fresh for name in _leaks(path.read_bytes(), secured_run.needles)
    ]
    assert not found, found
    # The pipeline takes its credentials from a Kubernetes Secret, by name: the variables, never their values.
    pipeline = (tmp_path / "pipelines" / "transfer_learning.yaml").read_text()
    assert all(variable in pipeline for variable in (*CREDENTIAL_VARIABLES, "AWS_SECRET_ACCESS_KEY"))


@pytest.fixture
def admin_client(auth_server: AuthServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlflow import MlflowClient

    for key, value in auth_server.credentials(ADMIN).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return MlflowClient(auth_server.uri)


@pytest.mark.integration
@pytest.mark.pipeline
def test_no_secret_in_what_mlflow_keeps(
    secured_run: SecuredRun, auth_server: AuthServer, admin_client: Any, tmp_path: Path
) -> None:
    import mlflow

    succeeded(secured_run.result)
    (version,) = admin_client.search_model_versions(f"name='{MODEL}'")
    model = admin_client.get_registered_model(MODEL)
    run = admin_client.get_run(version.run_id)
    assert run.info.user_id == USER
    kept = {
        "params": repr(sorted(run.data.params.items())),
        "run tags": repr(sorted(run.data.tags.items())),
        "metric names": repr(sorted(run.data.metrics)),
        "model tags and description": repr((sorted(model.tags.items()), model.description)),
        "version tags and description": repr((sorted(version.tags.items()), version.description, version.source)),
        "model version": repr(version),
    }
    found = [f"{where}: {name}" for where, text in kept.items() for name in _leaks(text.encode(), secured_run.needles)]
    assert run.data.params and run.data.metrics and not found, found

    download = mlflow.artifacts.download_artifacts
    run_files = Path(download(run_id=run.info.run_id, dst_path=str(tmp_path / "run"), tracking_uri=auth_server.uri))
    # The version's own location, not models:/...: that would resolve through the process's registry URI, which
    # other test modules in this worker may have pointed elsewhere.
    model_uri = admin_client.get_model_version_download_uri(MODEL, version.version)
    model_files = Path(download(model_uri, dst_path=str(tmp_path / "model"), tracking_uri=auth_server.uri))
    for root in (run_files, model_files):
        count, found = _scan_tree(root, secured_run.needles)
        assert count > 0 and not found, (root, found)
    assert (model_files / "MLmodel").is_file()


def _versions(auth_server: AuthServer) -> int:
    response = HTTP.get(
        f"{auth_server.uri}/api/2.0/mlflow/model-versions/search",
        auth=(ADMIN, auth_server.admin_password),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return len(response.json().get("model_versions", []))


@pytest.mark.integration
@pytest.mark.pipeline
@pytest.mark.parametrize("case", ["wrong password", "no credentials", "password in the URI"])
def test_bad_credentials_fail_before_any_step(
    case: str, secured_run: SecuredRun, services: Services, auth_server: AuthServer, dataset: str, tmp_path: Path
) -> None:
    """Runs after the secured run, so that "nothing registered" means: no version beyond its one."""
    before = _versions(auth_server)
    wrong = _secret("wrong")
    if case == "wrong password":
        credentials = auth_server.credentials(password=wrong)
    elif case == "no credentials":
        credentials = {"MLFLOW_TRACKING_URI": auth_server.uri}
    else:  # MLflow's client would send the user part of the URL; tlops refuses to carry it around
        credentials = {"MLFLOW_TRACKING_URI": auth_server.uri.replace("://", f"://{USER}:{auth_server.password}@")}
    output = tmp_path / "out"
    result = _tlops(_run_arguments(dataset, output), tmp_path, _s3_env(services) | credentials, SHORT_TIMEOUT_S)
    line = _one_error_line(result, *CREDENTIAL_VARIABLES)
    assert not _leaks((result.stdout + result.stderr).encode(), secured_run.needles | {"wrong": wrong.encode()})
    assert ("carries a password" in line) == (case == "password in the URI"), line
    assert ("refused user 'tlops-ci' (401)" in line) == (case == "wrong password"), line
    assert ("asks for credentials (401)" in line) == (case == "no credentials"), line
    assert not output.exists()  # failed before any step: not even --output was created
    assert _versions(auth_server) == before
