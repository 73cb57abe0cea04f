"""Embedding texts with a frozen text encoder at the hardware's speed, and what an encoder costs to run."""

from __future__ import annotations

import time
from typing import Any

import torch

from tlops.io.progress import progress
from tlops.models.device import autocast
from tlops.models.extraction import count_parameters
from tlops.models.text_classifier import mean_pool
from tlops.models.text_encoders import TextEncoder


def tokenize(encoder: TextEncoder, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, special tokens included, truncated to ``encoder.max_length`` (no padding)."""
    if not texts:
        return []
    encoded = encoder.tokenizer(
        list(texts), truncation=True, max_length=encoder.max_length, padding=False, return_attention_mask=False
    )
    return [list(ids) for ids in encoded["input_ids"]]


def length_sorted_batches(ids: list[list[int]], batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar token length, longest first (a stable sort, so deterministic).

    Batching texts of similar length pads little; the longest batch first shows a memory limit at once.
    """
    order = sorted(range(len(ids)), key=lambda row: -len(ids[row]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def pad_batch(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` int64 ``(N, T)``, right-padded to the longest sequence ``T``."""
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for index, row in enumerate(ids):
        input_ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[index, : len(row)] = 1
    return input_ids, mask


def pad_id(encoder: TextEncoder) -> int:
    """The tokenizer's padding token id (0 when it has none: the attention mask hides padding anyway)."""
    value = getattr(encoder.tokenizer, "pad_token_id", None)
    return int(value) if value is not None else 0


@torch.inference_mode()
def embed_texts(
    encoder: TextEncoder, texts: list[str], device: torch.device, batch_size: int = 64, desc: str = ""
) -> torch.Tensor:
    """Mean-pooled embeddings of ``texts``, float32 ``(N, D)`` on the CPU, row ``i`` for ``texts[i]``.

    The texts are tokenized at once (the fast tokenizer runs in Rust), run in batches sorted by token length (less
    padding), pooled by :func:`tlops.models.text_classifier.mean_pool` and put back in input order. The encoder
    runs in inference mode, with bf16 autocast on CUDA. Progress counts texts per second.

    Args:
        encoder: The frozen text encoder.
        texts: The texts.
        device: Where the encoder runs.
        batch_size: Texts per forward pass.
        desc: What the progress reports call the pass (default: the encoder's name).
    """
    ids = tokenize(encoder, texts)
    output = torch.empty(len(ids), encoder.num_features, dtype=torch.float32)
    if not ids:
        return output
    model = encoder.model.eval().to(device)
    padding = pad_id(encoder)
    batches = length_sorted_batches(ids, max(1, batch_size))
    bar = progress(batches, desc or f"{encoder.name} embeddings", unit="batch")
    start, done = time.perf_counter(), 0
    for rows in bar:
        input_ids, mask = pad_batch([ids[row] for row in rows], padding)
        input_ids, mask = input_ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        with autocast(device):
            hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        output[torch.tensor(rows)] = mean_pool(hidden.float(), mask).cpu()
        done += len(rows)
        bar.set_postfix(texts_per_s=f"{done / max(time.perf_counter() - start, 1e-9):.1f}")
    return output


@torch.inference_mode()
def measure_text_latency(encoder: TextEncoder, text: str, device: torch.device, repeats: int = 5) -> float:
    """Median seconds to embed one text on ``device`` (tokenizing included; after one warm-up pass)."""
    model = encoder.model.eval().to(device)
    timings = []
    for index in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        input_ids, mask = pad_batch(tokenize(encoder, [text]), pad_id(encoder))
        input_ids, mask = input_ids.to(device), mask.to(device)
        with autocast(device):
            mean_pool(model(input_ids=input_ids, attention_mask=mask).last_hidden_state, mask)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index:
            timings.append(time.perf_counter() - start)
    return sorted(timings)[len(timings) // 2]


@torch.inference_mode()
def count_text_flops(encoder: TextEncoder, text: str) -> int:
    """Floating-point operations of one forward pass on one text (FlopCounterMode: matmuls, two per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    input_ids, mask = pad_batch(tokenize(encoder, [text]), pad_id(encoder))
    model = encoder.model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=input_ids.to(device), attention_mask=mask.to(device))
    return int(counter.get_total_flops())


def text_encoder_cost(encoder: TextEncoder, text: str, device: torch.device) -> dict[str, Any]:
    """Parameters, FLOPs and measured latency of one text (``text``: a typical one of the dataset) on ``device``.

    Returns:
        ``params``, ``flops``, ``latency_ms``, ``tokens`` (of ``text``) and ``device``.
    """
    return {
        "params": count_parameters(encoder.model),
        "flops": count_text_flops(encoder, text),
        "latency_ms": round(1000 * measure_text_latency(encoder, text, device), 3),
        "tokens": len(tokenize(encoder, [text])[0]),
        "device": str(device),
    }
