"""Choosing the compute device."""

from __future__ import annotations

import torch

from tlops.errors import TlopsError


def resolve_device(name: str = "auto") -> torch.device:
    """Return CUDA when present (for ``auto``), else the CPU; an explicit name is checked and used as given.

    Raises:
        TlopsError: for a name torch does not know, or a CUDA device that is not there.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TlopsError(f"TLOPS_DEVICE={name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise TlopsError(
                f"TLOPS_DEVICE={name!r} asks for CUDA but {count} CUDA devices are visible: use TLOPS_DEVICE=cpu or "
                "auto, or run on a GPU node (check the driver and CUDA_VISIBLE_DEVICES)"
            )
    return device


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a disabled context on the CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
