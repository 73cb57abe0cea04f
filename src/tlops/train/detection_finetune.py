"""Fine-tuning a torchvision object detector: the training loop of the object-detection task.

The detector is any torchvision detection model (Faster R-CNN, FCOS, ...): in train mode it takes a list of images
and targets and returns its loss terms; the loop sums them. The strategies differ in what trains of the backbone
body, given as its ``blocks`` (stages, input first); everything outside the blocks (FPN, RPN, heads) always trains:

- ``frozen``: no block trains; their BatchNorm layers stay in eval mode, so running statistics do not move either;
- ``partial``: the top ``config.trainable_blocks`` blocks train, the lower ones are frozen as above;
- ``full``: every block trains.

AdamW (no weight decay on norms and biases), linear warm-up then cosine decay per step, gradient-norm clipping,
bf16 autocast on CUDA. After each epoch the ``evaluate`` callback validates (``map``, ``map50``); the epoch with the
best validation ``map50`` is kept (the last one without validation). A checkpoint per epoch (model, optimizer,
scheduler, RNG states, history, the best weights) lets a restarted run resume after the last finished epoch.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from tlops.data.prepared import OBJECT_DETECTION
from tlops.errors import TlopsError
from tlops.io.progress import progress as progress_bar
from tlops.models.device import autocast
from tlops.train.optim import scaled_groups, warmup_cosine
from tlops.train.resume import CheckpointStore, rng_state, set_rng_state

logger = logging.getLogger(__name__)

DETECTION_STRATEGIES = ("frozen", "partial", "full")

#: ``evaluate(model, val_loader, device) -> {"map": ..., "map50": ..., ...}`` (the model is in eval mode).
Evaluate = Callable[[nn.Module, DataLoader, torch.device], Mapping[str, float]]


@dataclass(frozen=True)
class DetectionTrainConfig:
    """Settings of one detector fine-tuning run.

    Attributes:
        epochs: Passes over the training images.
        lr: Peak learning rate (AdamW), reached after the warm-up.
        weight_decay: AdamW weight decay (not on norms and biases).
        warmup: Share of the optimizer steps spent warming up linearly.
        batch_size: Images per step (the loaders are built with it).
        trainable_blocks: Top backbone blocks that train under ``partial``.
        max_side: Longest image side given to the detector (the dataset scales images down to it).
        seed: Seed of the initialisation, the augmentation and the data order.
        clip_grad_norm: Largest gradient norm (0: no clipping).
    """

    epochs: int = 12
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup: float = 0.1
    batch_size: int = 4
    trainable_blocks: int = 2
    max_side: int = 512
    seed: int = 0
    clip_grad_norm: float = 10.0


@dataclass
class DetectionEpoch:
    """One epoch of training.

    Attributes:
        epoch: The epoch, from 1.
        train_loss: Mean summed loss per image.
        loss_terms: Mean of each loss term per image (``loss_classifier``, ``loss_box_reg``, ...).
        val: Validation metrics from the ``evaluate`` callback (empty without one).
        lr: Learning rate at the end of the epoch (the first group's).
        seconds: Training time of the epoch.
        images_per_second: Training throughput.
    """

    epoch: int
    train_loss: float
    loss_terms: dict[str, float]
    val: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    seconds: float = 0.0
    images_per_second: float = 0.0


@dataclass
class DetectionHistory:
    """What :func:`train_detector` returns (the model itself now holds the kept weights).

    Attributes:
        epochs: One record per epoch.
        best_epoch: The kept epoch (best validation ``map50``; the last without validation).
        resumed_from: The epoch the run resumed after, or ``None``.
        strategy: The strategy.
        trained_blocks: Indices of the blocks that trained.
    """

    epochs: list[DetectionEpoch] = field(default_factory=list)
    best_epoch: int = 0
    resumed_from: int | None = None
    strategy: str = ""
    trained_blocks: list[int] = field(default_factory=list)


def trained_block_indices(strategy: str, num_blocks: int, trainable_blocks: int) -> list[int]:
    """Indices of the backbone blocks a strategy trains (input block 0).

    Raises:
        TlopsError: for an unknown strategy, or ``partial`` asking for more blocks than there are.
    """
    if strategy not in DETECTION_STRATEGIES:
        raise TlopsError(f"strategy {strategy!r} is not one for object detection: use one of {DETECTION_STRATEGIES}")
    if strategy == "frozen":
        return []
    if strategy == "full":
        return list(range(num_blocks))
    if not 0 <= trainable_blocks <= num_blocks:
        raise TlopsError(
            f"trainable_blocks {trainable_blocks} is not between 0 and the backbone's {num_blocks} blocks: use at "
            f"most {num_blocks} (or the full strategy)"
        )
    return list(range(num_blocks - trainable_blocks, num_blocks))


def apply_strategy(model: nn.Module, blocks: list[nn.Module], trained: list[int]) -> list[nn.Module]:
    """Let gradients flow everywhere but into the blocks not in ``trained``; returns those frozen blocks."""
    frozen = [block for i, block in enumerate(blocks) if i not in trained]
    frozen_ids = {id(p) for block in frozen for p in block.parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) not in frozen_ids)
    return frozen


def set_train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    """Train mode, except the BatchNorm layers of frozen blocks (their running statistics stay as they are)."""
    model.train()
    for block in frozen:
        for module in block.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def seed_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Reseed the loader's shuffle (and its workers' seeds) from the seed and the epoch.

    The data order of an epoch is then a function of the seed and the epoch, never of how many epochs this process
    ran before: a resumed run reads the same batches as an uninterrupted one.
    """
    for generator in {id(g): g for g in (loader.generator, getattr(loader.sampler, "generator", None)) if g}.values():
        generator.manual_seed(seed * 1_000_003 + epoch)


def _to_device(images: list[torch.Tensor], targets: list[dict], device: torch.device):
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]
    return images, targets


def _train_epoch(
    model: nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    config: DetectionTrainConfig,
    device: torch.device,
    epoch: int,
) -> tuple[float, dict[str, float], int]:
    """One pass: mean loss per image, mean of each term, images seen."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    total, terms, count = 0.0, {}, 0
    for images, targets in batches:
        images, targets = _to_device(images, targets, device)
        with autocast(device):
            losses = model(images, targets)
        loss = sum(value.float() for value in losses.values())
        if not torch.isfinite(loss):
            raise TlopsError(
                f"detector training diverged in epoch {epoch} (loss {float(loss)}): lower the learning rate "
                f"(now {config.lr})"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(parameters, config.clip_grad_norm)
        optimizer.step()
        schedule.step()
        size = len(images)
        total += float(loss.detach()) * size
        for name, value in losses.items():
            terms[name] = terms.get(name, 0.0) + float(value.detach()) * size
        count += size
        if hasattr(batches, "set_postfix"):
            batches.set_postfix(loss=f"{float(loss.detach()):.4f}")
    count = max(count, 1)
    return total / count, {name: value / count for name, value in terms.items()}, count


def _score(metrics: Mapping[str, float]) -> float:
    value = metrics.get("map50", float("nan"))
    return -math.inf if value is None or math.isnan(value) else float(value)


def train_detector(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    config: DetectionTrainConfig,
    device: torch.device,
    *,
    strategy: str,
    blocks: list[nn.Module],
    checkpoint_dir: str | None = None,
    resume: bool = False,
    evaluate: Evaluate | None = None,
    progress: bool = True,
    s3: Any = None,
    settings: Mapping[str, Any] | None = None,
) -> DetectionHistory:
    """Fine-tune a detector, keeping the weights of the epoch that validates best.

    Args:
        model: A torchvision detection model (train mode: loss dict; eval mode: detections).
        train_loader: Batches ``(images, targets)`` of :class:`~tlops.train.detection_data.DetectionDataset`
            (collated by :func:`~tlops.train.detection_data.collate_detections`), with augmentation.
        val_loader: Validation batches, handed to ``evaluate``.
        config: The training settings.
        device: Where to train.
        strategy: ``frozen``, ``partial`` or ``full``.
        blocks: The backbone body's blocks, input first (``backbone_blocks(model)``).
        checkpoint_dir: Folder or ``s3://`` prefix of the per-epoch checkpoint; ``None``: no checkpoints.
        resume: Continue after the checkpoint's epoch when there is one (else start over and overwrite it).
        evaluate: Validation callback returning at least ``map50``; ``None``: keep the last epoch.
        progress: Report progress per batch (a bar on a terminal, log lines elsewhere).
        s3: S3 client, for an ``s3://`` checkpoint_dir.
        settings: The settings the checkpoint's fingerprint records (and a resumed run must match): the run's
            own when it has more than ``config`` (``tlops run`` compares them before any step runs); ``None``:
            ``config``'s.

    Returns:
        The history; ``model`` holds the kept weights and is in eval mode.

    Raises:
        TlopsError: for an unknown strategy, too many trainable blocks, a diverging loss, or a checkpoint of
            another run.
    """
    trained = trained_block_indices(strategy, len(blocks), config.trainable_blocks)
    torch.manual_seed(config.seed)
    model.to(device)
    frozen = apply_strategy(model, blocks, trained)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(scaled_groups([("detector", 1.0, named)], config))  # type: ignore[arg-type]
    schedule = warmup_cosine(optimizer, max(1, config.epochs * len(train_loader)), config.warmup)
    store = CheckpointStore(checkpoint_dir, s3) if checkpoint_dir is not None else None
    fingerprint = {
        "task": OBJECT_DETECTION,
        "strategy": strategy,
        "blocks": len(blocks),
        "config": dict(settings) if settings is not None else asdict(config),
    }
    history = DetectionHistory(strategy=strategy, trained_blocks=trained)
    best_score, best_state = -math.inf, None
    start = 1
    saved = store.load(fingerprint) if store is not None and resume else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["scheduler"])
        history.epochs = [DetectionEpoch(**record) for record in saved["history"]]
        history.best_epoch, best_score, best_state = saved["best_epoch"], saved["best_score"], saved["best_state"]
        set_rng_state(saved["rng"])
        start = saved["epoch"] + 1
        history.resumed_from = saved["epoch"]
        logger.info("resuming from epoch %d of %d (checkpoint %s)", saved["epoch"], config.epochs, store.location)

    for epoch in range(start, config.epochs + 1):
        seed_epoch(train_loader, config.seed, epoch)
        set_train_mode(model, frozen)
        started = time.perf_counter()
        desc = f"detector epoch {epoch}/{config.epochs}"
        batches = progress_bar(train_loader, desc, unit="batch") if progress else train_loader
        loss, terms, images = _train_epoch(model, batches, optimizer, schedule, config, device, epoch)
        seconds = time.perf_counter() - started
        record = DetectionEpoch(
            epoch, loss, terms, lr=optimizer.param_groups[0]["lr"], seconds=round(seconds, 3),
            images_per_second=round(images / seconds, 2) if seconds > 0 else 0.0,
        )  # fmt: skip
        if evaluate is not None and val_loader is not None:
            model.eval()
            record.val = {k: float(v) for k, v in evaluate(model, val_loader, device).items()}
        history.epochs.append(record)
        logger.info(
            "epoch %d: train loss %.4f (%s), val %s, %.1f images/s",
            epoch, loss, ", ".join(f"{k} {v:.4f}" for k, v in terms.items()),
            ", ".join(f"{k} {v:.4f}" for k, v in record.val.items()) or "-", record.images_per_second,
        )  # fmt: skip
        score = _score(record.val)
        if best_state is None or score > best_score or (score == best_score == -math.inf):
            # without a validation score the latest epoch is kept
            history.best_epoch, best_score = epoch, score
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if store is not None:
            state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
            state |= {"scheduler": schedule.state_dict(), "history": [asdict(r) for r in history.epochs]}
            state |= {"best_epoch": history.best_epoch, "best_score": best_score, "best_state": best_state}
            state |= {"rng": rng_state()}
            store.save(state, fingerprint)

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


@dataclass(frozen=True)
class Throughput:
    """Images per second of training against the detector's own work on one batch.

    Attributes:
        training: Full training steps through the loader (reading, decoding, copying, forward, backward, step).
        forward_backward: Forward and backward passes on one batch already on the device, repeated.
        batch_size: Images per batch.
        batches: Batches timed for each.
    """

    training: float
    forward_backward: float
    batch_size: int
    batches: int

    @property
    def efficiency(self) -> float:
        """Share of the pure forward+backward rate that training reaches (1: the input pipeline costs nothing)."""
        return self.training / self.forward_backward if self.forward_backward > 0 else 0.0


def detection_throughput(
    model: nn.Module, loader: DataLoader, device: torch.device, *, batches: int = 5, warmup: int = 1
) -> Throughput:
    """Measure training images/s against pure forward+backward images/s on the same batches (for a benchmark).

    The model's weights and mode are restored afterwards (the optimizer steps are taken on a copy of the state).

    Args:
        model: A torchvision detection model.
        loader: Training batches ``(images, targets)``; at least ``warmup + batches`` of them are read.
        device: Where to run.
        batches: Timed batches of each kind.
        warmup: Untimed batches first (allocation, cuDNN autotuning).
    """
    model.to(device)
    saved = copy.deepcopy(model.state_dict())
    was_training = model.training
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def step(images, targets, update: bool) -> None:
        with autocast(device):
            losses = model(images, targets)
        loss = sum(value.float() for value in losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if update:
            optimizer.step()

    def timed(run: Callable[[], int]) -> tuple[int, float]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        images = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return images, time.perf_counter() - started

    iterator = iter(loader)
    first = _to_device(*next(iterator), device)
    for _ in range(warmup):
        step(*first, update=False)

    def train_steps() -> int:
        count = 0
        for _ in range(batches):
            images, targets = _to_device(*next(iterator), device)
            step(images, targets, update=True)
            count += len(images)
        return count

    def forward_backward() -> int:
        for _ in range(batches):
            step(*first, update=False)
        return len(first[0]) * batches

    trained, train_seconds = timed(train_steps)
    pure, pure_seconds = timed(forward_backward)
    model.load_state_dict(saved)
    model.train(was_training)
    return Throughput(
        training=trained / train_seconds,
        forward_backward=pure / pure_seconds,
        batch_size=len(first[0]),
        batches=batches,
    )
