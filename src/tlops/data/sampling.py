"""Reproducible training order and augmentation, independent of workers, processes and interruptions.

The order of an epoch is a function of (seed, epoch) only, and each image's augmentation a function of (seed,
epoch, image): so a run resumed at an epoch boundary, a run with another number of DataLoader workers and a run
split over several processes (each takes every ``world``-th image of the same permutation) see the same
augmented images in the same global batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` pairs: this process's share of a seeded permutation of the dataset.

    Args:
        size: Images in the dataset.
        seed: Seed of the permutations.
        num_replicas: Processes sharing the epoch (the distributed world size).
        rank: This process's rank.
        shuffle: Permute (training) or keep the dataset order.
    """

    def __init__(self, size: int, seed: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True) -> None:
        self.size, self.seed, self.num_replicas, self.rank, self.shuffle = size, seed, num_replicas, rank, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration yields."""
        self.epoch = epoch

    def order(self) -> list[int]:
        """The epoch's global order, padded (by wrapping around) to a multiple of the world size."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        padding = -len(order) % self.num_replicas
        return order + order[:padding]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.order()[self.rank :: self.num_replicas]:
            yield self.epoch, index

    def __len__(self) -> int:
        return (self.size + self.num_replicas - 1) // self.num_replicas


class SeededAugmentation(Dataset):
    """Indexes a dataset by ``(epoch, index)``, drawing each image's random augmentation from its own seed.

    Args:
        dataset: The dataset whose transform draws from torch's RNG (torchvision transforms do).
        seed: The run's seed.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
            return self.dataset[index]
