"""Size and CPU latency of a classifier as torch fp32, ONNX fp32 and ONNX int8, measured side by side.

Each network runs on the CPU with the same number of intra-op threads, on the same random batch; the latency is
the median over repeats after a warm-up, at batch 1 and at batch 32.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

BATCHES = (1, 32)


def median_ms(run: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    """The median wall time of ``run()`` in milliseconds over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def torch_size_bytes(model: nn.Module) -> int:
    """Bytes of the classifier's ``state_dict`` as ``torch.save`` writes it (the fp32 weights)."""
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def measure(
    model: nn.Module, graphs: dict[str, Path], input_size: int, threads: int, repeats: int = 10
) -> list[dict[str, Any]]:
    """Size and median latency (batch 1 and 32) of the torch model and of each ONNX graph, on ``threads`` threads.

    Args:
        model: The fp32 torch classifier.
        graphs: Name (``onnx``, ``int8``) -> ``.onnx`` file.
        input_size: The square input size.
        threads: Intra-op threads of torch and of each onnxruntime session.
        repeats: Timed calls per batch size (batch 32 gets a third of them, at least 3).

    Returns:
        One row per network: ``format``, ``size_mb``, ``latency_ms_batch1``, ``latency_ms_batch32``.
    """
    import torch

    from tlops.serving.onnx_export import onnx_logits, onnx_session

    model = model.eval().to("cpu", memory_format=torch.contiguous_format)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    batches = {size: rng.random((size, 3, input_size, input_size), dtype=np.float32) for size in BATCHES}
    counts = {1: repeats, 32: max(3, repeats // 3)}
    try:
        rows = [{"format": "torch", "size_mb": torch_size_bytes(model) / 1e6}]
        with torch.inference_mode():
            for size, batch in batches.items():
                tensor = torch.from_numpy(batch)
                rows[0][f"latency_ms_batch{size}"] = median_ms(lambda t=tensor: model(t), counts[size])
    finally:
        torch.set_num_threads(previous)
    for name, path in graphs.items():
        session = onnx_session(path, threads)
        row: dict[str, Any] = {"format": name, "size_mb": Path(path).stat().st_size / 1e6}
        for size, batch in batches.items():
            row[f"latency_ms_batch{size}"] = median_ms(lambda b=batch, s=session: onnx_logits(s, b), counts[size])
        rows.append(row)
    return rows
