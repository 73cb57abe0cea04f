"""Texts as token ids, batched by length: each batch pads to its longest text, so similar lengths travel together.

Training batches come from shuffled pools: each epoch's seeded permutation is cut into pools of many batches, each
pool is sorted by length and cut into batches, and the batches are shuffled. Evaluation batches are sorted by
length. The order is a function of the seed and the epoch only (a resumed run sees the same batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tlops.errors import TlopsError

POOL_BATCHES = 50  # batches per length-sorted pool: little padding, and still a shuffled order


@dataclass(frozen=True)
class EncodedTexts:
    """Token ids of texts with their class indices.

    Attributes:
        input_ids: Token ids of each text (special tokens included, cut to the length limit).
        targets: Class index of each text.
        pad_id: The tokenizer's padding id.
    """

    input_ids: list[list[int]]
    targets: list[int]
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        """Tokens of each text."""
        return [len(ids) for ids in self.input_ids]


def token_limit(tokenizer, max_tokens: int) -> int:
    """``max_tokens``, capped by the tokenizer's own limit (``model_max_length``, when it states a real one)."""
    own = getattr(tokenizer, "model_max_length", None)
    return min(max_tokens, own) if isinstance(own, int) and own > 0 else max_tokens


def encode_texts(tokenizer, texts: Sequence[str], targets: Sequence[int], max_tokens: int) -> EncodedTexts:
    """Tokenize texts (cut to :func:`token_limit`), keeping their targets.

    Raises:
        TlopsError: for texts and targets of different lengths, or a tokenizer without a padding token.
    """
    if len(texts) != len(targets):
        raise TlopsError(f"{len(texts)} texts but {len(targets)} targets: give one class index per text")
    if tokenizer.pad_token_id is None:
        raise TlopsError(f"the tokenizer {type(tokenizer).__name__} has no padding token: set tokenizer.pad_token")
    ids = tokenizer(list(texts), truncation=True, max_length=token_limit(tokenizer, max_tokens))["input_ids"]
    return EncodedTexts([list(row) for row in ids], [int(t) for t in targets], int(tokenizer.pad_token_id))


def length_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, pool_batches: int = POOL_BATCHES
) -> list[list[int]]:
    """One epoch's training batches (indices): shuffled pools sorted by length, cut into batches, shuffled.

    Args:
        lengths: Tokens of each example.
        batch_size: Examples per batch (the last batch of a pool may be smaller).
        seed: The run's seed.
        epoch: The epoch (from 1); the order is a function of ``seed`` and ``epoch`` only.
        pool_batches: Batches per length-sorted pool.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = batch_size * pool_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda index: lengths[index])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches: every example once, by length."""
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(
    encoded: EncodedTexts, indices: Sequence[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, targets)`` of a batch, padded to its longest text, on ``device``."""
    rows = [encoded.input_ids[i] for i in indices]
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), encoded.pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    targets = torch.tensor([encoded.targets[i] for i in indices], dtype=torch.long)
    return input_ids.to(device), attention_mask.to(device), targets.to(device)
