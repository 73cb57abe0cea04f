"""Building a :class:`~tlops.runtime.Runtime` from environment variables: called only at the edges (CLI, components)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tlops.backbones import default_cache_dir
from tlops.device import resolve_device
from tlops.runtime import Runtime
from tlops.storage import make_s3_client


def runtime_from_environment(environ: Mapping[str, str]) -> Runtime:
    """A runtime configured by ``TLOPS_DEVICE``, ``TLOPS_CACHE_DIR`` and the AWS variables boto3 reads."""
    cache = environ.get("TLOPS_CACHE_DIR")
    return Runtime(
        device=resolve_device(environ.get("TLOPS_DEVICE", "auto")),
        s3=make_s3_client(),
        cache_dir=Path(cache) if cache else default_cache_dir(),
    )
