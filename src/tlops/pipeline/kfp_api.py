"""A connection to a Kubeflow Pipelines API server through ``kfp.Client``, with its failures as one-line errors.

kfp prints links on stdout and warns on stderr; the calls made through :func:`calling` are quiet, and an HTTP error
becomes a :class:`TlopsError` naming the host, the status and how the request was authenticated (never the token).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tlops.errors import TlopsError
from tlops.pipeline.kfp_auth import Token, describe

HEALTHZ = "/apis/v2beta1/healthz"
PORT_FORWARD = "`kubectl port-forward svc/ml-pipeline-ui 8080:80 -n kubeflow`"
_SERVER_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class Connection:
    """A ``kfp.Client`` and what messages say about it."""

    host: str
    client: Any
    token: Token | None
    namespace: str | None


def unreachable(host: str, error: BaseException) -> TlopsError:
    """The error for a host that does not answer."""
    return TlopsError(
        f"Kubeflow Pipelines at {host} does not answer ({type(error).__name__}); check --host "
        f"(e.g. http://localhost:8080 with {PORT_FORWARD})"
    )


def _server_message(body: Any, token: Token | None) -> str:
    """The message of an error answer (grpc-gateway JSON or text), on one line, without the token."""
    import json

    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        text = str(answer.get("message") or answer.get("error") or "")
    text = " ".join(text.split())
    if token:
        text = token.scrub(text)
    return text if len(text) <= _SERVER_MESSAGE_CHARS else text[: _SERVER_MESSAGE_CHARS - 3] + "..."


def refused(host: str, status: int, reason: str, token: Token | None, body: Any = None) -> TlopsError:
    """The error for a 401 or 403 answer: host, status, where the token came from and what to do."""
    if status == 401 and token is None:
        advice = "this deployment needs a bearer token: pass --token-file PATH or set KFP_TOKEN"
    elif status == 401:
        advice = "the token is not valid here (expired, or for another cluster): get a fresh one"
    else:
        advice = (
            "the token's identity may not do this: use a token of a service account in your Kubeflow profile "
            "and pass its namespace with --namespace"
        )
    message = _server_message(body, token)
    server = f" (the server says: {message})" if message else ""
    return TlopsError(
        f"Kubeflow Pipelines at {host} refused the request ({status} {reason}) {describe(token)}: {advice}{server}"
    )


def check_host(host: str) -> str:
    """The ``--host`` URL without a trailing slash, refused unless it is an http(s) URL with a host name.

    ``localhost:8080`` reads as a URL of scheme ``localhost`` to ``requests``, which answers ``InvalidSchema``;
    the missing ``http://`` is named here, before anything is sent.

    Raises:
        TlopsError: naming the host and the URL to write instead.
    """
    from urllib.parse import urlsplit

    text = host.strip().rstrip("/")
    if not text:
        raise TlopsError(
            f"--host is empty; pass the Kubeflow Pipelines API URL, e.g. http://localhost:8080 with {PORT_FORWARD}"
        )
    if "://" not in text:
        raise TlopsError(f"--host {host!r} has no scheme: write http://{text} (or https://{text} for a TLS endpoint)")
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        rest = text.split("://", 1)[1]
        raise TlopsError(f"--host {host!r} is not an http(s) URL: write http://{rest} (or https://{rest})")
    if not parts.hostname:
        raise TlopsError(f"--host {host!r} names no host: write it as http://HOST:PORT, e.g. http://localhost:8080")
    return text


def _check_health(host: str, token: Token | None) -> None:
    """Ask the health endpoint, with the token, so that a wrong host or token fails at once, in one line."""
    import requests

    headers = {"Authorization": f"Bearer {token.value}"} if token else {}
    try:
        response = requests.get(host + HEALTHZ, headers=headers, timeout=10, allow_redirects=False)
    except requests.RequestException as error:
        raise unreachable(host, error) from None
    status = response.status_code
    if status in (401, 403):
        raise refused(host, status, response.reason, token, response.content)
    if 300 <= status < 400:
        raise TlopsError(
            f"Kubeflow Pipelines at {host} redirects to {response.headers.get('Location', '?')} (a login page?): "
            f"point --host at the API itself (e.g. http://localhost:8080 with {PORT_FORWARD}) and pass a token"
        )
    try:
        response.json()
    except ValueError:
        ok = False
    else:
        ok = status == 200
    if not ok:
        raise TlopsError(
            f"{host} does not answer like the Kubeflow Pipelines API (HTTP {status} from {HEALTHZ}): check --host "
            f"(e.g. http://localhost:8080 with {PORT_FORWARD})"
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the links kfp prints and its warnings off stdout and stderr."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def calling(connection: Connection, action: str) -> Iterator[None]:
    """Run ``kfp.Client`` calls quietly; raise their HTTP and connection failures as a :class:`TlopsError`.

    Args:
        connection: The connection the calls use.
        action: What the calls do, for the message (``"uploading the pipeline"``).
    """
    import kfp_server_api
    import urllib3

    host, token = connection.host, connection.token
    try:
        with _quiet():
            yield
    except kfp_server_api.ApiException as error:
        if error.status in (401, 403):
            raise refused(host, error.status, error.reason, token, error.body) from None
        if not error.status:  # kfp_server_api wraps some connection failures without a status
            raise unreachable(host, error) from None
        message = _server_message(error.body, token)
        raise TlopsError(
            f"Kubeflow Pipelines at {host} answered {error.status} {error.reason} when {action}"
            + (f": {message}" if message else "")
        ) from None
    except urllib3.exceptions.HTTPError as error:
        raise unreachable(host, error) from None


def connect(host: str, token: Token | None, namespace: str | None = None) -> Connection:
    """A ``kfp.Client`` for ``host`` after a health check, sending ``token`` as ``Authorization: Bearer``.

    Args:
        host: The API's URL, e.g. ``http://localhost:8080``.
        token: The bearer token (multi-user Kubeflow), or ``None``.
        namespace: The Kubeflow profile's namespace the experiments and recurring runs live in (multi-user).

    Raises:
        TlopsError: when the host is no http(s) URL, does not answer, or refuses the token.
    """
    import kfp

    host = check_host(host)
    _check_health(host, token)
    connection = Connection(host, None, token, namespace or None)
    with calling(connection, "connecting"):
        client = kfp.Client(host=host, existing_token=token.value if token else None, namespace=namespace or "kubeflow")
    return Connection(host, client, token, namespace or None)
