"""Checks of command-line options shared by several commands: one-line errors before anything runs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tlops.data.archives import ArchiveLimits
from tlops.errors import TlopsError
from tlops.steps.config import DEFAULT_BACKBONE

if TYPE_CHECKING:
    from tlops.train.config import TrainConfig
    from tlops.train.finetune import Distributed


def backbone_list(text: str) -> list[str]:
    """The names of a comma-separated ``--backbones`` option, each checked (no torch import)."""
    from tlops.models.names import check_backbone_name

    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise TlopsError(f"--backbones is empty; name at least one, e.g. {DEFAULT_BACKBONE}")
    for name in names:
        check_backbone_name(name)
    return names


def check_positive(**values: int | float | None) -> None:
    """Refuse a zero or negative option (``None`` means not given)."""
    for name, value in values.items():
        if value is not None and value <= 0:
            raise TlopsError(f"--{name.replace('_', '-')} must be positive, got {value}")


def archive_limits() -> ArchiveLimits:
    """Archive expansion limits, from ``TLOPS_ARCHIVE_MAX_BYTES`` / ``_MAX_RATIO`` / ``_MAX_MEMBERS`` when set."""
    return ArchiveLimits.from_environment(os.environ)


def train_config(args) -> TrainConfig:
    """The fine-tuning settings of ``run``, ``submit``, ``schedule`` and ``fine-tune`` (checked on creation)."""
    from tlops.train.config import TrainConfig

    return TrainConfig(
        strategy=args.strategy,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        class_weighted=args.class_weighted,
        unfreeze_blocks=args.unfreeze_blocks,
        surgical_blocks=args.surgical_blocks,
        layer_decay=args.layer_decay,
        swa_epochs=args.swa_epochs,
        hflip=args.hflip,
        trivial_augment=args.trivial_augment,
        mixup=args.mixup,
        cutmix=args.cutmix,
        grad_accumulation=args.grad_accumulation,
        torch_compile=args.torch_compile,
    )


def distributed_from_environment(environ) -> Distributed:
    """Rank and world size under torchrun (``RANK``, ``WORLD_SIZE``); joins the process group when there are more.

    The backend is NCCL when CUDA is present, gloo otherwise.
    """
    from tlops.train.finetune import Distributed

    world_size = int(environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size())
