"""``tlops submit`` refuses a tracking URI that carries a password, in one line naming the credential variables and
without printing the password (no server needed: the check comes before any request).
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
