"""Choosing the compute device."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """Return CUDA when present (for ``auto``), else the CPU; an explicit name is used as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a disabled context on the CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
