"""One training epoch of the shared loop: forward, backward, accumulation, clipping, optimizer and schedule steps."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from tlops.models.device import autocast
from tlops.train.config import TrainConfig


@dataclass
class OptimizerStep:
    """What happens every ``accumulation`` micro-batches: clip the gradient norm, step, zero, advance the schedule.

    Attributes:
        optimizer: The optimizer.
        schedule: The learning-rate schedule (one step per optimizer step).
        model: The module whose gradients are clipped.
        accumulation: Micro-batches per optimizer step.
        clip_grad_norm: Largest gradient norm (0: no clipping).
    """

    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    model: nn.Module
    accumulation: int = 1
    clip_grad_norm: float = 0.0

    def __call__(self) -> None:
        """Apply the accumulated gradients."""
        if self.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], self.clip_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()


def train_epoch(
    model: nn.Module,
    batches: Iterable,
    num_batches: int,
    criterion: nn.Module,
    step: OptimizerStep,
    mixer,
    device: torch.device,
    distributed: bool,
) -> torch.Tensor:
    """Train over one pass of the batches.

    Args:
        model: The module to run (a DistributedDataParallel wrapper under torchrun).
        batches: ``(images, targets)`` micro-batches (with a ``set_postfix`` for the progress display).
        num_batches: How many there are (the last one always ends an optimizer step).
        criterion: The loss (soft targets after MixUp/CutMix).
        step: The optimizer step.
        mixer: MixUp/CutMix over a batch, or ``None``.
        device: Where to run.
        distributed: Skip the gradient all-reduce of micro-batches that do not end a step.

    Returns:
        This process's loss sum, correct predictions and images (float64).
    """
    totals = torch.zeros(3, dtype=torch.float64)
    for index, (images, targets) in enumerate(batches):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = targets = targets.to(device, non_blocking=True)
        if mixer is not None:
            images, targets = mixer(images, targets)
        boundary = (index + 1) % step.accumulation == 0 or index + 1 == num_batches
        with model.no_sync() if distributed and not boundary else contextlib.nullcontext():
            with autocast(device):
                logits = model(images)
            loss = criterion(logits.float(), targets)
            (loss / step.accumulation).backward()
        if boundary:
            step()
        correct = (logits.argmax(1) == labels).sum().item()
        totals += torch.tensor([loss.item() * len(labels), correct, len(labels)], dtype=torch.float64)
        batches.set_postfix(loss=f"{totals[0] / totals[2]:.3f}")  # type: ignore[attr-defined]
    return totals


def batch_mixer(config: TrainConfig, num_classes: int):
    """MixUp, CutMix or a random choice of the two over each batch, as configured (``None``: off)."""
    from torchvision.transforms import v2 as transforms

    mixers = []
    if config.mixup > 0:
        mixers.append(transforms.MixUp(alpha=config.mixup, num_classes=num_classes))
    if config.cutmix > 0:
        mixers.append(transforms.CutMix(alpha=config.cutmix, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else transforms.RandomChoice(mixers)


class Quiet:
    """A loop without progress output (the other ranks of a distributed run)."""

    def __init__(self, iterable) -> None:
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, **_: object) -> None:
        """Show nothing."""
