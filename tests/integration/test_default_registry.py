"""``tlops models`` and ``tlops promote`` without a tracking URI read the store ``tlops run`` wrote without one.

That store is ``tlops-run/mlflow.db`` under the working directory (``tlops run``'s default ``--output``). The
versions here are registered without training: a trivial pyfunc model in a real sqlite store. The README's
demo and its `tlops models` / `tlops promote` run for real in tests/test_readme.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tlops.cli.parser import build_parser
from tlops.promotion.tracking import LOCAL_RUN_OUTPUT, LOCAL_STORE, local_tracking_uri, registry_uri

TIMEOUT_S = 120


def _env() -> dict[str, str]:
    """This environment without any tracking settings a developer may have exported."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def _tlops(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tlops.cli", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_the_store_read_is_the_one_tlops_run_writes_by_default() -> None:
    assert build_parser().parse_args(["run"]).output == Path(LOCAL_RUN_OUTPUT)


def test_a_configured_uri_wins_over_the_local_store(tmp_path: Path) -> None:
    (tmp_path / LOCAL_RUN_OUTPUT).mkdir()
    (tmp_path / LOCAL_RUN_OUTPUT / LOCAL_STORE).touch()
    assert registry_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"
    assert registry_uri(None, tmp_path) == local_tracking_uri(tmp_path / LOCAL_RUN_OUTPUT)


@pytest.mark.parametrize("command", ["models", "promote"])
def test_without_a_uri_or_a_local_store_nothing_is_created(tmp_path: Path, command: str) -> None:
    result = _tlops(command, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "tlops: error: no registry: no tracking URI is set and there is no tlops-run/mlflow.db here (the store "
        "`tlops run` writes without one); set MLFLOW_TRACKING_URI or pass --tracking-uri, or run in the folder "
        "where `tlops run` ran"
    )
    assert list(tmp_path.iterdir()) == []


def test_models_and_promote_read_the_local_run_store(tmp_path: Path) -> None:
    import mlflow
    import mlflow.pyfunc

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: list[str], params=None) -> list[str]:
            return model_input

    store = tmp_path / LOCAL_RUN_OUTPUT
    store.mkdir()
    uri = local_tracking_uri(store)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment("tlops", artifact_location=(store / "mlartifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            logged = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
        for _ in range(2):
            mlflow.register_model(logged.model_uri, "tlops-classifier", tags={"gate.decision": "first"})
        client = mlflow.MlflowClient(uri)
        client.set_registered_model_alias("tlops-classifier", "champion", "1")
        client.set_registered_model_alias("tlops-classifier", "challenger", "2")
    finally:
        mlflow.set_tracking_uri(previous)

    listed = _tlops("models", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[1:]}
    assert rows == {"2": "challenger", "1": "champion"}
    assert f"registry: {uri}" in listed.stderr  # says which store it read
    promoted = _tlops("promote", cwd=tmp_path)
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.strip() == "tlops-classifier: champion is version 2 (was version 1)"
    assert f"registry: {uri}" in promoted.stderr
