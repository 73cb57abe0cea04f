"""What a local stack is: its folder, ports and credentials, the files it keeps, and the environment it exports."""

from __future__ import annotations

import json
import os
import secrets
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from tlops.errors import TlopsError

HOST = "127.0.0.1"
REGION = "us-east-1"
BUCKET = "mlflow-artifacts"
DEFAULT_DIR = Path(".tlops-stack")
DEFAULT_S3_PORT = 8333
DEFAULT_MLFLOW_PORT = 5000
ACCESS_KEY = "tlops"
GRPC_OFFSET = 10000  # SeaweedFS's own convention: a service's gRPC port is its HTTP port + 10000
MAX_S3_PORT = 65535 - GRPC_OFFSET - 3

# The files a stack keeps in its folder.
PIDS_FILE = "pids"
STATE_FILE = "stack.json"
CREDENTIALS_FILE = "credentials.json"
S3_CONFIG_FILE = "s3.json"
ENV_FILE = "env.sh"
LOCK_FILE = ".lock"
WEED_LOG = "weed.log"
MLFLOW_LOG = "mlflow.log"
WEED_DATA = "weed-data"
MLFLOW_DB = "mlflow.db"


@dataclass(frozen=True)
class Ports:
    """Every TCP port a stack listens on (all on :data:`HOST`)."""

    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    mlflow: int

    @classmethod
    def derived(cls, s3: int = DEFAULT_S3_PORT, mlflow: int = DEFAULT_MLFLOW_PORT) -> Ports:
        """The ports of ``tlops stack up``: SeaweedFS's internal ones follow from the S3 port.

        The master, volume and filer servers take the three ports above ``s3``; each gRPC port is its HTTP port
        plus 10000, as SeaweedFS does by default.

        Raises:
            TlopsError: a port is out of range, or the MLflow port is one SeaweedFS would take.
        """
        if not 1 <= s3 <= MAX_S3_PORT:
            raise TlopsError(
                f"--s3-port {s3} is out of range: SeaweedFS also takes the 3 ports above it and each of those "
                f"plus {GRPC_OFFSET}; choose a port from 1 to {MAX_S3_PORT}"
            )
        if not 1 <= mlflow <= 65535:
            raise TlopsError(f"--mlflow-port {mlflow} is out of range; choose a port from 1 to 65535")
        http = {"s3": s3, "master": s3 + 1, "volume": s3 + 2, "filer": s3 + 3}
        ports = cls(**http, **{f"{name}_grpc": port + GRPC_OFFSET for name, port in http.items()}, mlflow=mlflow)
        if mlflow in ports.seaweedfs().values():
            raise TlopsError(
                f"--mlflow-port {mlflow} is one SeaweedFS takes with --s3-port {s3} (it, the 3 ports above it and "
                f"each of those plus {GRPC_OFFSET}); choose another --mlflow-port PORT or --s3-port PORT"
            )
        return ports

    def seaweedfs(self) -> dict[str, int]:
        """SeaweedFS's ports by field name (all but MLflow's)."""
        return {name: port for name, port in asdict(self).items() if name != "mlflow"}


@dataclass(frozen=True)
class Credentials:
    """The S3 access key pair of a stack (one identity, allowed everything)."""

    access_key: str
    secret_key: str

    @classmethod
    def generate(cls) -> Credentials:
        """A new key pair with a random secret."""
        return cls(access_key=ACCESS_KEY, secret_key=secrets.token_urlsafe(30))


@dataclass(frozen=True)
class StackConfig:
    """One stack: its folder (data, logs, process records), ports and S3 credentials."""

    directory: Path
    ports: Ports
    credentials: Credentials
    host: str = HOST
    bucket: str = BUCKET

    @property
    def s3_endpoint(self) -> str:
        """The S3 gateway's URL."""
        return f"http://{self.host}:{self.ports.s3}"

    @property
    def mlflow_uri(self) -> str:
        """The MLflow server's URL (tracking, registry and UI)."""
        return f"http://{self.host}:{self.ports.mlflow}"

    def path(self, name: str) -> Path:
        """A file or folder of the stack's folder."""
        return self.directory / name

    def env(self) -> dict[str, str]:
        """The variables that point AWS SDKs and MLflow clients (``tlops run``) at this stack."""
        return {
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
        }

    def state(self) -> dict[str, object]:
        """What :data:`STATE_FILE` records (no secrets): host, bucket, ports and URLs."""
        return {
            "host": self.host,
            "bucket": self.bucket,
            "s3_endpoint": self.s3_endpoint,
            "mlflow_uri": self.mlflow_uri,
            "ports": asdict(self.ports),
        }


def export_lines(env: dict[str, str]) -> str:
    """``export NAME=VALUE`` lines a POSIX shell can source, values quoted."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable and writable by the owner only (mode 0600), even if it existed."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)


def load_or_create_credentials(directory: Path) -> Credentials:
    """The stack's credentials: read from ``DIR/credentials.json``, or generated once and written there (0600).

    Raises:
        TlopsError: the file exists but is not what this function writes.
    """
    path = directory / CREDENTIALS_FILE
    if not path.exists():
        credentials = Credentials.generate()
        write_private(path, json.dumps(asdict(credentials), indent=2) + "\n")
        return credentials
    try:
        return Credentials(**json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise TlopsError(
            f"{path} is not a tlops stack's credentials file ({error}); delete it to generate new credentials "
            "(objects in the stack's S3 stay, readable with the new key)"
        ) from None


def load_config(directory: Path) -> StackConfig | None:
    """The configuration of the stack last started from ``directory``, or None when none was.

    Raises:
        TlopsError: its files are damaged.
    """
    state_path, credentials_path = directory / STATE_FILE, directory / CREDENTIALS_FILE
    if not state_path.exists() or not credentials_path.exists():
        return None
    try:
        state = json.loads(state_path.read_text())
        ports = Ports(**state["ports"])
        host, bucket = state["host"], state["bucket"]
    except (ValueError, TypeError, KeyError) as error:
        raise TlopsError(f"{state_path} is damaged ({error!r}); delete it and run tlops stack up again") from None
    return StackConfig(directory, ports, load_or_create_credentials(directory), host=host, bucket=bucket)
