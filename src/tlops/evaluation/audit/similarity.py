"""Near-duplicates and outliers from the cosine similarity of L2-normalised features, in row blocks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

BLOCK_ROWS = 1024


def normalised(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero), as float32."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def _blocks(unit: np.ndarray, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, similarities of rows start.. to every row)`` per block of ``block_rows`` rows."""
    for start in range(0, len(unit), block_rows):
        yield start, unit[start : start + block_rows] @ unit.T


@dataclass
class DuplicatePairs:
    """Pairs of rows at least ``threshold`` cosine-similar, most similar first.

    Attributes:
        first: Row of the first of each pair (``first < second``).
        second: Row of the second.
        similarity: Their cosine similarity.
        total: Pairs found before ``max_pairs`` cut the list.
    """

    first: np.ndarray
    second: np.ndarray
    similarity: np.ndarray
    total: int


def near_duplicates(
    features: np.ndarray,
    threshold: float,
    *,
    row_ids: list[str] | None = None,
    max_pairs: int = 10_000,
    block_rows: int = BLOCK_ROWS,
) -> DuplicatePairs:
    """Pairs of distinct rows whose cosine similarity is at least ``threshold``.

    Args:
        features: ``(N, D)`` features.
        threshold: Smallest cosine similarity of a pair, in ``(0, 1]``.
        row_ids: Per row, its content checksum: pairs of the same checksum (exact duplicates, which data
            preparation collapses already) are left out.
        max_pairs: Keep at most this many pairs (the most similar).
        block_rows: Rows per matrix product.
    """
    unit = normalised(features)
    firsts, seconds, values = [], [], []
    for start, block in _blocks(unit, block_rows):
        rows = start + np.arange(len(block))[:, None]
        hits = (block >= threshold) & (np.arange(len(unit))[None, :] > rows)
        i, j = np.nonzero(hits)
        firsts.append(start + i)
        seconds.append(j)
        values.append(block[i, j])
    first = np.concatenate(firsts) if firsts else np.empty(0, dtype=np.int64)
    second = np.concatenate(seconds) if seconds else np.empty(0, dtype=np.int64)
    similarity = np.concatenate(values) if values else np.empty(0, dtype=np.float32)
    if row_ids is not None and len(first):
        ids = np.asarray(row_ids)
        keep = ids[first] != ids[second]
        first, second, similarity = first[keep], second[keep], similarity[keep]
    order = np.argsort(-similarity, kind="stable")[:max_pairs]
    return DuplicatePairs(first[order], second[order], similarity[order], len(similarity))


@dataclass
class Outliers:
    """Rows far from their nearest neighbours.

    Attributes:
        indices: The flagged rows, most distant first.
        scores: Per row, the mean cosine distance to its ``k`` nearest other rows.
        k: The neighbours averaged.
    """

    indices: np.ndarray
    scores: np.ndarray
    k: int


def knn_outliers(features: np.ndarray, fraction: float, *, k: int = 10, block_rows: int = BLOCK_ROWS) -> Outliers:
    """Flag the ``fraction`` of rows with the largest mean cosine distance to their ``k`` nearest neighbours.

    Args:
        features: ``(N, D)`` features, ``N >= 2``.
        fraction: Share of rows flagged, in ``[0, 1]`` (at least one row when it is above 0).
        k: Neighbours (at most ``N - 1``).
        block_rows: Rows per matrix product.
    """
    unit = normalised(features)
    k = max(1, min(k, len(unit) - 1))
    scores = np.empty(len(unit), dtype=np.float64)
    for start, block in _blocks(unit, block_rows):
        block[np.arange(len(block)), start + np.arange(len(block))] = -np.inf  # not its own neighbour
        nearest = -np.partition(-block, k - 1, axis=1)[:, :k]
        scores[start : start + len(block)] = 1.0 - nearest.mean(1)
    count = int(np.ceil(fraction * len(unit))) if fraction > 0 else 0
    indices = np.argsort(-scores, kind="stable")[:count]
    return Outliers(indices, scores, k)
