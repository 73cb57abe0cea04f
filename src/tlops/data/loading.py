"""Torch datasets over a prepared manifest, with the preprocessing of a backbone's weights."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as transforms

from tlops.data.images import decode_image
from tlops.io.storage import S3Client, download, is_s3_uri


class ManifestDataset(Dataset):
    """Images and class ids of one split of a manifest, read from local files."""

    def __init__(self, paths: list[str], targets: list[int], transform: transforms.Compose) -> None:
        self.paths = paths
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = decode_image(Path(self.paths[index]).read_bytes()).image
        return self.transform(image), self.targets[index]


def localize(manifest: pd.DataFrame, cache_dir: Path, s3: S3Client | None = None, workers: int = 8) -> pd.DataFrame:
    """Return the manifest with a ``local_path`` column, fetching s3:// images into ``cache_dir`` once.

    Cached files are named by content hash, so a re-run reuses them.
    """
    manifest = manifest.copy()

    def fetch(row: tuple[str, str]) -> str:
        uri, sha256 = row
        if not is_s3_uri(uri):
            return uri
        target = cache_dir / sha256[:2] / (sha256 + PurePosixPath(uri).suffix.lower())
        return str(target if target.exists() else download(uri, target, s3))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        manifest["local_path"] = list(pool.map(fetch, zip(manifest["uri"], manifest["sha256"], strict=True)))
    return manifest


def split_dataset(
    manifest: pd.DataFrame, split: str, classes: list[str], transform: transforms.Compose
) -> ManifestDataset:
    """The dataset of one split of a localized manifest."""
    rows = manifest[manifest["split"] == split]
    index = {label: i for i, label in enumerate(classes)}
    return ManifestDataset(list(rows["local_path"]), [index[label] for label in rows["label"]], transform)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    workers: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader with a seeded shuffle.

    Args:
        dataset: The images and class ids.
        batch_size: Images per batch.
        shuffle: Reshuffle every epoch (seeded by ``seed``).
        workers: Worker processes decoding images in parallel (0: in this process); they hand batches over
            through shared memory (``/dev/shm``), and stay alive across epochs.
        seed: Seed of the shuffle.
        pin_memory: Page-locked batches, so copies to a CUDA device can overlap the computation.
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=generator,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
    )
