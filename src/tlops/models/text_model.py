"""A trained text classifier as the steps use it: texts in, logits out (encoder + head, or the TF-IDF baseline)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from tlops.models.heads import mlp_head
from tlops.models.text_classifier import TextClassifier


class TextModel(Protocol):
    """What evaluate, the gate and the registry need of a text model."""

    def logits(self, texts: list[str]) -> np.ndarray:
        """``(N, classes)`` logits of ``texts``, in order."""
        ...


@dataclass
class EncoderTextModel:
    """A pretrained (or fine-tuned) encoder with mean pooling and a head.

    Attributes:
        encoder: The :class:`~tlops.models.text_encoders.TextEncoder` (tokenizer, model, length limit).
        head: Linear or MLP head on the pooled embedding.
        device: Where the encoder runs.
        batch_size: Texts per forward pass.
    """

    encoder: Any
    head: nn.Module
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 64

    @property
    def classifier(self) -> TextClassifier:
        """The one module (encoder, pooling, head) that is saved and served."""
        return TextClassifier(self.encoder.model, self.head)

    def logits(self, texts: list[str]) -> np.ndarray:
        """Embed the texts (batched by length) and apply the head."""
        from tlops.models.text_embedding import embed_texts

        if not texts:
            return np.zeros((0, _out_features(self.head)), dtype=np.float32)
        features = embed_texts(self.encoder, texts, self.device, batch_size=self.batch_size, desc="texts")
        with torch.no_grad():
            return self.head.eval().to("cpu")(features.float().cpu()).numpy()


def _out_features(head: nn.Module) -> int:
    return [m for m in head.modules() if isinstance(m, nn.Linear)][-1].out_features


def load_encoder_text_model(
    name: str,
    state: dict[str, torch.Tensor],
    num_classes: int,
    head_hidden: int = 0,
    *,
    s3: Any = None,
    cache_dir: Path | None = None,
) -> EncoderTextModel:
    """Rebuild an :class:`EncoderTextModel` from the encoder's name and the saved classifier weights."""
    from tlops.models.text_encoders import load_text_encoder

    encoder = load_text_encoder(name, s3=s3, cache_dir=cache_dir)
    head = (
        mlp_head(encoder.num_features, head_hidden, num_classes)
        if head_hidden
        else nn.Linear(encoder.num_features, num_classes)
    )
    TextClassifier(encoder.model, head).load_state_dict(state)
    encoder.model.eval()
    return EncoderTextModel(encoder, head.eval())
