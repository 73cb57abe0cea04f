"""The export gated on accuracy, against the real MLflow server: registered when within the margin, served as bytes."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model_server import serve_model
from tlops.promotion.registry import RegistryConfig
from tlops.steps.config import ExportConfig
from tlops.steps.register import register
from tlops.steps.runtime import Runtime

pytestmark = pytest.mark.integration


def _config(mlflow_uri: str) -> RegistryConfig:
    return RegistryConfig(tracking_uri=mlflow_uri, experiment="tlops-tests", model_name=f"m-{uuid.uuid4().hex[:8]}")


def _register(dirs: dict[str, Path], config: RegistryConfig, export: ExportConfig, tmp_path: Path):
    runtime = Runtime(cache_dir=tmp_path / "cache", batch_size=16)
    return register(
        dirs["data"], dirs["model"], dirs["evaluation"], config, output_dir=tmp_path, export=export, runtime=runtime
    )


def _test_images(dirs: dict[str, Path], count: int = 6) -> list[bytes]:
    from tlops.data.prepare import load_prepared

    manifest, _ = load_prepared(dirs["data"])
    rows = manifest[manifest["split"] == "test"].head(count)
    return [Path(uri.removeprefix("file://")).read_bytes() for uri in rows["uri"]]


def test_onnx_export_with_identical_predictions_passes_a_zero_margin_and_is_registered(
    trained_model, mlflow_uri, tmp_path
):
    from mlflow import MlflowClient

    config = _config(mlflow_uri)
    summary = _register(trained_model, config, ExportConfig(format="onnx", margin=0.0), tmp_path)

    export = summary.export
    assert export["accepted"], export["reason"]
    assert export["verdict"]["changed"] == 0 and export["max_abs_logit_difference"] < 1e-3
    registered = export["registered"]
    assert registered["registered_model"] == f"{config.model_name}-onnx"
    assert registered["aliases"] == ["challenger", "champion"]  # its fp32 source is the champion
    version = MlflowClient(mlflow_uri).get_model_version(registered["registered_model"], "1")
    assert version.tags["source_model"] == config.model_name and version.tags["source_version"] == "1"
    assert [row["format"] for row in export["sizes_latency"]] == ["torch", "onnx"]
    metrics = MlflowClient(mlflow_uri).get_run(summary.run_id).data.metrics
    assert metrics["export.onnx.ci_low"] == 0.0 and metrics["export.onnx.onnx.size_mb"] > 0
    assert (tmp_path / "export.json").is_file()


def test_int8_export_registers_and_serves_image_bytes_like_the_fp32_pyfunc(trained_model, mlflow_uri, tmp_path):
    import mlflow

    config = _config(mlflow_uri)
    summary = _register(trained_model, config, ExportConfig(format="int8", margin=1.0), tmp_path)

    export = summary.export
    assert export["accepted"] and export["quantization"] == "static", export["reason"]
    sizes = {row["format"]: row["size_mb"] for row in export["sizes_latency"]}
    assert sizes["int8"] < sizes["onnx"] / 2
    mlflow.set_tracking_uri(mlflow_uri)
    images = pd.DataFrame({"image": _test_images(trained_model)})
    exported = mlflow.pyfunc.load_model(export["registered"]["model_uri"]).predict(images)
    fp32 = mlflow.pyfunc.load_model(summary.model_uri).predict(images)
    assert list(exported.columns) == list(fp32.columns)
    assert exported["error"].isna().all() and exported["label"].notna().all()
    assert set(exported["label"]) <= set(next(iter(fp32["probabilities"])).keys())
    for served, expected in zip(exported["probabilities"], fp32["probabilities"], strict=True):
        assert served.keys() == expected.keys() and sum(served.values()) == pytest.approx(1.0)
    import base64

    import requests

    with serve_model(export["registered"]["model_uri"], mlflow_uri, tmp_path / "serve.log") as url:
        body = {
            "dataframe_records": [
                {"image": base64.b64encode(image).decode()} for image in _test_images(trained_model, 2)
            ]
        }
        answer = requests.post(f"{url}/invocations", json=body, timeout=60).json()["predictions"]
    assert [row["label"] for row in answer] == list(exported["label"][:2])


def test_an_export_beyond_the_margin_is_refused_and_nothing_of_it_registered(
    trained_model, mlflow_uri, tmp_path, monkeypatch
):
    from mlflow import MlflowClient

    import tlops.steps.export as export_step

    def broken(session, loader, run):  # an export that gets every image wrong: the fp32 logits' reverse order
        logits = np.concatenate([run(session, images.numpy()) for images, _ in loader])
        return -logits

    monkeypatch.setattr(export_step, "exported_test_logits", broken)
    config = _config(mlflow_uri)
    summary = _register(trained_model, config, ExportConfig(format="int8", margin=0.01), tmp_path)

    export = summary.export
    assert not export["accepted"] and export["registered"] is None
    assert "beyond the margin of 0.01" in export["reason"] and "CI [" in export["reason"]
    client = MlflowClient(mlflow_uri)
    assert client.search_registered_models(f"name = '{config.model_name}-int8'") == []
    assert client.get_model_version(config.model_name, "1")  # the fp32 model registered as usual
    run = client.get_run(summary.run_id)
    assert run.data.tags["tlops.export.int8"] == export["reason"]
    assert run.data.metrics["export.int8.ci_low"] < -0.01
    artifacts = [item.path for item in client.list_artifacts(summary.run_id)]
    assert "model-int8" not in artifacts
    from tlops.steps.summary import format_summary

    assert "export     int8 refused: nothing of it registered" in format_summary(summary)
