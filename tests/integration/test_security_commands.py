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
The last two tests need no services (not marked): ``tlops submit`` and the URI checks refuse a password in a
tracking URI without printing it.
"""

from __future__ import annotations

from pathlib import Path

from commands import CLI_TIMEOUT_S as SHORT_TIMEOUT_S
from commands import tlops_script as _tlops
from credentials import CREDENTIAL_VARIABLES, USER
from credentials import secret as _secret
from refusals import only_error_line as _one_error_line


def test_submit_refuses_a_password_in_the_tracking_uri(tmp_path: Path) -> None:
    """`tlops submit` would hand the URI to Kubeflow Pipelines as a run parameter, kept in plain text."""
    password = _secret("pw")
    uri = f"http://{USER}:{password}@mlflow.mlflow:5000"
    arguments = ["submit", "--host", "http://127.0.0.1:9", "--data", "s3://b/d", "--tracking-uri", uri]
    result = _tlops(arguments, tmp_path, {}, SHORT_TIMEOUT_S)
    line = _one_error_line(result, "carries a password", f"http://{USER}:***@mlflow.mlflow:5000", *CREDENTIAL_VARIABLES)
    assert password not in result.stderr, line
