"""The trained classifier as tensors: the weights to save, and the network rebuilt from weights and config.

The files that hold them belong to the fine-tune step's output (:mod:`tlops.steps.outputs`).
"""

from __future__ import annotations

import torch
from torch import nn

from tlops.data.preprocessing import DataConfig
from tlops.models.backbones import build_classifier, load_backbone
from tlops.models.heads import mlp_head


def classifier_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The classifier's weights, on the CPU and contiguous (as safetensors stores them)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def rebuild_classifier(
    backbone: str,
    data_config: DataConfig,
    num_classes: int,
    state: dict[str, torch.Tensor],
    head_hidden: int = 0,
) -> nn.Module:
    """Rebuild a classifier (the architecture, without downloading weights) and load its weights.

    Args:
        backbone: Backbone name the classifier was built on.
        data_config: The preprocessing its weights expect (input size, mean, std).
        num_classes: Outputs of the head.
        state: The weights :func:`classifier_state` returned.
        head_hidden: Hidden width of an MLP head (0: a linear head).

    Returns:
        The classifier in eval mode.
    """
    network = load_backbone(backbone, image_size=data_config.input_size, pretrained=False)
    network.data_config = data_config
    head = mlp_head(network.num_features, head_hidden, num_classes) if head_hidden else None
    model = build_classifier(network, num_classes, head)
    model.load_state_dict(state)
    return model.eval()
