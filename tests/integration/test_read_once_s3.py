"""Read the data once: the preflight of ``tlops run`` and the prepare-data step share one pass through the cache.

Counts come from :func:`tlops.data.images.decode_count` (every ``decode_image`` call in this process).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tlops.data.images import decode_count
from tlops.data.prepare import (
    PreparedCache,
    SplitConfig,
    preflight_dataset,
    prepare_data,
)

CLASSES = {"cat": 4, "dog": 4, "eel": 4}

IMAGES = sum(CLASSES.values())


def _image_bytes(seed: int, size: int = 16) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _imagefolder(root: Path, classes: dict[str, int] = CLASSES) -> Path:
    seed = 0
    for label, n in classes.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / label / f"{i:02d}.png").write_bytes(_image_bytes(seed))
            seed += 1
    return root


def _config(**changes: Any) -> SplitConfig:
    return SplitConfig(**{"workers": 2} | changes)


def _decodes(call: Any, *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """What ``call`` returned and how many images it decoded."""
    before = decode_count()
    result = call(*args, **kwargs)
    return result, decode_count() - before


@pytest.mark.integration
def test_s3_prepared_once_and_again_after_an_overwrite(s3_client: Any, bucket: str, tmp_path: Path) -> None:
    folder = _imagefolder(tmp_path / "data")
    for path in sorted(folder.rglob("*.png")):
        s3_client.put_object(Bucket=bucket, Key=f"ds/{path.relative_to(folder).as_posix()}", Body=path.read_bytes())
    source = f"s3://{bucket}/ds"
    cache = PreparedCache(tmp_path / "cache")
    checked, decodes = _decodes(preflight_dataset, source, _config(), s3_client, cache)
    assert decodes == IMAGES
    prepared, decodes = _decodes(prepare_data, source, tmp_path / "one", _config(), s3_client, cache)
    assert decodes == 0 and prepared.digest == checked.digest
    s3_client.put_object(Bucket=bucket, Key="ds/cat/00.png", Body=_image_bytes(1000, size=16))  # same size
    changed, decodes = _decodes(prepare_data, source, tmp_path / "two", _config(), s3_client, cache)
    assert decodes == IMAGES and changed.digest != prepared.digest
