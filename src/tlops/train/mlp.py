"""``mlp-probe``: new layers (hidden layer, ReLU, dropout, output) trained on cached frozen features in seconds."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tlops.models.heads import mlp_head
from tlops.train.probe import GlobalScaler

BATCH = 256
"""Mini-batch of the MLP probe's AdamW steps."""


@dataclass
class MlpProbeResult:
    """An MLP head fitted on frozen features.

    Attributes:
        head: The head (the feature scaling folded into its first layer).
        val_accuracy: Validation accuracy of the kept epoch (balanced when class-weighted; nan without validation).
        train_accuracy: Training accuracy of the kept epoch.
        best_epoch: The kept epoch.
    """

    head: nn.Sequential
    val_accuracy: float
    train_accuracy: float
    best_epoch: int


def _accuracy(head: nn.Module, features: torch.Tensor, targets: torch.Tensor, balanced: bool) -> float:
    head.eval()
    with torch.no_grad():
        predicted = head(features).argmax(1)
    if not balanced:  # exact counts: a float32 mean would break ties with the linear probe by rounding
        return int((predicted == targets).sum()) / len(targets)
    recalls = [int((predicted[targets == c] == c).sum()) / int((targets == c).sum()) for c in targets.unique()]
    return sum(recalls) / len(recalls)


class _Trainer:
    """The MLP probe's training: features scaled as the linear probe's, AdamW on mini-batches, seeded."""

    def __init__(
        self,
        train: tuple[torch.Tensor, torch.Tensor],
        num_classes: int,
        hidden: int,
        dropout: float,
        seed: int,
        class_weights: torch.Tensor | None,
    ) -> None:
        scaler = GlobalScaler().fit(train[0].numpy())
        self.mean, self.scale = torch.from_numpy(scaler.mean_).float(), scaler.scale_
        self.x, self.y = self.scaled(train[0]), train[1].long()
        self.generator = torch.Generator().manual_seed(seed)
        self.seed = seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = mlp_head(self.x.shape[1], hidden, num_classes, dropout)
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=1e-3, weight_decay=1e-2)
        self.criterion = nn.CrossEntropyLoss(weight=class_weights)

    def scaled(self, features: torch.Tensor) -> torch.Tensor:
        """Features centred and divided by the training features' mean standard deviation."""
        return (features.float() - self.mean) / self.scale

    def run(self, epochs: int, after_epoch: Callable[[int], bool]) -> None:
        """Train up to ``epochs`` passes; stop early when ``after_epoch(epoch)`` returns ``False``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for epoch in range(1, epochs + 1):
                self.head.train()
                for batch in torch.randperm(len(self.y), generator=self.generator).split(BATCH):
                    self.optimizer.zero_grad(set_to_none=True)
                    self.criterion(self.head(self.x[batch]), self.y[batch]).backward()
                    self.optimizer.step()
                if not after_epoch(epoch):
                    break

    def folded(self) -> nn.Sequential:
        """The head applying to raw features: the scaling folded into the first layer, in eval mode."""
        first = self.head[0]
        with torch.no_grad():  # W((x - m)/s) + b = (W/s)x + (b - (W/s)m)
            first.weight.div_(self.scale)
            first.bias.sub_(first.weight @ self.mean)
        return self.head.eval()


def fit_mlp_head(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    hidden: int = 512,
    dropout: float = 0.2,
    epochs: int = 100,
    patience: int = 20,
    seed: int = 0,
    class_weights: torch.Tensor | None = None,
) -> MlpProbeResult:
    """Train an MLP head on cached features with AdamW, keeping the epoch that validates best.

    Features are centered and divided by their mean standard deviation (as the linear probe), folded into the
    first layer afterwards, so the head applies to raw features.

    Args:
        train: Training features and class ids.
        val: Validation features and class ids.
        num_classes: Outputs.
        hidden: Hidden width.
        dropout: Dropout before the output layer.
        epochs: Most passes over the training features (mini-batches of 256).
        patience: Stop after this many epochs without a better validation accuracy.
        seed: Seed of the initialisation and the order.
        class_weights: Per-class loss weights (class-weighted training; then balanced validation accuracy).
    """
    trainer = _Trainer(train, num_classes, hidden, dropout, seed, class_weights)
    x_val, y_val = trainer.scaled(val[0]), val[1].long()
    balanced = class_weights is not None
    best = (-1.0, 0, copy.deepcopy(trainer.head.state_dict()))

    def keep_best(epoch: int) -> bool:
        nonlocal best
        score = _accuracy(trainer.head, x_val, y_val, balanced)
        if score > best[0]:
            best = (score, epoch, copy.deepcopy(trainer.head.state_dict()))
        return epoch - best[1] < patience

    trainer.run(epochs, keep_best)
    score, best_epoch, state = best
    trainer.head.load_state_dict(state)
    train_accuracy = _accuracy(trainer.head, trainer.x, trainer.y, balanced)
    return MlpProbeResult(trainer.folded(), val_accuracy=score, train_accuracy=train_accuracy, best_epoch=best_epoch)


def fit_mlp_head_for(
    train: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    epochs: int,
    hidden: int = 512,
    dropout: float = 0.2,
    seed: int = 0,
    class_weights: torch.Tensor | None = None,
) -> MlpProbeResult:
    """Train an MLP head for exactly ``epochs`` passes (a budget chosen beforehand, e.g. by cross-validation)."""
    trainer = _Trainer(train, num_classes, hidden, dropout, seed, class_weights)
    trainer.run(epochs, lambda epoch: True)
    train_accuracy = _accuracy(trainer.head, trainer.x, trainer.y, class_weights is not None)
    return MlpProbeResult(trainer.folded(), val_accuracy=float("nan"), train_accuracy=train_accuracy, best_epoch=epochs)


def mlp_logits_at(
    train: tuple[torch.Tensor, torch.Tensor],
    held_out: torch.Tensor,
    num_classes: int,
    checkpoints: Sequence[int],
    hidden: int = 512,
    dropout: float = 0.2,
    seed: int = 0,
    class_weights: torch.Tensor | None = None,
) -> dict[int, np.ndarray]:
    """The held-out features' logits after each of ``checkpoints`` epochs of one training run (for cross-validation).

    Returns:
        ``{epochs: (N, num_classes) logits}`` for every checkpoint.
    """
    trainer = _Trainer(train, num_classes, hidden, dropout, seed, class_weights)
    x_held = trainer.scaled(held_out)
    wanted, logits = set(checkpoints), {}

    def record(epoch: int) -> bool:
        if epoch in wanted:
            trainer.head.eval()
            with torch.no_grad():
                logits[epoch] = trainer.head(x_held).double().numpy()
        return True

    trainer.run(max(checkpoints), record)
    return logits
