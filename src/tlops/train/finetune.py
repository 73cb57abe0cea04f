"""Parameter-based transfer: the one training loop every fine-tuning strategy runs.

The strategies differ only in which backbone blocks train in each epoch (:func:`~tlops.train.blocks.trained_blocks`):
``partial`` (the last N), ``surgical`` (the first, middle or last N), ``lp-ft`` (all, from the probe head) and
``gradual`` (one more from the top each epoch). The loop adds layer-wise learning-rate decay, warm-up and cosine
decay, gradient accumulation and clipping, MixUp/CutMix, SWA, bf16 autocast and channels_last, a checkpoint per
epoch that a restarted step resumes from, and DistributedDataParallel when started by torchrun.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tlops.data.sampling import EpochSampler, SeededAugmentation
from tlops.io.progress import progress
from tlops.models.device import autocast
from tlops.settings import SettingError
from tlops.train.blocks import trained_blocks
from tlops.train.config import TrainConfig
from tlops.train.epoch import OptimizerStep, Quiet, batch_mixer, train_epoch
from tlops.train.optim import parameter_groups, set_trainable, warmup_cosine
from tlops.train.resume import CheckpointStore, rng_state, set_rng_state
from tlops.train.strategies import IMAGE_CLASSIFICATION, STRATEGIES

logger = logging.getLogger(__name__)


@dataclass
class EpochRecord:
    """Loss and accuracy after one epoch (epoch 0 is the probe before fine-tuning).

    Attributes:
        epoch: The epoch (0: the probe).
        train_loss: Mean training loss (``None`` for the probe).
        train_accuracy: Training accuracy on the augmented images (``None`` for the probe).
        val_loss: Validation cross-entropy.
        val_accuracy: Validation accuracy.
        seconds: Training time of the epoch.
        images_per_second: Training throughput over all processes.
        blocks: How many backbone blocks trained.
        swa: The record of the weight average (after the last epoch).
        checkpoint_seconds: Time to write the epoch's checkpoint (the price of resumability).
    """

    epoch: int
    train_loss: float | None
    train_accuracy: float | None
    val_loss: float
    val_accuracy: float
    seconds: float | None = None
    images_per_second: float | None = None
    blocks: int | None = None
    swa: bool = False
    checkpoint_seconds: float | None = None


@dataclass(frozen=True)
class Distributed:
    """This process's place in a distributed run (one process: rank 0 of 1).

    Attributes:
        rank: Global rank.
        world_size: Processes in the run.
    """

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process evaluates, checkpoints and writes the outputs."""
        return self.rank == 0


SINGLE_PROCESS = Distributed()


@dataclass
class TrainingRun:
    """What :func:`train_classifier` returns.

    Attributes:
        model: The classifier with the kept weights, in eval mode.
        history: One record per epoch (the probe first).
        best_epoch: The kept epoch (0: the probe; the last epoch for an SWA average).
        resumed_from: The epoch the run resumed after, or ``None``.
    """

    model: nn.Module
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    resumed_from: int | None = None


def balanced_class_weights(targets: list[int], num_classes: int) -> torch.Tensor:
    """Weights ``n / (num_classes * n_c)`` per class, as scikit-learn's ``balanced`` (absent classes get 0)."""
    counts = torch.bincount(torch.tensor(targets, dtype=torch.long), minlength=num_classes).float()
    weights = len(targets) / (num_classes * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def _set_train_mode(model: nn.Module, freeze_batchnorm: bool) -> None:
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


@torch.no_grad()
def evaluate_loss(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of a classifier on a loader."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for images, targets in loader:
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with autocast(device):
            logits = model(images)
        total_loss += nn.functional.cross_entropy(logits.float(), targets, reduction="sum").item()
        correct += (logits.argmax(1) == targets).sum().item()
        count += len(targets)
    return total_loss / count, correct / count


def micro_batch_size(config: TrainConfig, train_images: int, world_size: int, unit: str = "images") -> int:
    """Examples per forward pass of one process: the global batch over processes and accumulation steps.

    A global batch larger than the training split is cut to the split (rounded down to a multiple of the
    processes x accumulation steps), with a warning: small datasets train with the default batch size. ``unit``
    names the examples in messages (``images``, ``texts``).

    Raises:
        TlopsError: when the training split cannot give every process one image per step.
    """
    parts = world_size * config.grad_accumulation
    batch = config.batch_size
    if batch > train_images:
        batch = train_images - train_images % parts
        logger.warning(
            "--batch-size %d is larger than the training split (%d %s): training with batches of %d",
            config.batch_size, train_images, unit, batch,
        )  # fmt: skip
    if batch < parts or batch % parts:
        raise SettingError(
            ("train.batch_size",),
            "{0} " + f"{config.batch_size} does not split over {world_size} processes x {config.grad_accumulation} "
            f"accumulation steps with {train_images} training {unit}: use a multiple of {parts} no larger than "
            f"{train_images}",
        )
    return batch // parts


def train_classifier(
    classifier: nn.Module,
    train_set: Dataset,
    val_loader: DataLoader,
    config: TrainConfig,
    device: torch.device,
    *,
    strategy: str,
    blocks: list[list[str]],
    num_classes: int,
    workers: int = 0,
    pin_memory: bool = False,
    class_weights: torch.Tensor | None = None,
    checkpoints: CheckpointStore | None = None,
    fingerprint: dict | None = None,
    distributed: Distributed = SINGLE_PROCESS,
) -> TrainingRun:
    """Fine-tune a classifier whose head is already fitted (the probe), keeping the epoch that validates best.

    Args:
        classifier: ``Sequential(normalize, backbone, head)`` with the probe head.
        train_set: Training images with their augmentation (indexed by position).
        val_loader: Validation images (evaluation preprocessing).
        config: Every training setting.
        device: Where to train.
        strategy: ``partial``, ``surgical``, ``lp-ft`` or ``gradual``.
        blocks: The backbone's block groups.
        num_classes: Outputs (for MixUp/CutMix targets).
        workers: DataLoader worker processes.
        pin_memory: Page-locked batches (CUDA).
        class_weights: Per-class loss weights, or ``None``.
        checkpoints: Where to write a checkpoint each epoch and resume from; ``None``: no checkpoints.
        fingerprint: What identifies this run (a checkpoint with another one is refused).
        distributed: Rank and world size under torchrun (the process group must be initialised).

    Returns:
        The model with the kept weights, the history and the kept epoch.

    Raises:
        TlopsError: for a strategy of another task (``lora``), a batch that does not fit the data, or a checkpoint
            of another run.
    """
    STRATEGIES.get(strategy).check_task(IMAGE_CLASSIFICATION)
    micro_batch = micro_batch_size(config, len(train_set), distributed.world_size)  # type: ignore[arg-type]
    torch.manual_seed(config.seed)
    classifier = classifier.to(device=device, memory_format=torch.channels_last)
    sampler = EpochSampler(len(train_set), config.seed, distributed.world_size, distributed.rank)  # type: ignore[arg-type]
    loader = DataLoader(
        SeededAugmentation(train_set, config.seed),
        batch_size=micro_batch,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(config.seed),
    )
    ever_trained = sorted(
        {i for e in range(1, config.epochs + 1) for i in trained_blocks(strategy, len(blocks), config, e)}
    )
    optimizer = torch.optim.AdamW(parameter_groups(classifier, blocks, ever_trained, config))
    steps_per_epoch = math.ceil(len(loader) / config.grad_accumulation)
    schedule = warmup_cosine(optimizer, config.epochs * steps_per_epoch, config.warmup_fraction)
    swa_model = torch.optim.swa_utils.AveragedModel(classifier) if config.swa_epochs else None
    criterion = nn.CrossEntropyLoss(
        weight=class_weights.to(device) if class_weights is not None else None, label_smoothing=config.label_smoothing
    )
    mixer = batch_mixer(config, num_classes)
    forward = torch.compile(classifier) if config.torch_compile else classifier

    run = TrainingRun(model=classifier)
    best_accuracy, best_state = -1.0, None
    if distributed.is_main:
        val_loss, val_accuracy = evaluate_loss(classifier, val_loader, device)
        run.history.append(EpochRecord(0, None, None, val_loss, val_accuracy))
    start = 1
    saved = checkpoints.load(fingerprint or {}) if checkpoints is not None else None
    if saved is not None:
        classifier.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["scheduler"])
        if swa_model is not None and saved.get("swa") is not None:
            swa_model.load_state_dict(saved["swa"])
        run.history = [EpochRecord(**record) for record in saved["history"]]
        run.best_epoch, best_accuracy, best_state = saved["best_epoch"], saved["best_accuracy"], saved["best_state"]
        set_rng_state(saved["rng"])
        start = saved["epoch"] + 1
        run.resumed_from = saved["epoch"]
        logger.info("resuming from epoch %d of %d (checkpoint %s)", saved["epoch"], config.epochs, checkpoints.location)

    for epoch in range(start, config.epochs + 1):
        trainable = trained_blocks(strategy, len(blocks), config, epoch)
        set_trainable(classifier, blocks, trainable)
        model = forward
        if distributed.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(classifier, device_ids=[device.index] if device.type == "cuda" else None)
        _set_train_mode(classifier, config.freeze_batchnorm)
        sampler.set_epoch(epoch)
        started = time.perf_counter()
        desc = f"fine-tune epoch {epoch}/{config.epochs}"
        batches = progress(loader, desc, unit="batch") if distributed.is_main else Quiet(loader)
        step = OptimizerStep(optimizer, schedule, classifier, config.grad_accumulation, config.clip_grad_norm)
        totals = train_epoch(model, batches, len(loader), criterion, step, mixer, device, distributed.world_size > 1)
        seconds = time.perf_counter() - started
        if distributed.world_size > 1:
            torch.distributed.all_reduce(totals)
        if swa_model is not None and epoch > config.epochs - config.swa_epochs:
            swa_model.update_parameters(classifier)
        if distributed.is_main:
            val_loss, val_accuracy = evaluate_loss(classifier, val_loader, device)
            record = EpochRecord(
                epoch,
                float(totals[0] / totals[2]),
                float(totals[1] / totals[2]),
                val_loss,
                val_accuracy,
                round(seconds, 3),
                round(float(totals[2]) / seconds, 2),
                len(trainable),
            )
            run.history.append(record)
            logger.info(
                "epoch %d: %d blocks trained, train loss %.4f, val loss %.4f, val acc %.4f, %.1f images/s",
                epoch,
                len(trainable),
                record.train_loss,
                val_loss,
                val_accuracy,
                record.images_per_second,
            )
            if swa_model is None and val_accuracy > best_accuracy:
                run.best_epoch, best_accuracy, best_state = epoch, val_accuracy, copy.deepcopy(classifier.state_dict())
            if checkpoints is not None:
                saving = time.perf_counter()
                state = {"epoch": epoch, "model": classifier.state_dict(), "optimizer": optimizer.state_dict()}
                state |= {"scheduler": schedule.state_dict(), "history": [vars(r) for r in run.history]}
                state |= {"swa": swa_model.state_dict() if swa_model is not None else None, "rng": rng_state()}
                state |= {"best_epoch": run.best_epoch, "best_accuracy": best_accuracy, "best_state": best_state}
                checkpoints.save(state, fingerprint or {})
                record.checkpoint_seconds = round(time.perf_counter() - saving, 3)
        if distributed.world_size > 1:
            torch.distributed.barrier()

    if swa_model is not None and distributed.is_main:
        best_accuracy, best_state = _keep_average(
            run, swa_model, classifier, loader, val_loader, config, device, best_accuracy, best_state
        )
    if best_state is not None:
        classifier.load_state_dict(best_state)
    run.model = classifier.to(memory_format=torch.contiguous_format).eval()
    return run


def _keep_average(run, swa_model, classifier, loader, val_loader, config, device, probe_accuracy, probe_state):
    """Evaluate the weight average; keep it unless the probe validates better."""
    classifier.load_state_dict(swa_model.module.state_dict())
    if not config.freeze_batchnorm:  # the statistics of the averaged weights (frozen ones stay the pretrained ones)
        _set_train_mode(classifier, False)
        torch.optim.swa_utils.update_bn(loader, classifier, device)
    val_loss, val_accuracy = evaluate_loss(classifier, val_loader, device)
    run.history.append(EpochRecord(config.epochs, None, None, val_loss, val_accuracy, swa=True))
    logger.info(
        "weight average of the last %d epochs: val loss %.4f, val acc %.4f", config.swa_epochs, val_loss, val_accuracy
    )
    if val_accuracy > probe_accuracy:
        run.best_epoch = config.epochs
        return val_accuracy, copy.deepcopy(classifier.state_dict())
    return probe_accuracy, probe_state
