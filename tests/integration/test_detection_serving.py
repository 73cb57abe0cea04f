"""The served object detector end to end: logged to the real MLflow server (artifacts in S3), loaded as a pyfunc and
served over HTTP by `mlflow models serve --env-manager local`; boxes in the sent image's pixels, bad rows answered
with their own error."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from model_server import serve_model
from tlops.models.detector import build_detector, set_inference_limits
from tlops.models.detector_checkpoint import DetectorConfig

CLASSES = ["cat", "dog", "bird"]
SIZE = 128
SHAPES = ((200, 300), (90, 60))  # (height, width): neither the model's size nor square


def png(height: int, width: int, seed: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = [png(h, w, seed) for seed, (h, w) in enumerate(SHAPES)]


@pytest.fixture(scope="module")
def detector() -> torch.nn.Module:
    """An untrained, seeded Faster R-CNN on lite0 at 128 pixels: a real network, no training needed."""
    torch.manual_seed(2)
    return build_detector("efficientnet_lite0", len(CLASSES), image_size=SIZE, pretrained=False).eval()


@pytest.fixture(scope="module")
def logged(detector, services) -> str:
    import mlflow

    from tlops.serving.detection_package import log_served_detection_model

    config = DetectorConfig.of(detector, "fasterrcnn", "efficientnet_lite0", CLASSES)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(services.mlflow_uri)
    try:
        experiment = mlflow.create_experiment(f"detection-serving-{uuid.uuid4().hex[:8]}")
        with mlflow.start_run(experiment_id=experiment):
            info = log_served_detection_model(detector, config, {"classes": CLASSES}).served
    finally:
        mlflow.set_tracking_uri(previous)
    return info.model_uri


@pytest.fixture(scope="module")
def local(logged: str, services) -> Path:
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(services.mlflow_uri)
    try:
        return Path(mlflow.artifacts.download_artifacts(logged))
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def server(logged: str, services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_model(logged, services.mlflow_uri, tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


def direct(detector: torch.nn.Module, image: bytes, threshold: float, limit: int) -> dict[str, Any]:
    """The network's own detections of one image at its own size, as the served model should answer them."""
    from PIL import Image
    from torchvision.transforms.v2 import functional

    picture = Image.open(io.BytesIO(image)).convert("RGB")
    set_inference_limits(detector, threshold, limit)
    with torch.inference_mode():
        output = detector([functional.to_dtype(functional.to_image(picture), scale=True)])[0]
    return {key: value.numpy() for key, value in output.items()}


def check_rows(rows: list[dict[str, Any]], detector: torch.nn.Module, threshold: float, limit: int) -> None:
    for row, image, (height, width) in zip(rows, IMAGES, SHAPES, strict=True):
        assert row["error"] is None
        boxes = np.array(row["boxes"], dtype=np.float64).reshape(-1, 4)
        assert 0 < len(boxes) <= limit and len(row["labels"]) == len(row["scores"]) == len(boxes)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= width + 1e-3).all() and (boxes[:, 3] <= height + 1e-3).all()
        assert set(row["labels"]) <= set(CLASSES) and min(row["scores"]) >= threshold
        assert row["scores"] == sorted(row["scores"], reverse=True)
        want = direct(detector, image, threshold, limit)
        assert np.allclose(boxes, want["boxes"], atol=1e-3)
        assert row["labels"] == [CLASSES[i - 1] for i in want["labels"]]
        assert np.allclose(row["scores"], want["scores"], atol=1e-5)


def test_the_pyfunc_detects_row_by_row(logged: str, services, detector) -> None:
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(services.mlflow_uri)
    try:
        model = mlflow.pyfunc.load_model(logged)
    finally:
        mlflow.set_tracking_uri(previous)
    cells = [IMAGES[0], "not base64 at all!", base64.b64encode(IMAGES[1]).decode(), None]
    answer = model.predict(pd.DataFrame({"image": cells}), params={"score_threshold": 0.0, "max_detections": 7})
    assert list(answer.columns) == ["boxes", "labels", "scores", "error"] and len(answer) == 4
    rows = answer.to_dict("records")
    check_rows([rows[0], rows[2]], detector, 0.0, 7)
    for row in (rows[1], rows[3]):
        assert row["boxes"] is None and row["labels"] is None and row["scores"] is None and row["error"]
    assert "not valid base64" in rows[1]["error"] and "no image (null)" in rows[3]["error"]
    # The defaults: score >= 0.3, at most 100 boxes.
    default = model.predict(pd.DataFrame({"image": IMAGES[:1]})).iloc[0]
    assert len(default["boxes"]) <= 100 and all(score >= 0.3 for score in default["scores"])
    with pytest.raises(Exception, match=r"score_threshold must be within 0\.\.1"):
        model.predict(pd.DataFrame({"image": IMAGES[:1]}), params={"score_threshold": 1.5})


def test_the_served_detector_answers_http_requests(server: str, detector) -> None:
    import requests

    cells = [base64.b64encode(IMAGES[0]).decode(), "bm90IGFuIGltYWdl", base64.b64encode(IMAGES[1]).decode()]
    answer = requests.post(
        f"{server}/invocations",
        json={
            "dataframe_split": {"columns": ["image"], "data": [[cell] for cell in cells]},
            "params": {"score_threshold": 0.0, "max_detections": 5},
        },
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    rows = answer.json()["predictions"]
    assert len(rows) == 3 and all(set(row) == {"boxes", "labels", "scores", "error"} for row in rows)
    check_rows([rows[0], rows[2]], detector, 0.0, 5)
    assert rows[1]["boxes"] is None and rows[1]["error"]


def test_the_logged_detector_is_files_code_and_pinned_requirements(local: Path) -> None:
    from importlib.metadata import version

    import mlflow

    files = {path.relative_to(local).as_posix() for path in local.rglob("*") if path.is_file()}
    assert not [name for name in files if name.endswith((".pkl", ".pickle", ".cloudpickle", ".pt", ".pth"))], files
    assert {"artifacts/detector/detector.safetensors", "artifacts/detector/detector.json"} <= files
    assert "code/tlops/serving/detection_model.py" in files
    config = json.loads((local / "artifacts" / "detector" / "detector.json").read_text())
    assert config["classes"] == CLASSES and config["image_size"] == SIZE and config["architecture"] == "fasterrcnn"
    requirements = (local / "requirements.txt").read_text().split()
    for name in ("mlflow", "torch", "torchvision", "timm", "safetensors"):
        assert f"{name}=={version(name)}" in requirements, requirements
    signature = mlflow.models.Model.load(str(local / "MLmodel")).signature
    assert {param.name: param.default for param in signature.params.params} == {
        "score_threshold": 0.3,
        "max_detections": 100,
    }
