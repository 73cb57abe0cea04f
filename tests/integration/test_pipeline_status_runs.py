"""The pipeline's first and last steps on real services: the fingerprint of an S3 prefix follows its objects, and a
failed local pipeline is recorded in MLflow once.
"""

from __future__ import annotations

import io
import logging
import sys
import uuid
from pathlib import Path

import pytest

from images import solid_image_folder as _image_folder
from tlops.data.fingerprint import source_fingerprint
from tlops.errors import TlopsError
from tlops.promotion.failures import KFP_RUN_TAG


@pytest.mark.integration
def test_the_fingerprint_of_an_s3_prefix_follows_its_objects(s3_client, services) -> None:
    bucket = f"fingerprint-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    for key in ("ds/cat/0.png", "ds/dog/0.png"):
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"one")
    first = source_fingerprint(f"s3://{bucket}/ds", s3_client)
    assert first.startswith("2-") and source_fingerprint(f"s3://{bucket}/ds/", s3_client) == first
    s3_client.put_object(Bucket=bucket, Key="ds/cat/0.png", Body=b"two")  # same key and size, other bytes: ETag
    assert source_fingerprint(f"s3://{bucket}/ds", s3_client) != first
    with pytest.raises(TlopsError, match="holds no files"):
        source_fingerprint(f"s3://{bucket}/nothing-here", s3_client)


@pytest.mark.pipeline
def test_a_failed_local_pipeline_is_recorded_in_mlflow_once_without_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking_uri: str, client, experiment: str
) -> None:
    from tlops.pipeline.local import PipelineFailed, run_locally

    data = _image_folder(tmp_path / "data", {"only-one-class": 6})  # prepare-data refuses a single class
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)  # kfp.local's task lines: on stderr, at DEBUG (tlops -v)
    local_logger = logging.getLogger("tlops.pipeline.local")
    local_logger.setLevel(logging.DEBUG)
    parameters = {"data_uri": str(data), "tracking_uri": tracking_uri, "experiment": experiment}
    try:
        with pytest.raises(PipelineFailed, match="prepare-data"):
            run_locally(parameters, tmp_path / "out")
    finally:
        local_logger.setLevel(logging.NOTSET)
    log = captured.getvalue()
    assert log.count("Executing task 'prepare-data'") == 1  # kfp.local honours retries: tlops run builds none
    assert "Executing task 'record-pipeline-status'" in log
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["tlops.pipeline_state"] == "FAILED"
    assert run.data.tags[KFP_RUN_TAG] and run.info.run_name.startswith("tlops-transfer-learning")
    assert not (tmp_path / "out" / "pipeline_root").exists()  # the failed run's partial outputs are gone
