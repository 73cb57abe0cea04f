"""Layer-wise learning rates for a BERT-like text classifier: embeddings lowest, each layer higher, the head at lr.

The encoder's depth comes from its parameter names: ``embeddings`` first, then ``layer.N`` (BERT, RoBERTa,
MiniLM, DistilBERT's ``transformer.layer.N``); any other encoder parameter (a pooler, a final norm) counts as the top
layer. LoRA adapters inside a layer (``...layer.N.attention.self.query.lora_A...``) are that layer's.
"""

from __future__ import annotations

import re

from torch import nn

from tlops.errors import TlopsError
from tlops.train.config import TrainConfig
from tlops.train.optim import scaled_groups

HEAD = "head."
_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")


def layer_depth(name: str, num_layers: int) -> int:
    """Depth of an encoder parameter: 0 for the embeddings, ``N + 1`` for layer ``N``, ``num_layers`` otherwise."""
    match = _LAYER.search(name)
    if match:
        return int(match.group(1)) + 1
    return 0 if "embeddings" in name else num_layers


def encoder_layers(model: nn.Module) -> int:
    """The number of transformer layers (``layer.N``) of a text classifier's encoder.

    Raises:
        TlopsError: when the encoder has no ``layer.N`` parameters (not BERT-like).
    """
    found = {int(m.group(1)) for name, _ in model.named_parameters() if (m := _LAYER.search(name))}
    if not found:
        raise TlopsError(
            f"the encoder {type(getattr(model, 'encoder', model)).__name__} has no layer.N parameters: fine-tuning "
            "text needs a BERT-like encoder (BERT, RoBERTa, MiniLM, DistilBERT)"
        )
    return max(found) + 1


def text_parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW groups of a text classifier's trainable parameters, with layer-wise learning-rate decay.

    With ``L`` layers, the head trains at ``lr``, layer ``N`` at ``lr * layer_decay ** (L - N)`` and the embeddings at
    ``lr * layer_decay ** (L + 1)`` (:func:`tlops.train.optim.parameter_groups`'s rule, the embeddings being block 0);
    norms and biases get no weight decay. Frozen parameters are left out.

    Args:
        model: A :class:`~tlops.models.text_classifier.TextClassifier` (``encoder.*`` and ``head.*``).
        config: ``lr``, ``layer_decay``, ``weight_decay``.
    """
    num_layers = encoder_layers(model)
    by_depth: dict[int, list[tuple[str, nn.Parameter]]] = {}
    head: list[tuple[str, nn.Parameter]] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.startswith(HEAD):
            head.append((name, parameter))
        else:
            by_depth.setdefault(layer_depth(name, num_layers), []).append((name, parameter))
    named = [("head", 1.0, head)]
    for depth in sorted(by_depth, reverse=True):
        label = "embeddings" if depth == 0 else f"layer{depth - 1}"
        named.append((label, config.layer_decay ** (num_layers + 1 - depth), by_depth[depth]))
    return scaled_groups(named, config)
