"""Split settings for tests (two workers, seed 0 unless changed) and a pre-split folder layout."""

from __future__ import annotations

from typing import Any

from tlops.data.prepare import SplitConfig

# Images per folder of a pre-split dataset: train/val/test, two classes.
PRESPLIT = {"train/cat": 6, "train/dog": 5, "val/cat": 2, "val/dog": 2, "test/cat": 2, "test/dog": 3}


def split_config(**changes: Any) -> SplitConfig:
    """``SplitConfig`` with two workers (the tests' machines are small), and ``changes``."""
    return SplitConfig(**{"workers": 2} | changes)
