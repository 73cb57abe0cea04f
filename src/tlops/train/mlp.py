"""``mlp-probe``: new layers (hidden layer, ReLU, dropout, output) trained on cached frozen features in seconds."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from tlops.models.heads import mlp_head
from tlops.train.probe import GlobalScaler


@dataclass
class MlpProbeResult:
    """An MLP head fitted on frozen features.

    Attributes:
        head: The head (the feature scaling folded into its first layer).
        val_accuracy: Validation accuracy of the kept epoch (balanced when class-weighted).
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
    generator = torch.Generator().manual_seed(seed)
    scaler = GlobalScaler().fit(train[0].numpy())
    mean = torch.from_numpy(scaler.mean_).float()
    x_train, x_val = (train[0].float() - mean) / scaler.scale_, (val[0].float() - mean) / scaler.scale_
    y_train, y_val = train[1].long(), val[1].long()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = mlp_head(x_train.shape[1], hidden, num_classes, dropout)
        optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
        criterion = nn.CrossEntropyLoss(weight=class_weights)
        balanced = class_weights is not None
        best = (-1.0, 0, copy.deepcopy(head.state_dict()))
        for epoch in range(1, epochs + 1):
            head.train()
            for batch in torch.randperm(len(y_train), generator=generator).split(256):
                optimizer.zero_grad(set_to_none=True)
                criterion(head(x_train[batch]), y_train[batch]).backward()
                optimizer.step()
            score = _accuracy(head, x_val, y_val, balanced)
            if score > best[0]:
                best = (score, epoch, copy.deepcopy(head.state_dict()))
            elif epoch - best[1] >= patience:
                break
    score, best_epoch, state = best
    head.load_state_dict(state)
    train_accuracy = _accuracy(head, x_train, y_train, balanced)
    first = head[0]
    with torch.no_grad():  # fold the scaling: W((x - m)/s) + b = (W/s)x + (b - (W/s)m)
        first.weight.div_(scaler.scale_)
        first.bias.sub_(first.weight @ mean)
    return MlpProbeResult(head=head.eval(), val_accuracy=score, train_accuracy=train_accuracy, best_epoch=best_epoch)
