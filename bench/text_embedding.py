"""Efficiency of ``embed_texts``: texts/s against a pure forward pass of the encoder on the same batches.

Usage (run by hand; about 2 minutes on 2 busy CPU cores)::

    python bench/text_embedding.py --texts 512 --output /tmp/tlops-bench-text/text_embedding.json

``--texts`` texts of varied length (Python docstring paragraphs, repeated and cut to a length drawn between 3 and
300 words, so some are truncated at the encoder's 256 tokens) are embedded by the bundled ``minilm`` encoder:

* forward: texts/s of ``encoder.model(input_ids, attention_mask)`` alone, on the batches ``embed_texts`` would
  run (tokenized, length-sorted and padded beforehand, outside the timing), in inference mode;
* embed_texts: texts/s of ``embed_texts`` from the raw strings (tokenizing, sorting, padding, the forward pass,
  mean pooling, reordering and the progress report included).

``ratio = embed_texts / forward``; each embed_texts pass is paired with a forward pass just before it, so a
change in load from other jobs cancels out of the ratio; the table shows the median over ``--repeats`` pairs.
The same pair is also measured with the texts in input order (no length sorting) for the sorting gain.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tlops.models.text_embedding import embed_texts, length_sorted_batches, pad_batch, pad_id, tokenize
from tlops.models.text_encoders import TextEncoder, load_text_encoder
from tlops.steps.runtime import available_cpus


def make_texts(count: int, seed: int = 0) -> list[str]:
    """``count`` texts of 3..300 words cut from the docstrings of the standard library's modules."""
    import email
    import json as json_module
    import logging
    import unittest

    words = " ".join(
        inspect.getdoc(obj) or ""
        for module in (email, json_module, logging, unittest, random, statistics, argparse)
        for _, obj in inspect.getmembers(module)
        if inspect.isfunction(obj) or inspect.isclass(obj)
    ).split()
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        length, start = rng.randint(3, 300), rng.randrange(len(words))
        texts.append(" ".join((words[start:] + words)[:length]))
    return texts


@torch.inference_mode()
def forward_pass(encoder: TextEncoder, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Texts/s of the encoder's forward pass alone over pre-tokenized, padded batches."""
    start = time.perf_counter()
    for input_ids, mask in batches:
        encoder.model(input_ids=input_ids, attention_mask=mask)
    return sum(len(ids) for ids, _ in batches) / (time.perf_counter() - start)


def embed_pass(encoder: TextEncoder, texts: list[str], batch_size: int) -> float:
    """Texts/s of ``embed_texts`` from the strings."""
    start = time.perf_counter()
    embed_texts(encoder, texts, torch.device("cpu"), batch_size, "bench")
    return len(texts) / (time.perf_counter() - start)


def measure(encoder: TextEncoder, texts: list[str], batch_size: int, repeats: int, sort: bool) -> dict[str, Any]:
    """Paired forward / embed_texts passes; ``sort=False`` runs both in input order (embed_texts' sort disabled)."""
    import tlops.models.text_embedding as text_embedding

    ids = tokenize(encoder, texts)
    if sort:
        order = length_sorted_batches(ids, batch_size)
    else:
        order = [list(range(s, min(s + batch_size, len(ids)))) for s in range(0, len(ids), batch_size)]
    batches = [pad_batch([ids[row] for row in rows], pad_id(encoder)) for rows in order]
    original = text_embedding.length_sorted_batches
    if not sort:
        text_embedding.length_sorted_batches = lambda ids, size: [  # type: ignore[assignment]
            list(range(s, min(s + size, len(ids)))) for s in range(0, len(ids), size)
        ]
    try:
        forward_pass(encoder, batches[:1])  # warm-up
        pairs = []
        for _ in range(repeats):
            forward = forward_pass(encoder, batches)
            embed = embed_pass(encoder, texts, batch_size)
            pairs.append({"forward_texts_per_s": forward, "embed_texts_per_s": embed, "ratio": embed / forward})
    finally:
        text_embedding.length_sorted_batches = original
    tokens = sum(len(row) for row in ids)
    padded = sum(ids.numel() for ids, _ in batches)
    return {
        "sorted": sort,
        "tokens": tokens,
        "padded_tokens": padded,
        "forward_texts_per_s": round(statistics.median(p["forward_texts_per_s"] for p in pairs), 1),
        "embed_texts_per_s": round(statistics.median(p["embed_texts_per_s"] for p in pairs), 1),
        "ratio": round(statistics.median(p["ratio"] for p in pairs), 3),
        "pairs": [{k: round(v, 3) for k, v in p.items()} for p in pairs],
    }


def markdown(rows: list[dict[str, Any]], texts: int, batch_size: int) -> str:
    """The results as a Markdown table."""
    lines = [
        f"minilm, {texts} texts, batch {batch_size}; ratio = embed_texts / forward (median of the pairs):",
        "",
        "| batches | tokens | padded tokens | forward (texts/s) | embed_texts (texts/s) | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {'length-sorted' if r['sorted'] else 'input order'} | {r['tokens']} | {r['padded_tokens']} | "
            f"{r['forward_texts_per_s']:.1f} | {r['embed_texts_per_s']:.1f} | {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512, help="texts embedded per pass (default 512)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="forward / embed_texts pairs (default 3)")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    encoder = load_text_encoder("minilm")
    texts = make_texts(args.texts)
    rows = [measure(encoder, texts, args.batch_size, args.repeats, sort) for sort in (True, False)]
    print(markdown(rows, len(texts), args.batch_size))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {available_cpus()} CPUs")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "texts": len(texts),
            "batch_size": args.batch_size,
            "torch_threads": torch.get_num_threads(),
            "cpus": available_cpus(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "load_average_before_after": [load_before, os.getloadavg()],
            "results": rows,
        }
        args.output.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
