"""Each image's stratification label (its rarest class) and split: the export's when complete, else made here."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pandas as pd

from tlops.data.config import SplitConfig
from tlops.data.splits import assign_splits, carve_validation

PRE_SPLIT, SPLIT_HERE = "pre-split", "detection-export"
MIN_STRATUM = 3  # images a class needs to be its own stratum (one each for train, val and test)
RARE = "\x00rare"  # the stratum of images whose rarest class is too rare to stratify alone


def splits_given(rows: list[dict[str, Any]]) -> bool:
    """Whether the export splits every image, with train and another split (val or test)."""
    given = {row["split"] for row in rows}
    return None not in given and "train" in given and len(given) >= 2


def rarest_labels(rows: list[dict[str, Any]], given: bool) -> list[str]:
    """Each image's rarest class by box count (train's when splits are given, else all), ``""`` for a negative."""
    counts = Counter(label for row in rows if not given or row["split"] == "train" for label, _box in row["boxes"])
    return [
        min({label for label, _box in row["boxes"]}, key=lambda c: (counts[c], c)) if row["boxes"] else ""
        for row in rows
    ]


def resolve_detection_splits(frame: pd.DataFrame, config: SplitConfig, given: bool) -> pd.Series:
    """The split of every row: the export's (val and test carved out of train when missing), else assigned.

    The assigned split is stratified by ``label`` (classes with fewer than :data:`MIN_STRATUM` images share one
    stratum) and deterministic for ``config.seed`` (:func:`tlops.data.splits.assign_splits`).
    """
    if not given:
        sizes = frame["label"].value_counts()
        strata = frame.assign(label=[RARE if sizes[label] < MIN_STRATUM else label for label in frame["label"]])
        return assign_splits(strata, config)
    splits = frame["split"].astype(object)
    for split, fraction in (("val", config.val_fraction), ("test", config.test_fraction)):
        if not (splits == split).any():
            carved = carve_validation(frame.assign(split=splits), dataclasses.replace(config, val_fraction=fraction))
            splits = splits.where(~((splits == "train") & (carved == "val")), split)
    return splits
