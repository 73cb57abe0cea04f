"""The dependencies a step runs with, passed in rather than read from the environment.

:func:`runtime_from_environment` builds one from environment variables; only the edges (CLI, KFP components)
call it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tlops.errors import TlopsError
from tlops.io.paths import check_cache_dir, default_cache_dir
from tlops.io.storage import S3Client, make_s3_client
from tlops.models.device import resolve_device

MAX_DEFAULT_WORKERS = 8


@dataclass
class Runtime:
    """Where and with what a step runs.

    Attributes:
        device: Torch device for the network.
        s3: S3 client for s3:// data and weights, or ``None`` when only local paths are used.
        cache_dir: Cache for weights and images fetched from S3.
        batch_size: Images per forward pass for feature extraction and evaluation.
        workers: DataLoader worker processes (images decode in parallel; they share tensors through /dev/shm).
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    s3: S3Client | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    batch_size: int = 64
    workers: int = 0

    @property
    def pin_memory(self) -> bool:
        """Page-locked host batches, for asynchronous copies to a CUDA device."""
        return self.device.type == "cuda"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what a container's cpuset allows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(cpus: int) -> int:
    """DataLoader workers for ``cpus`` usable CPUs: all of them, capped at :data:`MAX_DEFAULT_WORKERS`."""
    return max(0, min(cpus, MAX_DEFAULT_WORKERS))


def runtime_from_environment(environ: Mapping[str, str]) -> Runtime:
    """A runtime configured by ``TLOPS_DEVICE``, ``TLOPS_CACHE_DIR``, ``TLOPS_WORKERS`` and the AWS variables.

    Args:
        environ: The environment (``os.environ`` at the edges, a dict in tests).

    Raises:
        TlopsError: when ``TLOPS_CACHE_DIR`` (or the default cache folder) is not a writable folder, or
            ``TLOPS_WORKERS`` is not a whole number.
    """
    cache_dir = check_cache_dir(environ)
    workers = environ.get("TLOPS_WORKERS", "").strip()
    if workers and not workers.isdigit():
        raise TlopsError(f"TLOPS_WORKERS={workers!r} is not a whole number; set it to 0 or more, or unset it")
    return Runtime(
        device=resolve_device(environ.get("TLOPS_DEVICE", "auto")),
        s3=make_s3_client(),
        cache_dir=cache_dir,
        workers=int(workers) if workers else default_workers(available_cpus()),
    )
