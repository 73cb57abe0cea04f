"""The dependencies a step runs with, passed in rather than read from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from tlops.backbones import default_cache_dir
from tlops.storage import S3Client


@dataclass
class Runtime:
    """Where and with what a step runs.

    Attributes:
        device: Torch device for the network.
        s3: S3 client for s3:// data and weights, or ``None`` when only local paths are used.
        cache_dir: Cache for weights and images fetched from S3.
        batch_size: Images per forward pass for feature extraction and evaluation.
        workers: DataLoader worker processes.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    s3: S3Client | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    batch_size: int = 64
    workers: int = 0
