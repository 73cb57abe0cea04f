"""The network part of a served text classifier: texts in, logits out, saved to and loaded from a folder.

Two kinds, one small interface (:class:`TextLogits`):

- ``transformer``: a :class:`~tlops.models.text_classifier.TextClassifier` and its tokenizer. Saved as a
  self-contained Hugging Face folder (``encoder/``: ``save_pretrained`` of the encoder and of the tokenizer) and
  the head's weights (``head.safetensors``); loaded with no network access and nothing downloaded. Texts are
  truncated to ``max_length`` tokens and batched by token length (longest first), so a batch pads little.
- ``tfidf``: the TF-IDF baseline, whatever its ``save(folder)`` wrote, read back by its ``load(folder)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from torch import nn

ENCODER_DIR = "encoder"
HEAD_FILE = "head.safetensors"
POOLINGS = ("mean",)


class TextLogits(Protocol):
    """What the served model needs of a text network."""

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), classes)`` logits, in the order of ``texts``."""
        ...


class TransformerLogits:
    """A :class:`~tlops.models.text_classifier.TextClassifier` and its tokenizer as a :class:`TextLogits`.

    Args:
        classifier: Encoder, mean pooling and head: ``(input_ids, attention_mask)`` -> logits.
        tokenizer: The encoder's Hugging Face tokenizer.
        max_length: Tokens kept of each text (the rest is cut off).
        batch_size: Texts per forward pass.
    """

    def __init__(self, classifier: nn.Module, tokenizer: Any, max_length: int, batch_size: int = 32) -> None:
        self.classifier = classifier.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits of each text; the texts run in batches of similar token length, the answer in the given order."""
        import torch

        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        order = np.argsort([-len(row) for row in ids], kind="stable")
        out: np.ndarray | None = None
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, return_tensors="pt")
            with torch.inference_mode():
                logits = self.classifier(batch["input_ids"], batch["attention_mask"]).float().numpy()
            if out is None:
                out = np.empty((len(ids), logits.shape[1]), dtype=np.float32)
            out[chunk] = logits
        return out if out is not None else np.empty((0, 0), dtype=np.float32)

    def save(self, folder: Path) -> Path:
        """Write the encoder and tokenizer (``encoder/``) and the head (``head.safetensors``) into ``folder``."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        encoder = _plain_encoder(self.classifier.encoder)
        encoder.save_pretrained(folder / ENCODER_DIR)
        self.tokenizer.save_pretrained(folder / ENCODER_DIR)
        head = {name: tensor.detach().cpu().contiguous() for name, tensor in self.classifier.head.state_dict().items()}
        save_file(head, folder / HEAD_FILE)
        return folder

    @classmethod
    def load(cls, folder: Path, max_length: int, batch_size: int = 32, pooling: str = "mean") -> TransformerLogits:
        """Read what :meth:`save` wrote; nothing is downloaded.

        Raises:
            ValueError: The pooling is not one the classifier has.
        """
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        from tlops.models.text_classifier import TextClassifier

        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}: the text classifier pools by {', '.join(POOLINGS)}")
        folder = Path(folder)
        encoder = AutoModel.from_pretrained(folder / ENCODER_DIR, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder / ENCODER_DIR, local_files_only=True)
        head = head_from_weights(load_file(folder / HEAD_FILE))
        return cls(TextClassifier(encoder, head), tokenizer, max_length, batch_size)


def head_from_weights(weights: dict[str, Any]) -> nn.Module:
    """The head whose ``state_dict`` is ``weights``: a linear layer or a :func:`~tlops.models.heads.mlp_head`.

    Raises:
        ValueError: The weights are of neither.
    """
    from torch import nn

    from tlops.models.heads import mlp_head

    if set(weights) == {"weight", "bias"}:
        out_features, in_features = weights["weight"].shape
        head: nn.Module = nn.Linear(in_features, out_features)
    elif set(weights) == {"0.weight", "0.bias", "3.weight", "3.bias"}:
        hidden, in_features = weights["0.weight"].shape
        head = mlp_head(in_features, hidden, weights["3.weight"].shape[0])
    else:
        raise ValueError(f"unsupported head weights {sorted(weights)}: expected a linear head or an MLP head")
    head.load_state_dict(weights)
    return head.eval()


def load_tfidf(folder: Path) -> TextLogits:
    """The TF-IDF baseline saved in ``folder`` (:meth:`tlops.models.tfidf.TfidfClassifier.load`)."""
    from tlops.models.tfidf import TfidfClassifier

    return TfidfClassifier.load(folder)


TfidfLoader = Callable[[Path], TextLogits]


def _plain_encoder(encoder: nn.Module) -> nn.Module:
    """The encoder with any LoRA adapters merged into its weights (a copy; the trained model is left as it is).

    Raises:
        ValueError: Adapter layers are left that ``save_pretrained`` would save under names a plain encoder does
            not load (adapters injected without a ``PeftModel`` around the encoder).
    """
    if hasattr(encoder, "merge_and_unload"):
        encoder = copy.deepcopy(encoder).merge_and_unload()
    left = sorted({type(m).__name__ for m in encoder.modules() if type(m).__module__.startswith("peft.")})
    if left:
        raise ValueError(
            f"the encoder still has adapter layers ({', '.join(left)}): wrap it with peft.get_peft_model, or merge "
            "the adapters into its weights, before serving it"
        )
    return encoder
