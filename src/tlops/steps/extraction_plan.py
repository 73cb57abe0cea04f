"""The extraction planner and its shards: features of a large dataset computed by many pods, image by image.

:func:`plan_extraction` reads the prepared manifest, looks each candidate backbone's packs up in the feature cache
and cuts the images still missing into shards of ``extraction_shard_size``; it writes the plan (the shards' image
checksums) into its output folder and returns one small item per shard, what a ``dsl.ParallelFor`` loops over.
:func:`extract_shard` runs one backbone over one shard's images and writes them as packs. The steps after them
(score-backbone, extract-features) then assemble every split from the packs without running a backbone.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tlops.data.loading import localize
from tlops.errors import TlopsError
from tlops.models.feature_packs import plan_shards
from tlops.steps.config import ResourcesConfig, SelectionConfig, StorageConfig
from tlops.steps.encoders import is_detection, is_text, load_encoder
from tlops.steps.features import open_feature_cache
from tlops.steps.image_packs import extract_into_packs, pack_store
from tlops.steps.outputs import PLAN_FILE, SHARD_FILE, load_prepared
from tlops.steps.runtime import Runtime
from tlops.tasks import task_of

logger = logging.getLogger(__name__)


@dataclass
class BackbonePlan:
    """One backbone's part of the plan.

    Attributes:
        key: Its pack key (:attr:`tlops.models.feature_packs.PackKey.digest`).
        images: Distinct images in the manifest.
        cached: Those a pack already holds.
        shards: The checksums of the images to extract, one list per shard.
    """

    key: str
    images: int
    cached: int
    shards: list[list[str]] = field(default_factory=list)


@dataclass
class ExtractionPlan:
    """The planner's output: per backbone, the shards still to extract.

    Attributes:
        shard_size: Images per shard.
        backbones: Backbone name -> :class:`BackbonePlan`.
        seconds: Time the planning took.
    """

    shard_size: int
    backbones: dict[str, BackbonePlan] = field(default_factory=dict)
    seconds: float = 0.0

    def items(self) -> list[dict[str, Any]]:
        """One ``{"backbone", "shard", "images"}`` per shard: what the pipeline's ParallelFor loops over."""
        return [
            {"backbone": name, "shard": number, "images": len(images)}
            for name, plan in self.backbones.items()
            for number, images in enumerate(plan.shards)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data."""
        return asdict(self)

    def write(self, folder: Path) -> Path:
        """Write ``extraction_plan.json`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / PLAN_FILE
        path.write_text(json.dumps(self.to_dict(), sort_keys=True))
        return path

    @classmethod
    def read(cls, folder: Path) -> ExtractionPlan:
        """The plan a plan-extraction step wrote into ``folder``.

        Raises:
            TlopsError: when ``folder`` holds no plan.
        """
        path = Path(folder) / PLAN_FILE
        if not path.is_file():
            raise TlopsError(f"{folder} holds no {PLAN_FILE}: give the output folder of plan-extraction")
        payload = json.loads(path.read_text())
        backbones = {name: BackbonePlan(**plan) for name, plan in payload.pop("backbones").items()}
        return cls(backbones=backbones, **payload)


def plan_extraction(
    data_dir: Path,
    backbones: list[str],
    output_dir: Path,
    runtime: Runtime,
    *,
    image_size: int = SelectionConfig.image_size,
    feature_cache: str = StorageConfig.feature_cache,
    shard_size: int = ResourcesConfig.extraction_shard_size,
) -> ExtractionPlan:
    """Plan the extraction of every candidate's features: the images no pack holds, in shards of ``shard_size``.

    Text and detection datasets (features of texts, of box crops) are left to the steps that score them: their plan
    is empty.

    Args:
        data_dir: Output of the prepare-data step.
        backbones: The candidates (empty: the task's own).
        output_dir: Where ``extraction_plan.json`` goes.
        runtime: S3 client and caches (the backbones are loaded for their weights' checksum).
        image_size: Input size; 0 for each backbone's own.
        feature_cache: Folder or ``s3://`` prefix of the feature cache (``""``: the runtime's cache folder).
        shard_size: Images per shard.

    Returns:
        The plan (also written into ``output_dir``).
    """
    start = time.perf_counter()
    manifest, prepared = load_prepared(data_dir)
    plan = ExtractionPlan(shard_size=shard_size)
    if is_text(prepared.task) or is_detection(prepared.task):
        logger.info("extraction plan: %s features are extracted by the steps that score them", prepared.task)
    else:
        cache = open_feature_cache(feature_cache, runtime)
        task = task_of(prepared.task)
        order = list(manifest["sha256"])
        for name in backbones or task.default_backbones:
            task.check_backbone(name)
            store = pack_store(load_encoder(prepared.task, name, runtime, image_size=image_size), cache)
            cached = store.lookup(order)
            shards = plan_shards(order, cached, shard_size)
            plan.backbones[name] = BackbonePlan(store.key.digest, len(set(order)), len(cached), shards)
            logger.info(
                "extraction plan: %s has %d of %d images cached; %d to extract in %d shard(s) of at most %d",
                name,
                len(cached),
                len(set(order)),
                sum(map(len, shards)),
                len(shards),
                shard_size,
            )
    plan.seconds = round(time.perf_counter() - start, 3)
    plan.write(output_dir)
    return plan


def extract_shard(
    data_dir: Path,
    plan_dir: Path,
    backbone_name: str,
    shard: int,
    output_dir: Path,
    runtime: Runtime,
    *,
    image_size: int = SelectionConfig.image_size,
    feature_cache: str = StorageConfig.feature_cache,
) -> dict[str, Any]:
    """Extract one shard of the plan: fetch only its images, run the backbone, write them as packs.

    Args:
        data_dir: Output of the prepare-data step.
        plan_dir: Output of the plan-extraction step.
        backbone_name: The backbone of the shard.
        shard: The shard's number in that backbone's plan.
        output_dir: Where the shard's record (``extraction_shard.json``) goes.
        runtime: Device, S3 client and caches.
        image_size: Input size; 0 for the backbone's own (as planned).
        feature_cache: The feature cache the planner looked in.

    Returns:
        ``{"backbone", "shard", "extracted", "packs_key"}``: the images this pod ran the backbone on, also written
        into ``output_dir``.

    Raises:
        TlopsError: when the plan has no such backbone or shard.
    """
    plan = ExtractionPlan.read(plan_dir)
    if backbone_name not in plan.backbones or not 0 <= shard < len(plan.backbones[backbone_name].shards):
        raise TlopsError(f"the extraction plan in {plan_dir} has no shard {shard} of backbone {backbone_name!r}")
    wanted = set(plan.backbones[backbone_name].shards[shard])
    manifest, prepared = load_prepared(data_dir)
    rows = manifest[manifest["sha256"].isin(wanted)].drop_duplicates("sha256")
    rows = localize(rows, runtime.cache_dir / "images", runtime.s3)
    cache = open_feature_cache(feature_cache, runtime)
    backbone = load_encoder(prepared.task, backbone_name, runtime, image_size=image_size)
    store = pack_store(backbone, cache)
    if store.key.digest != plan.backbones[backbone_name].key:
        raise TlopsError(
            f"backbone {backbone_name!r} now loads other weights or preprocessing than planned: plan again"
        )
    extract_into_packs(backbone, rows, prepared.classes, runtime, store)
    logger.info("extraction shard %d of %s: %d images extracted", shard, backbone_name, len(rows))
    record = {"backbone": backbone_name, "shard": shard, "extracted": len(rows), "packs_key": store.key.digest}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / SHARD_FILE).write_text(json.dumps(record, sort_keys=True))
    return record
