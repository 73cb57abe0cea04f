"""Optimizer parameter groups (layer-wise learning-rate decay, no weight decay on norms and biases) and schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from tlops.train.config import TrainConfig

BACKBONE, HEAD = "1.", "2."  # the classifier is Sequential(normalize, backbone, head)


def parameter_groups(
    classifier: nn.Module, blocks: list[list[str]], trainable: list[int], config: TrainConfig
) -> list[dict]:
    """AdamW groups for the head and the trainable blocks.

    Block ``i`` of ``B`` trains at ``lr * layer_decay ** (B - i)`` (the top block at ``lr * layer_decay``), the
    head at ``lr``; one-dimensional tensors (norms, biases) get no weight decay.

    Args:
        classifier: ``Sequential(normalize, backbone, head)``.
        blocks: The backbone's block groups (:func:`~tlops.train.blocks.block_groups`).
        trainable: Indices of the blocks that may train at some epoch.
        config: ``lr``, ``layer_decay``, ``weight_decay``.

    Returns:
        Groups with ``params``, ``lr``, ``weight_decay`` and a ``name``.
    """
    parameters = dict(classifier.named_parameters())
    named: list[tuple[str, float, list[tuple[str, nn.Parameter]]]] = [
        ("head", 1.0, [(n, p) for n, p in parameters.items() if n.startswith(HEAD)])
    ]
    for index in trainable:
        scale = config.layer_decay ** (len(blocks) - index)
        named.append((f"block{index}", scale, [(n, parameters[BACKBONE + n]) for n in blocks[index]]))
    return scaled_groups(named, config)


def scaled_groups(named: list[tuple[str, float, list[tuple[str, nn.Parameter]]]], config: TrainConfig) -> list[dict]:
    """AdamW groups from ``(name, lr scale, [(parameter name, parameter)])`` triples.

    Each trains at ``lr * scale``; one-dimensional tensors (norms, biases) get no weight decay; empty groups are
    left out.
    """
    groups = []
    for name, scale, members in named:
        for suffix, decay, chosen in (
            ("decay", config.weight_decay, [p for _, p in members if p.ndim > 1]),
            ("no_decay", 0.0, [p for _, p in members if p.ndim <= 1]),
        ):
            if chosen:
                groups.append(
                    {"params": chosen, "lr": config.lr * scale, "weight_decay": decay, "name": f"{name}.{suffix}"}
                )
    return groups


def set_trainable(classifier: nn.Module, blocks: list[list[str]], trainable: list[int]) -> None:
    """Let gradients flow into the head and the given blocks only."""
    allowed = {BACKBONE + n for index in trainable for n in blocks[index]}
    for name, parameter in classifier.named_parameters():
        parameter.requires_grad_(name.startswith(HEAD) or name in allowed)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float):
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to zero (per optimizer step)."""
    warmup = max(1, int(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
