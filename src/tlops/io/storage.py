"""Object storage: s3:// URIs read and written through boto3, with local paths handled alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.errors import TlopsError

if TYPE_CHECKING:
    from collections.abc import Iterator

S3Client = Any  # botocore's generated client type is not importable for annotations


@dataclass(frozen=True)
class S3Location:
    """A bucket and key prefix parsed from an s3:// URI."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        """The location as an s3:// URI."""
        return f"s3://{self.bucket}/{self.key}"


def is_s3_uri(uri: str) -> bool:
    """Whether ``uri`` names an S3 object or prefix."""
    return uri.startswith("s3://")


def parse_s3_uri(uri: str) -> S3Location:
    """Split ``s3://bucket/key`` into bucket and key.

    Raises:
        TlopsError: if the URI has no bucket.
    """
    if not is_s3_uri(uri):
        raise TlopsError(f"not an s3:// URI: {uri!r}; write it as s3://BUCKET/PREFIX")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise TlopsError(f"S3 URI {uri!r} names no bucket; write it as s3://BUCKET/PREFIX")
    return S3Location(bucket=bucket, key=key)


def make_s3_client(endpoint_url: str | None = None, max_attempts: int = 3) -> S3Client:
    """Create a boto3 S3 client with bounded standard-mode retries and timeouts.

    Credentials and region come from the standard AWS chain; ``AWS_ENDPOINT_URL`` (or ``endpoint_url``) points
    it at an S3-compatible store such as SeaweedFS.

    Args:
        endpoint_url: Explicit endpoint; ``None`` lets boto3 resolve it from its configuration.
        max_attempts: Total attempts per request, first try included.

    Returns:
        A boto3 S3 client.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=5,
        read_timeout=60,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def _explain_client_error(error: Exception, location: S3Location) -> TlopsError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(error, NoCredentialsError):
        return TlopsError(
            f"no S3 credentials found for {location.uri}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(error, EndpointConnectionError):
        return TlopsError(f"cannot reach the S3 endpoint for {location.uri} ({error}); check AWS_ENDPOINT_URL")
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in {"NoSuchBucket", "404", "NotFound"}:
            return TlopsError(f"S3 bucket {location.bucket!r} does not exist; create it or fix the URI")
        if code in {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}:
            return TlopsError(
                f"S3 refused access to {location.uri} ({code}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            )
        if code in {"NoSuchKey"}:
            return TlopsError(f"S3 object {location.uri} does not exist; check the URI")
        return TlopsError(f"S3 request for {location.uri} failed ({code}): {error}")
    return TlopsError(f"S3 request for {location.uri} failed: {error}")


def s3_errors() -> tuple[type[Exception], ...]:
    """The exception types a boto3 S3 call raises (imported lazily: botocore is slow to import)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def check_bucket(s3: S3Client, uri: str) -> S3Location:
    """Check that the bucket of ``uri`` exists and is readable.

    Raises:
        TlopsError: naming the missing bucket or the refused credentials.
    """
    location = parse_s3_uri(uri)
    try:
        s3.head_bucket(Bucket=location.bucket)
    except s3_errors() as error:
        raise _explain_client_error(error, location) from None
    return location


def iter_objects(s3: S3Client, uri: str) -> Iterator[tuple[str, int]]:
    """Yield ``(key, size)`` for every object under an s3:// prefix, streaming the listing page by page.

    Raises:
        TlopsError: when the bucket is missing or access is refused.
    """
    for key, size, _etag in iter_object_stats(s3, uri):
        yield key, size


def iter_object_stats(s3: S3Client, uri: str) -> Iterator[tuple[str, int, str]]:
    """Yield ``(key, size, etag)`` for every object under an s3:// prefix, streaming the listing page by page.

    Raises:
        TlopsError: when the bucket is missing or access is refused.
    """
    location = check_bucket(s3, uri)
    prefix = location.key.rstrip("/") + "/" if location.key else ""
    paginator = s3.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=location.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"], int(item["Size"]), str(item.get("ETag", "")).strip('"')
    except s3_errors() as error:
        raise _explain_client_error(error, location) from None


def read_bytes(uri: str, s3: S3Client | None = None) -> bytes:
    """Read a whole local file or S3 object."""
    if not is_s3_uri(uri):
        return Path(uri).read_bytes()
    if s3 is None:
        raise TlopsError(f"{uri} is on S3 but no S3 client was given")
    location = parse_s3_uri(uri)
    try:
        return s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    except s3_errors() as error:
        raise _explain_client_error(error, location) from None


def read_head(uri: str, size: int, s3: S3Client | None = None) -> bytes:
    """The first ``size`` bytes (or fewer, for a shorter file) of a local file or S3 object."""
    if not is_s3_uri(uri):
        with open(uri, "rb") as file:
            return file.read(size)
    if s3 is None:
        raise TlopsError(f"{uri} is on S3 but no S3 client was given")
    location = parse_s3_uri(uri)
    try:
        response = s3.get_object(Bucket=location.bucket, Key=location.key, Range=f"bytes=0-{max(size, 1) - 1}")
        return response["Body"].read()[:size]
    except s3_errors() as error:
        if getattr(error, "response", {}).get("Error", {}).get("Code") == "InvalidRange":
            return b""  # an empty object has no byte 0
        raise _explain_client_error(error, location) from None


def download(uri: str, destination: Path, s3: S3Client | None = None) -> Path:
    """Copy a local file or S3 object to ``destination`` atomically (write to a temporary name, then rename)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    partial.write_bytes(read_bytes(uri, s3))
    partial.replace(destination)
    return destination


def upload_file(path: Path, uri: str, s3: S3Client) -> None:
    """Upload a local file to an s3:// URI."""
    location = parse_s3_uri(uri)
    try:
        s3.upload_file(str(path), location.bucket, location.key)
    except s3_errors() as error:
        raise _explain_client_error(error, location) from None


def check_writable_prefix(s3: S3Client, uri: str, what: str) -> None:
    """Check that objects can be written under an s3:// prefix: put a probe object and delete it.

    Args:
        s3: The S3 client.
        uri: ``s3://bucket/prefix``.
        what: How the user named the location (``--feature-cache``), for the message.

    Raises:
        TlopsError: naming the missing bucket, the refused write, and the fix.
    """
    import uuid

    location = check_bucket(s3, uri)
    probe = f"{location.key.rstrip('/')}/.tlops-write-check-{uuid.uuid4().hex[:8]}".lstrip("/")
    try:
        s3.put_object(Bucket=location.bucket, Key=probe, Body=b"")
        s3.delete_object(Bucket=location.bucket, Key=probe)
    except s3_errors() as error:
        raise TlopsError(
            f"{what} {uri} is not writable ({type(error).__name__}: {str(error)[:120]}); give a prefix in a "
            "bucket these credentials may write"
        ) from None


def check_writable_location(uri: str, s3: S3Client | None, what: str) -> None:
    """Check that a local folder or an s3:// prefix can be written.

    Raises:
        TlopsError: naming the location, the problem and the fix.
    """
    from tlops.io.paths import check_writable_dir

    if not is_s3_uri(uri):
        check_writable_dir(Path(uri), what)
    elif s3 is None:
        raise TlopsError(f"{what} {uri} is on S3 but no S3 client is configured: set AWS_ENDPOINT_URL")
    else:
        check_writable_prefix(s3, uri, what)


def download_prefix(uri: str, destination: Path, s3: S3Client) -> Path:
    """Copy every object under an s3:// prefix into ``destination``, keeping the key paths below the prefix.

    Raises:
        TlopsError: when the prefix holds no object, the bucket is missing or access is refused.
    """
    location = parse_s3_uri(uri)
    prefix = location.key.rstrip("/") + "/" if location.key else ""
    count = 0
    for key, _ in iter_objects(s3, uri):
        download(f"s3://{location.bucket}/{key}", destination / key[len(prefix) :], s3)
        count += 1
    if not count:
        raise TlopsError(f"{uri} holds no object: give the s3:// prefix of a step's output folder")
    return destination


def upload_folder(folder: Path, uri: str, s3: S3Client) -> None:
    """Upload every file under ``folder`` to the s3:// prefix ``uri`` (relative paths become keys)."""
    base = uri.rstrip("/")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        upload_file(path, f"{base}/{path.relative_to(folder).as_posix()}", s3)
