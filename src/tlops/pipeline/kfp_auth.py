"""The bearer token sent to Kubeflow Pipelines, and where it came from (never the token itself in a message)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tlops.errors import TlopsError

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
TOKEN_ENV = "KFP_TOKEN"


@dataclass(frozen=True)
class Token:
    """A bearer token and a description of its source for messages (``--token-file /x/y``, ``KFP_TOKEN``)."""

    value: str = field(repr=False)
    source: str

    def scrub(self, text: str) -> str:
        """``text`` with the token replaced by ``***`` (for server answers quoted in a message)."""
        return text.replace(self.value, "***") if self.value else text


def _read_token(path: Path, source: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as error:
        raise TlopsError(
            f"cannot read the token from {source} ({error.strerror or error}): give a readable file"
        ) from None
    if not value:
        raise TlopsError(f"{source} is empty: the file must hold the bearer token")
    return value


def find_token(
    token_file: Path | None, env_token: str | None, service_account_token: Path = SERVICE_ACCOUNT_TOKEN
) -> Token | None:
    """The token to send: from ``--token-file``, else ``KFP_TOKEN``, else the pod's service-account token.

    Args:
        token_file: The ``--token-file`` path, if given.
        env_token: The value of ``KFP_TOKEN`` (the caller reads the environment).
        service_account_token: The in-cluster token file, used when it exists.

    Returns:
        The token, or ``None`` when there is none (a single-user deployment needs none).

    Raises:
        TlopsError: when ``--token-file`` cannot be read or is empty.
    """
    if token_file is not None:
        source = f"--token-file {token_file}"
        return Token(_read_token(token_file, source), source)
    if env_token and env_token.strip():
        return Token(env_token.strip(), TOKEN_ENV)
    if service_account_token.is_file():
        source = f"the service-account token {service_account_token}"
        return Token(_read_token(service_account_token, source), source)
    return None


def describe(token: Token | None) -> str:
    """How a request was sent, for messages: ``with the token from KFP_TOKEN`` or ``without a token``."""
    return f"with the token from {token.source}" if token else "without a token"
