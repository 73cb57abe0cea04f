"""Per-image feature packs: a model's features found image by image, so that new images are all a re-run computes.

Beside the per-dataset entries of :class:`~tlops.models.feature_cache.FeatureCache`, every model (backbone,
weights checksum, preprocessing: :class:`PackKey`) has a prefix of *packs*: safetensors files holding one
``features`` row per image, the images' sha256 (the row ids) in their metadata, each followed by a small pack index
(``<pack>.json``: the row ids, the pack's sha256 and what its extraction cost) written last. A pack counts only
through its index, and only when the file matches the index's checksum and row ids: a pack without index (a pod
killed while uploading), damaged, or of another key is a miss, logged, and its images are computed again.

Layout: ``ROOT/packs/<key[:2]>/<key>/<pack>.safetensors`` and ``.../<pack>.json``. A pack's name is the sha256 of
its row ids, so a retried shard writes the same object again instead of a second copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tlops.errors import TlopsError
from tlops.io.storage import iter_objects, parse_s3_uri, read_bytes, upload_file
from tlops.models.feature_cache import FeatureCache

logger = logging.getLogger(__name__)

PACK_SCHEMA_VERSION = 1
PACKS_DIR = "packs"
PACK_SUFFIX = ".safetensors"
INDEX_SUFFIX = ".json"


@dataclass(frozen=True)
class PackKey:
    """What determines one image's features: the model, not the dataset.

    Attributes:
        backbone: The backbone name.
        weights_sha256: Checksum of its weights.
        preprocessing: Input size, mean, std, interpolation and crop fraction.
    """

    backbone: str
    weights_sha256: str
    preprocessing: dict[str, Any]

    @property
    def digest(self) -> str:
        """sha256 of the key and the pack schema: the prefix of the model's packs."""
        payload = json.dumps({"pack_schema": PACK_SCHEMA_VERSION, **asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


def pack_name(row_ids: Sequence[str]) -> str:
    """The name of the pack of ``row_ids``: the sha256 of the ids in order (a retried shard rewrites the same)."""
    return hashlib.sha256("\n".join(row_ids).encode()).hexdigest()


@dataclass
class PackIndex:
    """The ``<pack>.json`` written after its pack: what the pack holds and what it cost.

    Attributes:
        key: The :class:`PackKey` digest.
        file: The pack's file name.
        sha256: The pack file's checksum.
        row_ids: The images' sha256, one per row.
        extraction: ``seconds``, ``images``, ``images_per_second`` and ``device`` of the pass that wrote it.
        schema_version: The pack layout; another version is a miss.
    """

    key: str
    file: str
    sha256: str
    row_ids: list[str]
    extraction: dict[str, Any]
    schema_version: int = PACK_SCHEMA_VERSION


class PackStore:
    """The packs of one model under a feature cache's root.

    Args:
        cache: The feature cache (its root, S3 client and scratch folder).
        key: The model.
    """

    def __init__(self, cache: FeatureCache, key: PackKey) -> None:
        self.cache = cache
        self.key = key
        digest = key.digest
        self.prefix = f"{cache.root}/{PACKS_DIR}/{digest[:2]}/{digest}"

    def indexes(self) -> list[PackIndex]:
        """Every readable pack index of this model (a damaged one or one of another schema is logged and skipped)."""
        result = []
        for name in sorted(self._index_names()):
            try:
                payload = json.loads(read_bytes(f"{self.prefix}/{name}", self.cache.s3))
                index = PackIndex(**payload)
            except (FileNotFoundError, TlopsError):
                continue
            except (ValueError, TypeError, UnicodeDecodeError):
                logger.warning("feature packs: %s/%s is damaged; its images will be computed again", self.prefix, name)
                continue
            if index.schema_version != PACK_SCHEMA_VERSION or index.key != self.key.digest:
                logger.warning("feature packs: %s/%s is of another schema or key; skipping it", self.prefix, name)
                continue
            result.append(index)
        return result

    def _index_names(self) -> list[str]:
        if not self.cache.remote:
            folder = Path(self.prefix)
            return [path.name for path in folder.glob(f"*{INDEX_SUFFIX}")] if folder.is_dir() else []
        assert self.cache.s3 is not None
        bucket = parse_s3_uri(self.prefix).bucket
        names = []
        for key, _ in iter_objects(self.cache.s3, self.prefix):
            if key.endswith(INDEX_SUFFIX) and f"s3://{bucket}/{key}".rpartition("/")[0] == self.prefix:
                names.append(key.rpartition("/")[2])
        return names

    def lookup(self, row_ids: Iterable[str]) -> dict[str, str]:
        """Which of ``row_ids`` have features in a pack: image sha256 -> pack file (from the indexes only)."""
        wanted = set(row_ids)
        found: dict[str, str] = {}
        for index in self.indexes():
            for row in index.row_ids:
                if row in wanted and row not in found:
                    found[row] = index.file
        return found

    def gather(self, order: Sequence[str], num_features: int) -> tuple[torch.Tensor, list[int]]:
        """The features of the images ``order`` lists, in that order, read pack by pack.

        Memory: the result ``(len(order), num_features)`` float32 and one pack at a time.

        Returns:
            The features (rows of missing images are zero) and the positions in ``order`` of the images no
            valid pack holds (absent, or in a pack that fails its checksum: computed again).
        """
        positions: dict[str, list[int]] = {}
        for position, row in enumerate(order):
            positions.setdefault(row, []).append(position)
        result = torch.zeros(len(order), num_features)
        pending = set(positions)
        for index in self.indexes():
            if not pending.intersection(index.row_ids):
                continue
            features = self._read_pack(index)
            if features is None:
                continue
            source, target = [], []
            for row_number, row in enumerate(index.row_ids):
                if row in pending:
                    pending.discard(row)
                    source.extend([row_number] * len(positions[row]))
                    target.extend(positions[row])
            result[torch.tensor(target, dtype=torch.long)] = features[torch.tensor(source, dtype=torch.long)]
        return result, sorted(position for row in pending for position in positions[row])

    def _read_pack(self, index: PackIndex) -> torch.Tensor | None:
        """The features of one pack, or ``None`` (logged) when it is missing, damaged or not what its index says."""
        from tlops.models.feature_cache import _parse_shard

        location = f"{self.prefix}/{index.file}"
        try:
            data = read_bytes(location, self.cache.s3)
        except (FileNotFoundError, TlopsError):
            logger.warning("feature packs: %s is missing; its images will be computed again", location)
            return None
        if hashlib.sha256(data).hexdigest() != index.sha256:
            logger.warning("feature packs: %s fails its checksum; its images will be computed again", location)
            return None
        tensors, metadata = _parse_shard(data)
        if metadata.get("key") != self.key.digest or json.loads(metadata.get("row_ids", "[]")) != index.row_ids:
            logger.warning("feature packs: %s is not what its index says; its images will be computed again", location)
            return None
        return tensors["features"]

    def write(self, features: torch.Tensor, row_ids: list[str], extraction: dict[str, Any]) -> str:
        """Write one pack and then its index (the pack counts only once its index is there); return its name.

        Raises:
            TlopsError: when the features and row ids differ in number.
        """
        if len(features) != len(row_ids):
            raise TlopsError(f"a feature pack needs one row id per row, got {len(row_ids)} for {len(features)} rows")
        name = pack_name(row_ids)
        staging = self.cache.scratch / f"{name}.partial-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True, exist_ok=True)
        pack = staging / f"{name}{PACK_SUFFIX}"
        metadata = {"key": self.key.digest, "row_ids": json.dumps(row_ids)}
        save_file({"features": features.float().contiguous()}, str(pack), metadata=metadata)
        checksum = hashlib.sha256(pack.read_bytes()).hexdigest()
        index = PackIndex(self.key.digest, pack.name, checksum, list(row_ids), extraction)
        index_path = staging / f"{name}{INDEX_SUFFIX}"
        index_path.write_text(json.dumps(asdict(index), sort_keys=True))
        try:
            for path in (pack, index_path):  # the index last: a reader sees a pack only when it is complete
                self._publish(path)
        finally:
            for path in (pack, index_path):
                path.unlink(missing_ok=True)
            staging.rmdir()
        return name

    def _publish(self, path: Path) -> None:
        target = f"{self.prefix}/{path.name}"
        if self.cache.remote:
            assert self.cache.s3 is not None
            upload_file(path, target, self.cache.s3)
            return
        Path(self.prefix).mkdir(parents=True, exist_ok=True)
        temporary = Path(f"{target}.partial-{uuid.uuid4().hex[:8]}")
        temporary.write_bytes(path.read_bytes())
        temporary.replace(target)


def plan_shards(order: Sequence[str], cached: Iterable[str], shard_size: int) -> list[list[str]]:
    """The images of ``order`` no pack holds, each once, in order, cut into shards of at most ``shard_size``.

    Raises:
        TlopsError: when ``shard_size`` is below 1.
    """
    if shard_size < 1:
        raise TlopsError(f"the extraction shard size must be at least 1, got {shard_size}")
    have = set(cached)
    missing = [row for row in dict.fromkeys(order) if row not in have]
    return [missing[start : start + shard_size] for start in range(0, len(missing), shard_size)]
