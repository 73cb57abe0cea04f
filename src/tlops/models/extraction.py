"""Running a frozen backbone over a loader at the hardware's speed, and what a backbone costs to run."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from tlops.io.progress import progress
from tlops.models.device import autocast


def prepare_for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """Evaluation mode on ``device``, in channels_last memory format (1.6x faster convolutions on this CPU)."""
    return model.eval().to(device=device, memory_format=torch.channels_last)


@torch.inference_mode()
def iter_features(
    model: nn.Module, loader: DataLoader, device: torch.device, desc: str = "features"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(features, targets)`` per batch, float32 on the CPU, in the loader's (deterministic) order.

    The model runs in inference mode, channels_last, with bf16 autocast on CUDA; batches are copied
    asynchronously (the loader pins them on CUDA). Progress counts images per second.
    """
    model = prepare_for_inference(model, device)
    bar = progress(loader, desc, unit="batch")
    start, images_done = time.perf_counter(), 0
    for images, labels in bar:
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast(device):
            output = model(images)
        images_done += len(labels)
        bar.set_postfix(img_per_s=f"{images_done / max(time.perf_counter() - start, 1e-9):.1f}")
        yield output.float().cpu(), labels.long()


def weights_checksum(model: nn.Module) -> str:
    """sha256 over a model's state (names, dtypes, shapes and bytes): the same weights give the same checksum."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def count_parameters(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(parameter.numel() for parameter in model.parameters())


@torch.inference_mode()
def count_flops(model: nn.Module, input_size: int) -> int:
    """Floating-point operations of one forward pass on one ``input_size`` x ``input_size`` RGB image.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (matrix multiplies and convolutions, two
    operations per multiply-add).
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval().cpu()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, 3, input_size, input_size))
    return int(counter.get_total_flops())


@torch.inference_mode()
def measure_latency(model: nn.Module, input_size: int, device: torch.device, repeats: int = 5) -> float:
    """Median seconds of one forward pass on one image on ``device`` (after one warm-up pass)."""
    model = prepare_for_inference(model, device)
    image = torch.zeros(1, 3, input_size, input_size, device=device).contiguous(memory_format=torch.channels_last)
    timings = []
    for index in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with autocast(device):
            model(image)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index:
            timings.append(time.perf_counter() - start)
    return sorted(timings)[len(timings) // 2]
