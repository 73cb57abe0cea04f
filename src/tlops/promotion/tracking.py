"""Where MLflow tracking goes, and a fast check that a tracking server answers."""

from __future__ import annotations

from pathlib import Path

from tlops.errors import TlopsError


def local_tracking_uri(output_dir: Path) -> str:
    """The embedded default: an sqlite store under the run's output directory."""
    return f"sqlite:///{(Path(output_dir) / 'mlflow.db').resolve()}"


def resolve_tracking_uri(configured: str | None, output_dir: Path) -> str:
    """The configured tracking URI (``MLFLOW_TRACKING_URI`` or a flag), else the local sqlite store."""
    return configured or local_tracking_uri(output_dir)


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Check that an http(s) tracking server answers its health endpoint; local stores need no check.

    Raises:
        TlopsError: when the server does not answer, naming the URI and what to do.
    """
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
