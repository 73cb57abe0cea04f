"""A password in a tracking URI is refused by the URI and server checks without being shown (``redact_uri`` masks it);
URIs without one pass unchanged.
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
