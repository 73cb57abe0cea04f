"""Credentials for the security tests: the MLflow user, the variables that carry a password, random secrets."""

from __future__ import annotations

import secrets

USER = "tlops-ci"
CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def secret(prefix: str) -> str:
    """A distinctive random value (nothing else in a run could contain it by chance)."""
    return f"{prefix}-{secrets.token_hex(16)}"
