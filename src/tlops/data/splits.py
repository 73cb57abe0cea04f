"""Train/val/test splits: stratified by class, deterministic for a seed, independent of listing order."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tlops.data.config import SplitConfig as SplitConfig  # re-exported

SPLITS = ("train", "val", "test")


def split_counts(n: int, config: SplitConfig) -> dict[str, int]:
    """How many of ``n`` images of one class go to each split (at least one each when ``n >= 3``)."""
    n_test = max(1, round(n * config.test_fraction))
    n_val = max(1, round(n * config.val_fraction))
    while n_val + n_test > n - 1 and max(n_val, n_test) > 1:  # keep at least one image for training
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def _seeded_groups(rows: pd.DataFrame, config: SplitConfig) -> list[np.ndarray]:
    """Per class (sorted), the row indices in a seeded order that ignores listing order (rows sorted by hash)."""
    rng = np.random.default_rng(config.seed)
    ordered = rows.sort_values(["label", "sha256", "relpath"])
    return [group.index.to_numpy()[rng.permutation(len(group))] for _, group in ordered.groupby("label", sort=True)]


def assign_splits(rows: pd.DataFrame, config: SplitConfig) -> pd.Series:
    """Assign each row a split, stratified by label and deterministic for ``config.seed``.

    Rows are ordered by content hash before the seeded shuffle, so the split does not depend on listing order.
    """
    splits = pd.Series("", index=rows.index, dtype=object)
    for order in _seeded_groups(rows, config):
        sizes = split_counts(len(order), config)
        start = 0
        for split in SPLITS:
            splits.loc[order[start : start + sizes[split]]] = split
            start += sizes[split]
    return splits


def carve_validation(rows: pd.DataFrame, config: SplitConfig) -> pd.Series:
    """Move ``config.val_fraction`` of each class's training rows to val (at least one, leaving one in train).

    Stratified and deterministic for ``config.seed`` like :func:`assign_splits`; rows of other splits keep theirs.

    Args:
        rows: Rows with ``label``, ``sha256``, ``relpath`` and ``split`` columns; every class has two or more
            training rows.
        config: The validation fraction and seed.

    Returns:
        The new split of every row.
    """
    splits = rows["split"].astype(object).copy()
    for order in _seeded_groups(rows[rows["split"] == "train"], config):
        n_val = min(max(1, round(len(order) * config.val_fraction)), len(order) - 1)
        splits.loc[order[:n_val]] = "val"
    return splits


def resolve_splits(rows: pd.DataFrame, config: SplitConfig, *, split_given: bool, carve_val: bool) -> pd.Series:
    """The split of each row: assigned (:func:`assign_splits`) unless given, val carved from train when missing."""
    if not split_given:
        return assign_splits(rows, config)
    if carve_val:
        return carve_validation(rows, config)
    return rows["split"]


def class_counts(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Rows per split and class of a manifest (every class under every split, 0 where it has none)."""
    classes = sorted(manifest["label"].unique())
    return {
        split: {label: int(((manifest["split"] == split) & (manifest["label"] == label)).sum()) for label in classes}
        for split in SPLITS
    }
