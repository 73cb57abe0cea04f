"""Classification heads on top of a backbone's pooled features."""

from __future__ import annotations

from torch import nn


def mlp_head(num_features: int, hidden: int, num_classes: int, dropout: float = 0.2) -> nn.Sequential:
    """New layers on the frozen features: Linear, ReLU, Dropout, Linear (the seed's Dense 1024 ReLU, Dense softmax).

    Args:
        num_features: Width of the backbone's features.
        hidden: Width of the hidden layer.
        num_classes: Outputs.
        dropout: Dropout before the output layer (training only).
    """
    return nn.Sequential(
        nn.Linear(num_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
    )


def head_shape(head: nn.Module) -> tuple[int, int, int]:
    """``(in_features, hidden, out_features)`` of a linear head (hidden 0) or an :func:`mlp_head`."""
    if isinstance(head, nn.Linear):
        return head.in_features, 0, head.out_features
    layers = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(layers) != 2:
        raise ValueError(f"unsupported head {head}")
    return layers[0].in_features, layers[0].out_features, layers[1].out_features
