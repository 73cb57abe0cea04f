"""The served model: raw image bytes in, label and calibrated probabilities out (in process; over HTTP through
`mlflow models serve` in tests/test_readme.py, which runs docs/serving.md's commands)."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tlops.data.images import decode_image
from tlops.data.preprocessing import DataConfig, eval_transform
from tlops.serving.model import ServingConfig
from tlops.serving.outputs import OUTPUT_COLUMNS

CLASSES = ["circle", "square", "triangle"]
TEMPERATURE = 1.7
SIZE = 64


@pytest.fixture(scope="module")
def classifier() -> tuple[torch.nn.Module, DataConfig]:
    """EfficientNet-Lite0 (ImageNet weights) with a seeded 3-class head: a real network, no training needed."""
    from tlops.models.backbones import build_classifier, load_backbone

    torch.manual_seed(0)
    backbone = load_backbone("efficientnet_lite0", image_size=SIZE)
    return build_classifier(backbone, len(CLASSES)).eval(), backbone.data_config


@pytest.fixture(scope="module")
def logged(classifier, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The served model logged into a local sqlite store; its model URI."""
    import mlflow

    from tlops.serving.package import log_served_model

    model, data_config = classifier
    store = tmp_path_factory.mktemp("store")
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    experiment = mlflow.create_experiment("serving", artifact_location=(store / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        config = ServingConfig(CLASSES, asdict(data_config), temperature=TEMPERATURE, top_k=2)
        info = log_served_model(model, config, {"classes": CLASSES}, tensor_model=False).served
    return info.model_uri


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def picture(seed: int, size: tuple[int, int] = (90, 70)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def reference(classifier, data: bytes) -> np.ndarray:
    """What training's decoding, the evaluation transform, the network and the temperature give."""
    model, data_config = classifier
    tensor = eval_transform(data_config)(decode_image(data).image)
    with torch.inference_mode():
        logits = model(tensor[None])
    return torch.softmax(logits / TEMPERATURE, dim=1)[0].numpy()


def probabilities_of(row: dict[str, Any]) -> np.ndarray:
    return np.array([row["probabilities"][name] for name in CLASSES])


def test_png_and_jpeg_bytes_are_classified_as_training_decodes_them(classifier, logged: str) -> None:
    import mlflow

    served = mlflow.pyfunc.load_model(logged)
    image = Image.fromarray(picture(0))
    inputs = [encode(image, "PNG"), encode(image, "JPEG", quality=90)]
    predictions = served.predict(pd.DataFrame({"image": inputs}))
    assert list(predictions.columns) == list(OUTPUT_COLUMNS)
    for data, row in zip(inputs, predictions.to_dict("records"), strict=True):
        expected = reference(classifier, data)
        assert np.allclose(probabilities_of(row), expected, atol=1e-5)
        assert row["label"] == CLASSES[int(expected.argmax())]
        assert row["probability"] == pytest.approx(float(expected.max()), abs=1e-5)
        assert [item["label"] for item in row["top_k"]] == [CLASSES[i] for i in np.argsort(-expected)[:2]]
        assert row["error"] is None


def test_the_temperature_softens_the_probabilities(classifier, logged: str) -> None:
    import mlflow

    model, data_config = classifier
    data = encode(Image.fromarray(picture(1)), "PNG")
    served = mlflow.pyfunc.load_model(logged).predict(pd.DataFrame({"image": [data]}))
    tensor = eval_transform(data_config)(decode_image(data).image)
    with torch.inference_mode():
        raw = torch.softmax(model(tensor[None]), dim=1)[0].numpy()
    calibrated = probabilities_of(served.iloc[0])
    assert calibrated.max() < raw.max()  # T > 1 spreads the probability mass
    assert calibrated.argmax() == raw.argmax()


def test_pixel_arrays_give_the_same_answer_as_their_png(classifier, logged: str) -> None:
    import mlflow

    served = mlflow.pyfunc.load_model(logged)
    batch = np.stack([picture(2), picture(3)])  # (N, H, W, 3) uint8
    pngs = [encode(Image.fromarray(array), "PNG") for array in batch]
    from_bytes = served.predict(pd.DataFrame({"image": pngs}))
    from_column = served.predict(pd.DataFrame({"image": list(batch)}))
    from_array = served.unwrap_python_model().predict(None, batch)
    for other in (from_column, from_array):
        assert list(other["label"]) == list(from_bytes["label"])
        for a, b in zip(other["probabilities"], from_bytes["probabilities"], strict=True):
            assert a == pytest.approx(b, abs=1e-6)


def test_odd_images_are_predicted_and_bad_rows_get_their_own_error(classifier, logged: str) -> None:
    import mlflow

    served = mlflow.pyfunc.load_model(logged)
    rgb = picture(4)
    grey = Image.fromarray(rgb[..., 0])
    rgba = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]))
    deep = Image.fromarray(rgb[..., 1].astype(np.uint16) * 257)  # mode I;16
    assert deep.mode == "I;16"
    good = [encode(grey, "PNG"), encode(rgba, "PNG"), encode(deep, "PNG")]
    rows = [*good, b"this is not an image", b"", encode(Image.fromarray(rgb), "PNG")[:200]]
    predictions = served.predict(pd.DataFrame({"image": rows})).to_dict("records")
    for data, row in zip(good, predictions[:3], strict=True):
        assert row["error"] is None
        assert np.allclose(probabilities_of(row), reference(classifier, data), atol=1e-5)
    for row in predictions[3:]:
        assert row["label"] is None and row["probabilities"] is None
        assert row["error"] and "\n" not in row["error"]
    assert "none of BMP, GIF, JPEG, PNG, TIFF, WEBP" in predictions[3]["error"]
    empty = served.predict(pd.DataFrame({"image": pd.Series([], dtype=object)}))
    assert empty.empty and list(empty.columns) == list(OUTPUT_COLUMNS)


def test_the_scoring_server_answers_every_valid_row_and_each_bad_row_with_its_error(classifier, logged: str) -> None:
    """Through MLflow's scoring server code (JSON parsing, the signature's casts): one bad cell is not a 400."""
    import base64

    import mlflow
    from mlflow.pyfunc import scoring_server

    served = mlflow.pyfunc.load_model(logged)
    png = encode(Image.fromarray(picture(5)), "PNG")
    text = base64.b64encode(png).decode()
    cells = [text, "not base64 at all!", None, base64.b64encode(b"no image").decode(), base64.encodebytes(png).decode()]
    request = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[cell] for cell in cells]}})

    answer = scoring_server.invocations(request, "application/json", served, served.metadata.get_input_schema())

    assert answer.status == 200, answer.response
    rows = json.loads(answer.response)["predictions"]
    assert len(rows) == len(cells)
    for row in (rows[0], rows[4]):
        assert row["error"] is None
        assert np.allclose(probabilities_of(row), reference(classifier, png), atol=1e-5)
    for row in rows[1:4]:
        assert row["label"] is None and row["error"] and "\n" not in row["error"]
    assert "not valid base64" in rows[1]["error"]
    assert "no image (null)" in rows[2]["error"]
    assert rows[3]["error"].startswith("not an image")


def test_a_50_megapixel_photo_is_predicted(classifier, logged: str) -> None:
    import mlflow

    big = Image.new("RGB", (8660, 5774), (200, 30, 60))  # 50.0 megapixels
    data = encode(big, "JPEG", quality=80)
    (row,) = mlflow.pyfunc.load_model(logged).predict(pd.DataFrame({"image": [data]})).to_dict("records")
    assert row["error"] is None
    assert np.allclose(probabilities_of(row), reference(classifier, data), atol=1e-4)


def test_the_served_model_is_code_and_tensors_not_a_pickle(logged: str) -> None:
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(logged))
    files = {path.relative_to(local).as_posix() for path in local.rglob("*") if path.is_file()}
    assert not [name for name in files if name.endswith((".pkl", ".pickle", ".cloudpickle"))], files
    assert "artifacts/network.pt2" in files and "artifacts/preprocessing.json" in files
    assert "served_model.py" in {Path(name).name for name in files}
    assert "code/tlops/serving/model.py" in files  # code_paths: loads where tlops is not installed
    mlmodel = (local / "MLmodel").read_text()
    assert "image" in mlmodel and '"type": "any"' in mlmodel
    assert json.loads((local / "artifacts" / "preprocessing.json").read_text())["temperature"] == TEMPERATURE
