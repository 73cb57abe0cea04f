"""Length statistics of the kept texts, in characters and words, for the summary and the report."""

from __future__ import annotations

from bisect import bisect_right
from statistics import median
from typing import Any

# Histogram bin edges (the lower bound of each bin; the last bin is open-ended).
CHAR_EDGES = (0, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000)
WORD_EDGES = (0, 5, 10, 20, 50, 100, 200, 500, 1_000, 5_000)


def _histogram(values: list[int], edges: tuple[int, ...]) -> list[dict[str, Any]]:
    counts = [0] * len(edges)
    for value in values:
        counts[bisect_right(edges, value) - 1] += 1
    bounds = [*edges[1:], None]
    return [{"from": low, "below": high, "texts": n} for low, high, n in zip(edges, bounds, counts, strict=True) if n]


def _summary(values: list[int], edges: tuple[int, ...]) -> dict[str, Any]:
    return {
        "min": min(values),
        "median": float(median(values)),
        "mean": round(sum(values) / len(values), 2),
        "max": max(values),
        "histogram": _histogram(values, edges),
    }


def length_stats(texts: list[str]) -> dict[str, Any]:
    """``chars`` and ``words`` (whitespace-separated): min, median, mean, max and a histogram of non-empty bins."""
    if not texts:
        return {}
    chars = [len(text) for text in texts]
    words = [len(text.split()) for text in texts]
    return {"chars": _summary(chars, CHAR_EDGES), "words": _summary(words, WORD_EDGES)}
