"""Parameter-based transfer: fine-tune the backbone from the probe head (LP-FT), or keep the probe.

Strategies:
    ``linear-probe``  keep the frozen backbone and the head fitted on cached features.
    ``full``          fine-tune every layer, starting from the probe head (LP-FT), at a low learning rate.
    ``auto``          freeze when the features already separate the classes or data is small; otherwise
                      fine-tune, and never keep a fine-tuned model that validates worse than the probe.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from tlops.io.progress import progress
from tlops.models.device import autocast
from tlops.train.config import STRATEGIES as STRATEGIES  # re-exported
from tlops.train.config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class EpochRecord:
    """Loss and accuracy after one epoch (epoch 0 is the probe before fine-tuning)."""

    epoch: int
    train_loss: float | None
    train_accuracy: float | None
    val_loss: float
    val_accuracy: float


def decide_strategy(
    config: TrainConfig, probe_val_accuracy: float, train_counts: dict[str, int]
) -> tuple[str, list[str]]:
    """Pick ``linear-probe`` or ``full`` for ``auto`` (explicit strategies pass through), with reasons.

    Freeze when the source features already fit the target (high probe accuracy: the domains are close) or
    when there is too little data to fine-tune safely; fine-tune otherwise.
    """
    if config.strategy != "auto":
        return config.strategy, [f"strategy {config.strategy!r} was requested"]
    smallest = min(train_counts.values())
    if probe_val_accuracy >= config.auto_probe_accuracy:
        return "linear-probe", [
            f"the frozen features already separate the classes (probe val accuracy {probe_val_accuracy:.3f} "
            f">= {config.auto_probe_accuracy}): target is close to the source, keep the backbone frozen"
        ]
    if smallest < config.auto_min_images_per_class:
        return "linear-probe", [
            f"the smallest class has {smallest} training images (< {config.auto_min_images_per_class}): "
            "too little data to fine-tune without overfitting, keep the backbone frozen"
        ]
    return "full", [
        f"probe val accuracy {probe_val_accuracy:.3f} < {config.auto_probe_accuracy}: the target differs from "
        f"the source, and {smallest}+ training images per class support fine-tuning all layers (LP-FT)"
    ]


def balanced_class_weights(targets: list[int], num_classes: int) -> torch.Tensor:
    """Weights ``n / (num_classes * n_c)`` per class, as scikit-learn's ``balanced`` (absent classes get 0)."""
    counts = torch.bincount(torch.tensor(targets, dtype=torch.long), minlength=num_classes).float()
    weights = len(targets) / (num_classes * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def _set_train_mode(model: nn.Module, freeze_batchnorm: bool) -> None:
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


@torch.no_grad()
def evaluate_loss(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of a classifier on a loader."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for images, targets in loader:
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with autocast(device):
            logits = model(images)
        total_loss += nn.functional.cross_entropy(logits.float(), targets, reduction="sum").item()
        correct += (logits.argmax(1) == targets).sum().item()
        count += len(targets)
    return total_loss / count, correct / count


def fine_tune_all_layers(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    config: TrainConfig,
    device: torch.device,
    keep_probe_if_better: bool,
    class_weights: torch.Tensor | None = None,
) -> tuple[nn.Module, list[EpochRecord], int]:
    """LP-FT: train every layer of a classifier whose head is already fitted, keeping the best epoch.

    Args:
        model: Classifier with the probe head in place.
        train_loader: Augmented training images.
        val_loader: Validation images (evaluation preprocessing).
        config: Learning rate, epochs and the rest.
        device: Where to train.
        keep_probe_if_better: Let epoch 0 (the probe) win when no epoch validates better.
        class_weights: Per-class loss weights, or ``None`` for an unweighted loss.

    Returns:
        The model with the best weights loaded, the history and the best epoch.
    """
    torch.manual_seed(config.seed)
    # channels_last: faster convolutions on CUDA and on this CPU too (about 1.5x for a training step here).
    model = model.to(device=device, memory_format=torch.channels_last)
    val_loss, val_accuracy = evaluate_loss(model, val_loader, device)
    history = [EpochRecord(0, None, None, val_loss, val_accuracy)]
    best_epoch, best_accuracy = 0, val_accuracy if keep_probe_if_better else -1.0
    best_state = copy.deepcopy(model.state_dict()) if keep_probe_if_better else None

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * len(train_loader)
    warmup = max(1, int(config.warmup_fraction * total_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            (step + 1) / warmup
            if step < warmup
            else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))
        ),
    )
    weight = class_weights.to(device) if class_weights is not None else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    for epoch in range(1, config.epochs + 1):
        _set_train_mode(model, config.freeze_batchnorm)
        running_loss, correct, count = 0.0, 0, 0
        batches = progress(train_loader, f"fine-tune epoch {epoch}/{config.epochs}", unit="batch")
        for images, targets in batches:
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            targets = targets.to(device, non_blocking=True)
            with autocast(device):
                logits = model(images)
            loss = criterion(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running_loss += loss.item() * len(targets)
            correct += (logits.argmax(1) == targets).sum().item()
            count += len(targets)
            batches.set_postfix(loss=f"{running_loss / count:.3f}")
        val_loss, val_accuracy = evaluate_loss(model, val_loader, device)
        history.append(EpochRecord(epoch, running_loss / count, correct / count, val_loss, val_accuracy))
        logger.info(
            "epoch %d: train loss %.4f, val loss %.4f, val acc %.4f",
            epoch,
            running_loss / count,
            val_loss,
            val_accuracy,
        )
        if val_accuracy > best_accuracy:
            best_epoch, best_accuracy = epoch, val_accuracy
            best_state = copy.deepcopy(model.state_dict())
    assert best_state is not None
    model.load_state_dict(best_state)
    return model.to(memory_format=torch.contiguous_format).eval(), history, best_epoch
