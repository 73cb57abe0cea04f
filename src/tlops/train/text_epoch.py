"""One text training epoch, and a text classifier's logits and validation loss over encoded texts."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from tlops.models.device import autocast
from tlops.train.epoch import OptimizerStep
from tlops.train.text_batches import EncodedTexts, collate, sorted_batches

EVAL_BATCH = 64


def train_text_epoch(
    model: nn.Module,
    encoded: EncodedTexts,
    batches: Iterable[list[int]],
    num_batches: int,
    criterion: nn.Module,
    step: OptimizerStep,
    device: torch.device,
) -> torch.Tensor:
    """Train over one epoch's batches (bf16 autocast on CUDA).

    Args:
        model: The text classifier, in train mode.
        encoded: The training texts.
        batches: Index lists (with a ``set_postfix`` for the progress display).
        num_batches: How many there are (the last one always ends an optimizer step).
        criterion: The loss.
        step: The optimizer step (every ``step.accumulation`` batches).
        device: Where to run.

    Returns:
        The loss sum, correct predictions and texts (float64).
    """
    totals = torch.zeros(3, dtype=torch.float64)
    for index, indices in enumerate(batches):
        input_ids, attention_mask, targets = collate(encoded, indices, device)
        with autocast(device):
            logits = model(input_ids, attention_mask)
        loss = criterion(logits.float(), targets)
        (loss / step.accumulation).backward()
        if (index + 1) % step.accumulation == 0 or index + 1 == num_batches:
            step()
        correct = (logits.argmax(1) == targets).sum().item()
        totals += torch.tensor([loss.item() * len(targets), correct, len(targets)], dtype=torch.float64)
        batches.set_postfix(loss=f"{totals[0] / totals[2]:.3f}")  # type: ignore[attr-defined]
    return totals


@torch.no_grad()
def text_logits(
    model: nn.Module, encoded: EncodedTexts, device: torch.device, batch_size: int = EVAL_BATCH
) -> torch.Tensor:
    """Logits ``(N, classes)`` of every text, in the texts' order (float32, on the CPU); the model in eval mode."""
    model.eval()
    rows: dict[int, torch.Tensor] = {}
    for indices in sorted_batches(encoded.lengths, batch_size):
        input_ids, attention_mask, _ = collate(encoded, indices, device)
        with autocast(device):
            logits = model(input_ids, attention_mask).float().cpu()
        rows.update(zip(indices, logits, strict=True))
    return torch.stack([rows[i] for i in range(len(encoded))])


def evaluate_texts(model: nn.Module, encoded: EncodedTexts, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of a text classifier on encoded texts."""
    logits = text_logits(model, encoded, device)
    targets = torch.tensor(encoded.targets, dtype=torch.long)
    loss = nn.functional.cross_entropy(logits, targets).item()
    return loss, (logits.argmax(1) == targets).float().mean().item()
