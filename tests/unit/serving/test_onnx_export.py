"""ONNX export and int8 quantisation of a tiny classifier: the graphs answer as the torch network does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from tlops.models.backbones import Normalize
from tlops.serving.export_latency import measure
from tlops.serving.onnx_export import INPUT_NAME, export_onnx, onnx_logits, onnx_session, quantize_int8

SIZE = 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, Path]:
    """A seeded tiny CNN classifier (normalization inside, 4 classes) and its ONNX export."""
    torch.manual_seed(0)
    model = nn.Sequential(
        Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    ).eval()
    folder = tmp_path_factory.mktemp("onnx")
    return model, export_onnx(model, SIZE, folder / "fp32.onnx"), folder


def _pixels(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 3, SIZE, SIZE), dtype=np.float32)


def _torch_logits(model: nn.Module, pixels: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(pixels)).numpy()


def test_the_onnx_graph_is_valid_takes_any_batch_and_matches_torch(tiny):
    model, path, _ = tiny
    graph = onnx.load(str(path))
    assert graph.graph.input[0].name == INPUT_NAME
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = onnx_session(path, threads=1)
    for batch in (1, 7):
        pixels = _pixels(batch, batch)
        np.testing.assert_allclose(onnx_logits(session, pixels), _torch_logits(model, pixels), atol=1e-4)


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_int8_is_smaller_and_close_to_fp32(tiny, mode):
    model, path, folder = tiny
    calibration = [_pixels(16, seed) for seed in range(4)] if mode == "static" else None
    quantized = quantize_int8(path, folder / f"{mode}.onnx", mode, calibration)
    assert quantized.stat().st_size < path.stat().st_size
    pixels = _pixels(64, 99)
    expected, got = _torch_logits(model, pixels), onnx_logits(onnx_session(quantized), pixels)
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() < 0.1 * scale
    assert np.abs(got - expected).mean() < 0.05 * scale


def test_static_quantisation_without_calibration_images_is_refused(tiny):
    _, path, folder = tiny
    with pytest.raises(ValueError, match="calibration images"):
        quantize_int8(path, folder / "none.onnx", "static", None)
    with pytest.raises(ValueError, match="one of static, dynamic"):
        quantize_int8(path, folder / "none.onnx", "float16", None)


def test_sizes_and_latencies_are_measured_side_by_side(tiny):
    model, path, _ = tiny
    rows = measure(model, {"onnx": path}, SIZE, threads=1, repeats=3)
    assert [row["format"] for row in rows] == ["torch", "onnx"]
    for row in rows:
        assert row["size_mb"] > 0 and row["latency_ms_batch1"] > 0 and row["latency_ms_batch32"] > 0
