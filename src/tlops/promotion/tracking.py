"""Where MLflow tracking goes, and a fast check that a tracking server answers."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from tlops.errors import TlopsError

# Tracking URIs without a scheme that MLflow resolves to something other than a folder.
_NAMED_BACKENDS = ("databricks", "databricks-uc", "uc")
# The variables MLflow's client authenticates to a tracking server with (basic auth, else a bearer token).
USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"
# Where `tlops run` writes by default (its --output) and the sqlite store it tracks into there without a URI.
LOCAL_RUN_OUTPUT = "tlops-run"
LOCAL_STORE = "mlflow.db"
# Where a user gives the tracking URI: the flag, or the variable that is its default.
URI_FLAG = "--tracking-uri"
URI_ENV = "MLFLOW_TRACKING_URI"


def local_tracking_uri(output_dir: Path) -> str:
    """The embedded default: an sqlite store under the run's output directory."""
    return f"sqlite:///{(Path(output_dir) / LOCAL_STORE).resolve()}"


def run_store_uri(cwd: Path) -> str | None:
    """The sqlite store a ``tlops run`` without a tracking URI wrote in ``cwd`` (``None`` when there is none).

    That run tracks into ``OUTPUT/mlflow.db`` with ``OUTPUT`` ``tlops-run`` by default; ``tlops models`` and
    ``tlops promote`` read the same store when no tracking URI is given.
    """
    store = Path(cwd) / LOCAL_RUN_OUTPUT / LOCAL_STORE
    return local_tracking_uri(store.parent) if store.is_file() else None


def registry_uri(configured: str | None, cwd: Path) -> str:
    """The registry ``tlops models`` and ``tlops promote`` read: the configured URI, else the demo's local store.

    Raises:
        TlopsError: when nothing is configured and ``cwd`` holds no ``tlops-run/mlflow.db`` (nothing is created),
            or the configured URI is refused by :func:`check_tracking_uri`.
    """
    uri = configured or run_store_uri(cwd)
    if uri is None:
        raise TlopsError(
            f"no registry: no tracking URI is set and there is no {LOCAL_RUN_OUTPUT}/{LOCAL_STORE} here (the store "
            "`tlops run` writes without one); set MLFLOW_TRACKING_URI or pass --tracking-uri, or run in the folder "
            "where `tlops run` ran"
        )
    check_tracking_uri(uri)
    return uri


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
        TlopsError: naming the URI and what to use instead; also for a URI that carries a password
            (see :func:`check_no_password`).
    """
    check_no_password(uri)
    scheme = urlparse(uri).scheme.lower()
    is_folder = scheme == "file" or len(scheme) == 1 or (not scheme and uri.strip().lower() not in _NAMED_BACKENDS)
    if is_folder:
        raise TlopsError(
            f"tracking URI {uri!r} is MLflow's filesystem backend, which is in maintenance mode and fails when "
            "the model is registered; use a database such as sqlite:///PATH/mlflow.db, or a server URL "
            "(http://HOST:5000)"
        )


def redact_uri(uri: str) -> str:
    """``uri`` with the password of its user part, if any, replaced by ``***`` (for messages)."""
    parts = urlparse(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def check_no_password(uri: str) -> None:
    """Refuse a tracking URI with a password in it (``http://user:password@host``, ``postgresql://u:p@h/db``).

    The URI is a pipeline parameter: Kubeflow Pipelines and kfp.local keep it in plain text with the run, and
    tlops prints it and writes it into the run's summary.

    Raises:
        TlopsError: naming the URI with the password masked, and where credentials go instead.
    """
    if urlparse(uri).password is None:
        return
    raise TlopsError(
        f"tracking URI {redact_uri(uri)!r} carries a password, which would be kept in plain text with the run; "
        f"remove it from the URI and set {USERNAME_ENV} and {PASSWORD_ENV} (a server) or the database driver's "
        "own setting, e.g. PGPASSWORD (a database)"
    )


def tracking_uri_source(uri: str, environ: Mapping[str, str]) -> str:
    """Where the user gave a tracking URI: :data:`URI_ENV` when it is that variable's value, else :data:`URI_FLAG`.

    The CLI takes ``--tracking-uri`` with ``$MLFLOW_TRACKING_URI`` as its default, so a URI other than the
    variable's came from the flag.
    """
    return URI_ENV if environ.get(URI_ENV) == uri else URI_FLAG


def _unreachable_advice(source: str, local_store: bool, environ: Mapping[str, str]) -> str:
    """What to do about a server that does not answer, for where the URI came from and what the command needs."""
    if not local_store:  # models, promote: the registry is on that server, there is no local one to fall back to
        if source == URI_ENV:
            return f"start it, or set {URI_ENV} (or pass {URI_FLAG}) to the server that holds the registry"
        return f"start it, or pass {URI_FLAG} the server that holds the registry"
    fallback = "to track into a local sqlite store"
    if source == URI_ENV:
        return f"start it, or unset {URI_ENV} {fallback}"
    if environ.get(URI_ENV):
        return f"start it, or leave out {URI_FLAG} and unset {URI_ENV} {fallback}"
    return f"start it, or leave out {URI_FLAG} {fallback}"


def check_tracking_server(
    uri: str,
    timeout: float = 5.0,
    environ: Mapping[str, str] | None = None,
    *,
    source: str | None = None,
    local_store: bool = True,
) -> None:
    """Check that an http(s) tracking server answers and takes the credentials MLflow will send; local stores pass.

    The credentials are the ones MLflow's client reads: ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD`` (basic auth), else ``MLFLOW_TRACKING_TOKEN``. They are checked with one read
    (search one experiment), so that wrong or missing credentials fail before any step runs.

    Args:
        uri: The tracking URI.
        timeout: Seconds to wait for each answer.
        environ: Where the credentials are read; ``os.environ`` when ``None``.
        source: Where the user gave the URI, :data:`URI_FLAG` or :data:`URI_ENV`, for the advice on a server
            that does not answer; ``None`` infers it (see :func:`tracking_uri_source`).
        local_store: Whether the command tracks into a local sqlite store without a URI (``run`` and the steps
            do; ``models`` and ``promote`` read a registry that only the URI names).

    Raises:
        TlopsError: when the server does not answer or refuses the credentials, naming the URI and what to do,
            or the URI is MLflow's filesystem backend or carries a password.
    """
    check_tracking_uri(uri)
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    environ = os.environ if environ is None else environ
    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as error:
        advice = _unreachable_advice(source or tracking_uri_source(uri, environ), local_store, environ)
        raise TlopsError(f"MLflow server at {uri} does not answer ({type(error).__name__}); {advice}") from None
    if response.status_code != 200:
        raise TlopsError(
            f"MLflow server at {uri} answered {response.status_code} on /health; check the URI and the server logs"
        )
    _check_credentials(uri, timeout, environ)


def _check_credentials(uri: str, timeout: float, environ: Mapping[str, str]) -> None:
    """Search one experiment with MLflow's credentials; refuse a 401 or 403 in one line, naming the variables."""
    import requests

    username, password, token = (environ.get(name) for name in (USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV))
    variables = f"{USERNAME_ENV} and {PASSWORD_ENV}"
    if username and password:
        sent, kwargs = f"user {username!r}", {"auth": (username, password)}
    elif token:
        sent, kwargs = f"the token in {TOKEN_ENV}", {"headers": {"Authorization": f"Bearer {token}"}}
    else:
        sent, kwargs = "", {}
    try:
        response = requests.get(
            uri.rstrip("/") + "/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            timeout=timeout,
            **kwargs,
        )
    except requests.RequestException as error:
        raise TlopsError(f"MLflow server at {uri} does not answer ({type(error).__name__})") from None
    status = response.status_code
    if status not in (401, 403):
        return
    if not sent:
        raise TlopsError(f"MLflow server at {uri} asks for credentials ({status}): set {variables} to a user of it")
    if status == 401:
        raise TlopsError(f"MLflow server at {uri} refused {sent} (401): check {variables}")
    raise TlopsError(f"MLflow server at {uri} lets {sent} read no experiments (403): grant access or check {variables}")
