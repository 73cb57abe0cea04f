"""The test services are real: S3 stores bytes and checks signatures, MLflow stores artifacts in S3."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from services import MLFLOW_BUCKET, Services, make_s3_client

pytestmark = pytest.mark.integration


def test_s3_put_get_roundtrip(s3_client: Any, bucket: str) -> None:
    body = b"tlops \x00\x01 bytes" * 1000
    s3_client.put_object(Bucket=bucket, Key="dir/obj.bin", Body=body)
    assert s3_client.get_object(Bucket=bucket, Key="dir/obj.bin")["Body"].read() == body
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="dir/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/obj.bin"]


def test_s3_env_points_boto3_at_seaweedfs(s3_env: Services, bucket: str) -> None:
    import boto3

    client = boto3.client("s3")  # endpoint, credentials and region come from the environment only
    client.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"


def test_s3_rejects_wrong_secret(services: Services, bucket: str) -> None:
    bad = make_s3_client(services, secret_key="not-the-secret", retries=1)
    start = time.monotonic()
    with pytest.raises(ClientError) as info:
        bad.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert time.monotonic() - start < 10
    assert info.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId"}


def test_mlflow_artifact_lands_in_seaweedfs(mlflow_uri: str, s3_client: Any, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment_id = client.create_experiment(f"test-services-{time.time_ns()}")
    run = client.create_run(experiment_id)
    artifact = tmp_path / "hello.txt"
    artifact.write_text("hello from tlops")
    client.log_artifact(run.info.run_id, str(artifact), artifact_path="notes")
    client.set_terminated(run.info.run_id)

    assert [f.path for f in client.list_artifacts(run.info.run_id, "notes")] == ["notes/hello.txt"]
    keys = [
        o["Key"]
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=MLFLOW_BUCKET)
        for o in page.get("Contents", [])
    ]
    matching = [k for k in keys if run.info.run_id in k and k.endswith("notes/hello.txt")]
    assert len(matching) == 1, keys
    assert s3_client.get_object(Bucket=MLFLOW_BUCKET, Key=matching[0])["Body"].read() == b"hello from tlops"
