"""A text classifier on a pretrained encoder: the encoder, its pooling, and a head on the pooled embedding.

The same module is trained (probe head on cached embeddings, LoRA, LP-FT) and served; the encoder is any Hugging Face
``AutoModel`` (BERT-like: ``last_hidden_state`` out).
"""

from __future__ import annotations

import torch
from torch import nn


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the token embeddings that are not padding (sentence-transformers' mean pooling).

    Args:
        hidden: ``(N, T, D)`` last hidden states.
        attention_mask: ``(N, T)`` 1 for real tokens, 0 for padding.
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class TextClassifier(nn.Module):
    """Encoder, mean pooling and a head: ``(input_ids, attention_mask)`` -> logits.

    Args:
        encoder: A Hugging Face encoder whose output has ``last_hidden_state``.
        head: Linear or MLP head on the pooled embedding (:func:`tlops.models.heads.mlp_head`).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The pooled embedding ``(N, D)``: what the feature cache stores and the head reads."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes)``."""
        return self.head(self.embed(input_ids, attention_mask))
