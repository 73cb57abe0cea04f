"""A content-addressed cache of backbone features, on a local folder or an ``s3://`` prefix.

One entry per :class:`FeatureKey` (dataset digest, backbone, weights checksum, preprocessing): the features of
every split, streamed into safetensors shards of at most :data:`SHARD_ROWS` rows, each shard carrying the key
and its row ids (the images' sha256) in its metadata, and an ``index.json`` written last that lists every shard
with its sha256. An entry is used only when its index has this code's schema version and every shard matches its
checksum and the expected row ids; anything else (a truncated upload, a shard changed on disk, an entry written
by another tlops version) is a miss, logged, and the entry is rebuilt.

Layout: ``ROOT/<digest[:2]>/<digest>/index.json`` and ``.../<split>-<n>.safetensors``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tlops import __version__
from tlops.errors import TlopsError
from tlops.io.storage import S3Client, check_writable_location, is_s3_uri, read_bytes, upload_file

logger = logging.getLogger(__name__)

CACHE_SCHEMA_VERSION = 1
SHARD_ROWS = 8192
INDEX_FILE = "index.json"

Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class FeatureKey:
    """What determines a backbone's features of a dataset.

    Attributes:
        dataset_digest: sha256 over every image's checksum, split by split in manifest order (labels excluded:
            they do not change features).
        backbone: The backbone name.
        weights_sha256: Checksum of the backbone's weights (:func:`tlops.models.extraction.weights_checksum`).
        preprocessing: Input size, mean, std, interpolation and crop fraction, as given to the transform.
    """

    dataset_digest: str
    backbone: str
    weights_sha256: str
    preprocessing: dict[str, Any]

    @property
    def digest(self) -> str:
        """sha256 of the key and the cache schema: the entry's address."""
        payload = json.dumps({"schema": CACHE_SCHEMA_VERSION, **asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class CacheIndex:
    """The ``index.json`` of an entry: its key, its shards and what it cost to compute.

    Attributes:
        key: The :class:`FeatureKey` fields.
        shards: Per split, a list of ``{"file", "sha256", "rows"}`` in row order.
        extraction: ``seconds``, ``images``, ``images_per_second`` and ``device`` of the pass that wrote it.
        cost: Properties of the backbone measured then (``params``, ``flops``, ``latency_ms``, ``device``).
        schema_version: The cache layout; another version is a miss.
        tlops_version: The tlops that wrote it.
    """

    key: dict[str, Any]
    shards: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    extraction: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    schema_version: int = CACHE_SCHEMA_VERSION
    tlops_version: str = __version__


@dataclass
class CacheHit:
    """Features read from the cache, with the index that describes them."""

    splits: Splits
    index: CacheIndex


class FeatureCache:
    """Entries under ``root`` (a local folder or an ``s3://`` prefix).

    Args:
        root: The cache's location.
        s3: Client for an ``s3://`` root.
        scratch: Local folder for shards on their way to or from S3.
    """

    def __init__(self, root: str, s3: S3Client | None = None, scratch: Path | None = None) -> None:
        self.root = root.rstrip("/")
        self.s3 = s3
        self.scratch = scratch or Path(tempfile.gettempdir()) / "tlops-feature-cache"
        if is_s3_uri(self.root) and s3 is None:
            raise TlopsError(f"feature cache {root} is on S3 but no S3 client is configured: set AWS_ENDPOINT_URL")

    @property
    def remote(self) -> bool:
        """Whether the cache is on S3."""
        return is_s3_uri(self.root)

    def check(self) -> None:
        """Check that the cache can be written: its folder, or its bucket (a probe object is put and deleted).

        Raises:
            TlopsError: naming the location, the problem and the fix.
        """
        check_writable_location(self.root, self.s3, "--feature-cache")

    def entry(self, key: FeatureKey) -> str:
        """The URI or path of ``key``'s entry."""
        digest = key.digest
        return f"{self.root}/{digest[:2]}/{digest}"

    def load(self, key: FeatureKey, row_ids: dict[str, list[str]]) -> CacheHit | None:
        """The cached features of ``key``, or ``None`` (logging why) when absent, stale or damaged.

        Args:
            key: The entry to read.
            row_ids: Per split, the sha256 of each image in the order the features must have.
        """
        entry = self.entry(key)
        try:
            payload = json.loads(read_bytes(f"{entry}/{INDEX_FILE}", self.s3))
        except (FileNotFoundError, TlopsError):
            return None
        except (ValueError, UnicodeDecodeError):
            logger.warning("feature cache: %s has a damaged index; rebuilding it", entry)
            return None
        if payload.get("schema_version") != CACHE_SCHEMA_VERSION:
            logger.warning(
                "feature cache: %s was written by tlops %s (cache schema %s; this is schema %s): rebuilding it",
                entry,
                payload.get("tlops_version"),
                payload.get("schema_version"),
                CACHE_SCHEMA_VERSION,
            )
            return None
        index = CacheIndex(**payload)
        if sorted(index.shards) != sorted(row_ids):
            logger.warning(
                "feature cache: %s holds splits %s, not %s; rebuilding it", entry, sorted(index.shards), sorted(row_ids)
            )
            return None
        splits: Splits = {}
        for split, shards in index.shards.items():
            loaded = self._load_split(entry, key, split, shards, row_ids[split])
            if loaded is None:
                return None
            splits[split] = loaded
        return CacheHit(splits, index)

    def _load_split(
        self, entry: str, key: FeatureKey, split: str, shards: list[dict[str, Any]], expected_ids: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        features, targets, ids = [], [], []
        for shard in shards:
            try:
                data = read_bytes(f"{entry}/{shard['file']}", self.s3)
            except (FileNotFoundError, TlopsError):
                logger.warning("feature cache: %s lacks shard %s; rebuilding it", entry, shard["file"])
                return None
            if hashlib.sha256(data).hexdigest() != shard["sha256"]:
                logger.warning("feature cache: shard %s of %s fails its checksum; rebuilding it", shard["file"], entry)
                return None
            tensors, metadata = _parse_shard(data)
            if metadata.get("key") != key.digest:
                logger.warning(
                    "feature cache: shard %s of %s belongs to another key; rebuilding it", shard["file"], entry
                )
                return None
            features.append(tensors["features"])
            targets.append(tensors["targets"])
            ids.extend(json.loads(metadata.get("row_ids", "[]")))
        if ids != expected_ids:
            logger.warning("feature cache: %s split %s has other images than the manifest; rebuilding it", entry, split)
            return None
        if not features:
            return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
        return torch.cat(features), torch.cat(targets)

    def writer(self, key: FeatureKey) -> CacheWriter:
        """A writer that streams the features of ``key`` into a new entry (committed by :meth:`CacheWriter.commit`)."""
        return CacheWriter(self, key)


def _parse_shard(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file held in memory."""
    from safetensors.torch import load

    tensors = load(data)
    header_size = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + header_size]).get("__metadata__", {})
    return tensors, metadata


class CacheWriter:
    """Streams features into shards of at most :data:`SHARD_ROWS` rows; the entry appears only on :meth:`commit`.

    Memory stays bounded by one shard: a full shard is written (and on S3 uploaded and deleted) at once.
    """

    def __init__(self, cache: FeatureCache, key: FeatureKey) -> None:
        self.cache = cache
        self.key = key
        self.staging = cache.scratch / f"{key.digest}.partial-{uuid.uuid4().hex[:8]}"
        if not cache.remote:
            self.staging = Path(cache.entry(key) + f".partial-{uuid.uuid4().hex[:8]}")
        self.staging.mkdir(parents=True, exist_ok=True)
        self.index = CacheIndex(key=asdict(key))
        self._buffer: dict[str, list[tuple[torch.Tensor, torch.Tensor, list[str]]]] = {}
        self._buffered: dict[str, int] = {}

    def add(self, split: str, features: torch.Tensor, targets: torch.Tensor, row_ids: list[str]) -> None:
        """Append a batch of one split (splits may not interleave)."""
        self.index.shards.setdefault(split, [])
        self._buffer.setdefault(split, []).append((features, targets, list(row_ids)))
        self._buffered[split] = self._buffered.get(split, 0) + len(row_ids)
        if self._buffered[split] >= SHARD_ROWS:
            self._flush(split)

    def _flush(self, split: str) -> None:
        batches = self._buffer.pop(split, [])
        self._buffered[split] = 0
        if not batches:
            return
        features = torch.cat([b[0] for b in batches]).contiguous()
        targets = torch.cat([b[1] for b in batches]).contiguous()
        row_ids = [row for b in batches for row in b[2]]
        name = f"{split}-{len(self.index.shards[split]):05d}.safetensors"
        path = self.staging / name
        metadata = {"key": self.key.digest, "split": split, "row_ids": json.dumps(row_ids)}
        save_file({"features": features, "targets": targets}, str(path), metadata=metadata)
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        self.index.shards[split].append({"file": name, "sha256": checksum, "rows": len(row_ids)})
        if self.cache.remote:
            assert self.cache.s3 is not None
            upload_file(path, f"{self.cache.entry(self.key)}/{name}", self.cache.s3)
            path.unlink()

    def commit(self, extraction: dict[str, Any], cost: dict[str, Any]) -> str:
        """Write the remaining shards and the index; return the entry's location."""
        for split in list(self._buffer):
            self._flush(split)
        self.index.extraction, self.index.cost = extraction, cost
        index_path = self.staging / INDEX_FILE
        index_path.write_text(json.dumps(asdict(self.index), indent=1, sort_keys=True))
        entry = self.cache.entry(self.key)
        if self.cache.remote:
            assert self.cache.s3 is not None
            upload_file(index_path, f"{entry}/{INDEX_FILE}", self.cache.s3)
            shutil.rmtree(self.staging, ignore_errors=True)
            return entry
        target = Path(entry)
        if target.exists():  # a damaged or stale entry, or one a concurrent run just wrote: move it aside first
            trash = target.with_name(f"{target.name}.old-{uuid.uuid4().hex[:8]}")
            with contextlib.suppress(OSError):
                target.replace(trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            self.staging.replace(target)
        except OSError:  # another writer committed the same key in between: its entry is as good as ours
            shutil.rmtree(self.staging, ignore_errors=True)
        return entry

    def abort(self) -> None:
        """Drop what was staged (the entry stays as it was)."""
        shutil.rmtree(self.staging, ignore_errors=True)
