"""A backbone's blocks, from its own stage structure, and which of them each strategy trains.

timm models describe their stages with ``group_matcher`` (stem, then one group per stage, deepest last); for
other networks (torchvision, torch.hub) the blocks are the children of the first module that has more than one
child with parameters (``features.0 .. features.8`` of a torchvision EfficientNet, ``conv1 .. layer4`` of a
ResNet).
"""

from __future__ import annotations

from torch import nn

from tlops.train.config import TrainConfig
from tlops.train.strategies import STRATEGIES, check_unfreeze_blocks

__all__ = ["block_groups", "check_unfreeze_blocks", "trained_blocks"]


def block_groups(backbone: nn.Module) -> list[list[str]]:
    """Parameter names of the backbone, grouped by block, from the input (index 0) to the output.

    Args:
        backbone: The feature extractor (without the head).

    Returns:
        One list of parameter names per block; every parameter is in exactly one.
    """
    names = [name for name, _ in backbone.named_parameters()]
    matcher = getattr(backbone, "group_matcher", None)
    if callable(matcher):
        from timm.models import group_parameters

        grouped = group_parameters(backbone, matcher(coarse=True))
        groups = [list(grouped[key]) for key in sorted(grouped)]
    else:
        groups = _children_groups(backbone)
    groups = [group for group in groups if group]
    if sorted(n for group in groups for n in group) != sorted(names):  # pragma: no cover - a matcher bug
        groups = [names]
    return groups


def _children_groups(module: nn.Module, prefix: str = "") -> list[list[str]]:
    children = [(name, child) for name, child in module.named_children() if any(True for _ in child.parameters())]
    own = [prefix + name for name, _ in module.named_parameters(recurse=False)]
    if len(children) == 1 and not own:
        name, child = children[0]
        return _children_groups(child, f"{prefix}{name}.")
    groups = [[f"{prefix}{name}.{p}" for p, _ in child.named_parameters()] for name, child in children]
    return ([own] if own else []) + groups


def trained_blocks(strategy: str, num_blocks: int, config: TrainConfig, epoch: int = 1) -> list[int]:
    """Indices of the blocks the strategy named ``strategy`` trains in an epoch (the head always trains).

    The choice is the registered strategy's (:class:`~tlops.train.strategies.Strategy`).

    Raises:
        TlopsError: when ``unfreeze_blocks`` exceeds the block count.
    """
    return STRATEGIES.get(strategy).trained_blocks(num_blocks, config, epoch)
