"""Helpers the steps share: the prepared manifest with local image paths."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tlops.data.loading import localize
from tlops.steps.outputs import load_prepared
from tlops.steps.runtime import Runtime


def localized_manifest(data_dir: Path, runtime: Runtime) -> tuple[pd.DataFrame, list[str]]:
    """The prepared manifest with a ``local_path`` column (S3 images fetched into the cache), and the classes."""
    manifest, prepared = load_prepared(data_dir)
    return localize(manifest, runtime.cache_dir / "images", runtime.s3), prepared.classes
