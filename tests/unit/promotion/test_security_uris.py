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

import pytest


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://u:hunter2-pw@mlflow:5000", "http://u:***@mlflow:5000"),
        ("https://u:hunter2-pw@mlflow.example/path", "https://u:***@mlflow.example/path"),
        ("postgresql+psycopg2://u:hunter2-pw@db:5432/mlflow", "postgresql+psycopg2://u:***@db:5432/mlflow"),
    ],
)
def test_a_password_in_a_tracking_uri_is_refused_without_showing_it(uri: str, shown: str) -> None:
    from tlops.errors import TlopsError
    from tlops.promotion.tracking import check_tracking_server, check_tracking_uri, redact_uri

    assert redact_uri(uri) == shown
    for check in (check_tracking_uri, check_tracking_server):  # the server check refuses it before any request
        with pytest.raises(TlopsError, match="carries a password") as refused:
            check(uri)
        assert "hunter2" not in str(refused.value) and shown in str(refused.value)
    for fine in ("http://mlflow:5000", "postgresql://u@db/mlflow", "databricks://scope:prefix", "sqlite:///m.db"):
        assert redact_uri(fine) == fine
        check_tracking_uri(fine)
