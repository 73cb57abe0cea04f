"""Where MLflow tracking goes, and a fast check that a tracking server answers."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from tlops.errors import TlopsError

# Tracking URIs without a scheme that MLflow resolves to something other than a folder.
_NAMED_BACKENDS = ("databricks", "databricks-uc", "uc")


def local_tracking_uri(output_dir: Path) -> str:
    """The embedded default: an sqlite store under the run's output directory."""
    return f"sqlite:///{(Path(output_dir) / 'mlflow.db').resolve()}"


def resolve_tracking_uri(configured: str | None, output_dir: Path) -> str:
    """The configured tracking URI (``MLFLOW_TRACKING_URI`` or a flag), else the local sqlite store.

    Raises:
        TlopsError: when the configured URI is MLflow's filesystem backend (see :func:`check_tracking_uri`).
    """
    uri = configured or local_tracking_uri(output_dir)
    check_tracking_uri(uri)
    return uri


def check_tracking_uri(uri: str) -> None:
    """Refuse MLflow's filesystem backend (``file:///...`` or a plain folder path), before any work is done.

    That backend is in maintenance mode: it takes runs and metrics, then fails when the model is registered,
    after training. A database URI (``sqlite:///...``, ``postgresql://...``) or a server URL works.

    Raises:
        TlopsError: naming the URI and what to use instead.
    """
    scheme = urlparse(uri).scheme.lower()
    is_folder = scheme == "file" or len(scheme) == 1 or (not scheme and uri.strip().lower() not in _NAMED_BACKENDS)
    if is_folder:
        raise TlopsError(
            f"tracking URI {uri!r} is MLflow's filesystem backend, which is in maintenance mode and fails when "
            "the model is registered; use a database such as sqlite:///PATH/mlflow.db, or a server URL "
            "(http://HOST:5000)"
        )


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Check that an http(s) tracking server answers its health endpoint; local stores need no check.

    Raises:
        TlopsError: when the server does not answer, naming the URI and what to do, or the URI is MLflow's
            filesystem backend.
    """
    check_tracking_uri(uri)
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as error:
        reason = type(error).__name__
        raise TlopsError(
            f"MLflow server at {uri} does not answer ({reason}); start it, or unset MLFLOW_TRACKING_URI "
            "to track into a local sqlite store"
        ) from None
    if response.status_code != 200:
        raise TlopsError(
            f"MLflow server at {uri} answered {response.status_code} on /health; check the URI and the server logs"
        )
