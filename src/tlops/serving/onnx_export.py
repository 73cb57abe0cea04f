"""Export a trained image classifier to ONNX, and quantise that to int8 with onnxruntime.

The ONNX graph is the network as served: normalization inside, preprocessed ``(N, 3, S, S)`` floats in 0..1 in,
logits out, any batch size (a dynamic first axis). The int8 model is quantised either statically (QDQ format,
per-channel weights, activation ranges calibrated on preprocessed training images: what suits a CNN) or
dynamically (weights only, activations quantised on the fly: no calibration data).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
OPSET = 17
QUANTIZATION_MODES = ("static", "dynamic")
# The layers with weights are quantised, and the activations right after them (ReLU6 is a Clip in ONNX), so that a
# convolution's output is quantised over the activation's range (0..6) rather than its pre-activation range (about
# -100..100 in EfficientNet-Lite0, which left ReLU6's outputs about 10 levels). The normalization's Sub/Div, the
# padding arithmetic of EfficientNet's "same" convolutions and the first convolution stay in float: on the
# bench's fine-tuned EfficientNet-Lite0 (digits, 128 px) quantising Conv/Gemm/MatMul only kept 0.38 test accuracy of
# fp32's 0.88, adding the activations 0.57, and keeping the first convolution in float too 0.82.
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul", "Clip", "Relu"]
_WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


def export_onnx(model: nn.Module, input_size: int, path: Path) -> Path:
    """Export the classifier to ONNX with a dynamic batch axis and check the graph with ``onnx.checker``.

    Args:
        model: The classifier (normalization inside, logits out).
        input_size: The square input size in pixels.
        path: Where the ``.onnx`` file goes.

    Returns:
        ``path``.
    """
    import onnx
    import torch

    model = model.eval().to("cpu", memory_format=torch.contiguous_format)
    example = torch.full((2, 3, input_size, input_size), 0.5)
    with torch.inference_mode():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)
    return path


class Batches:
    """An onnxruntime ``CalibrationDataReader`` over batches of preprocessed images."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch as the graph's input, or ``None`` when there is none left."""
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}


def quantize_int8(source: Path, path: Path, mode: str, calibration: Iterable[np.ndarray] | None = None) -> Path:
    """Quantise an exported ONNX classifier to int8 and check the result with ``onnx.checker``.

    Args:
        source: The fp32 ``.onnx`` file of :func:`export_onnx`.
        path: Where the int8 ``.onnx`` file goes.
        mode: ``static`` (QDQ, per-channel, calibrated on ``calibration``) or ``dynamic`` (weights only).
        calibration: Batches of preprocessed ``(N, 3, S, S)`` float images (static mode): training images, never
            test images.

    Returns:
        ``path``.

    Raises:
        ValueError: for an unknown mode, or static mode without calibration batches.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"quantisation mode {mode!r}: must be one of {', '.join(QUANTIZATION_MODES)}")
    prepared = path.with_suffix(".prepared.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    excluded = nodes_kept_in_float(onnx.load(str(prepared)))
    try:
        if mode == "dynamic":
            quantize_dynamic(
                str(prepared),
                str(path),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=list(_WEIGHTED_OPS),
                nodes_to_exclude=excluded,
            )
        else:
            if calibration is None:
                raise ValueError("static quantisation needs calibration images")
            quantize_static(
                str(prepared),
                str(path),
                Batches(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=QUANTIZED_OPS,
                nodes_to_exclude=excluded,
            )
    finally:
        prepared.unlink(missing_ok=True)
    onnx.checker.check_model(str(path), full_check=True)
    return path


def nodes_kept_in_float(graph_model: Any) -> list[str]:
    """The nodes :func:`quantize_int8` leaves in float besides the op types it does not quantise.

    The first convolution (the stem sees the normalized image, and int8 there cost most of what was lost), and every
    activation not fed by a layer with weights (a Clip in shape arithmetic, a ReLU after a residual Add).

    Args:
        graph_model: The ``onnx.ModelProto`` to quantise (its nodes in topological order, as ONNX requires).

    Returns:
        The node names.
    """
    nodes = list(graph_model.graph.node)
    producer = {output: node for node in nodes for output in node.output}
    convolutions = [node.name for node in nodes if node.op_type == "Conv"]
    activations = [
        node.name
        for node in nodes
        if node.op_type in ("Clip", "Relu")
        and (node.input[0] not in producer or producer[node.input[0]].op_type not in _WEIGHTED_OPS)
    ]
    return convolutions[:1] + activations


def onnx_session(path: Path | str, threads: int = 0):
    """An onnxruntime CPU inference session of ``path`` (``threads`` intra-op threads; 0: onnxruntime's choice)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session, pixels: np.ndarray) -> np.ndarray:
    """The logits an onnxruntime session gives for a batch of preprocessed ``(N, 3, S, S)`` images."""
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(pixels, dtype=np.float32)})
    return np.asarray(logits, dtype=np.float32)
