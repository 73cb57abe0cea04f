"""Fine-tuning a text classifier from its probe head: ``lora`` (adapters, merged when trained) or ``lp-ft``.

The loop is the image loop's (:mod:`tlops.train.finetune`) for token ids: AdamW with layer-wise learning-rate decay
(:mod:`tlops.train.text_optim`), linear warm-up then cosine decay, gradient accumulation and clipping, bf16 autocast
on CUDA, length-bucketed batches (:mod:`tlops.train.text_batches`), the epoch that validates best kept (epoch 0:
the model as given, its probe head), and a checkpoint per epoch that a restarted run resumes from
(:class:`~tlops.train.resume.CheckpointStore`). It returns the image loop's :class:`TrainingRun` with the same
:class:`EpochRecord` history, so the same learning curves plot it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, replace

import torch
from torch import nn

from tlops.errors import TlopsError
from tlops.io.progress import progress
from tlops.settings import SettingError
from tlops.train.config import TrainConfig
from tlops.train.epoch import OptimizerStep
from tlops.train.finetune import EpochRecord, TrainingRun, micro_batch_size
from tlops.train.lora import add_lora, has_lora, merge_lora
from tlops.train.optim import warmup_cosine
from tlops.train.resume import CheckpointStore, rng_state, set_rng_state
from tlops.train.strategies import STRATEGIES, TEXT_CLASSIFICATION
from tlops.train.text_batches import encode_texts, length_batches
from tlops.train.text_epoch import evaluate_texts, train_text_epoch
from tlops.train.text_optim import encoder_layers, text_parameter_groups

logger = logging.getLogger(__name__)

Texts = tuple[Sequence[str], Sequence[int]]  # (texts, class indices)

# Image-only settings that change the training loop; a text run refuses them rather than ignore them.
IMAGE_ONLY = {"mixup": 0.0, "cutmix": 0.0, "swa_epochs": 0}


def check_text_settings(strategy: str, config: TrainConfig) -> str:
    """The canonical name of a text fine-tuning strategy, after checking the settings apply to text.

    Raises:
        SettingError: for a strategy that is not for text or does not fine-tune, or an image-only setting.
    """
    entry = STRATEGIES.get(strategy)
    entry.check_task(TEXT_CLASSIFICATION)
    if not entry.trains_backbone:
        raise SettingError(
            ("train.strategy",),
            "{0} " + f"{entry.name} fits a head on cached embeddings, it does not fine-tune: use lora or lp-ft",
        )
    check_no_image_settings(config)
    return entry.name


def check_no_image_settings(config: TrainConfig) -> None:
    """Refuse the image-only training settings (mixup, cutmix, SWA) set on a text run.

    Raises:
        SettingError: naming the setting.
    """
    for name, off in IMAGE_ONLY.items():
        if getattr(config, name) != off:
            raise SettingError((f"train.{name}",), "{0} applies to images only: leave it at " + f"{off:g} for text")


def text_fingerprint(train: Texts, val: Texts, strategy: str, config: TrainConfig) -> dict:
    """What a text checkpoint must match to be resumed: the texts and their classes, the strategy and settings."""
    digest = hashlib.sha256()
    for split, (texts, targets) in (("train", train), ("val", val)):
        digest.update(json.dumps([split, list(texts), [int(t) for t in targets]]).encode())
    return {
        "task": TEXT_CLASSIFICATION,
        "texts": digest.hexdigest(),
        "strategy": strategy,
        "config": dict(sorted(asdict(config).items())),
    }


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters that train (LoRA: the adapters and the head; lp-ft: everything)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put back what :func:`trainable_state` copied (the frozen weights are the model's own)."""
    unexpected = model.load_state_dict(state, strict=False).unexpected_keys
    if unexpected:  # pragma: no cover - a state of another model is refused by the checkpoint's fingerprint
        raise ValueError(f"weights of another model: {unexpected[:3]}")


def train_text_classifier(
    model: nn.Module,
    tokenizer,
    train: Texts,
    val: Texts,
    strategy: str,
    config: TrainConfig,
    device: torch.device,
    *,
    class_weights: torch.Tensor | None = None,
    checkpoints: CheckpointStore | None = None,
    fingerprint: dict | None = None,
    merge: bool = True,
) -> TrainingRun:
    """Fine-tune a text classifier whose head is already fitted (the probe), keeping the epoch that validates best.

    The model trains in place. Batches hold ``config.batch_size`` texts (over ``grad_accumulation`` micro-batches),
    cut to ``config.max_tokens`` tokens; the head trains at ``config.lr``, the encoder's layers below it at
    ``lr * layer_decay ** depth`` (:func:`~tlops.train.text_optim.text_parameter_groups`).

    Args:
        model: A :class:`~tlops.models.text_classifier.TextClassifier` with the probe head.
        tokenizer: The encoder's Hugging Face tokenizer.
        train: ``(texts, class indices)`` to train on.
        val: ``(texts, class indices)`` that choose the kept epoch.
        strategy: ``lora`` (adapters on the attention query and value of every layer, and the head) or ``lp-ft``
            (every weight).
        config: Every training setting (``lora_rank``, ``lora_alpha``, ``lora_dropout``, ``max_tokens`` for text).
        device: Where to train.
        class_weights: Per-class loss weights, or ``None``.
        checkpoints: Where to write a checkpoint each epoch and resume from; ``None``: no checkpoints.
        fingerprint: What else identifies the run (the encoder, the classes), added to :func:`text_fingerprint`.
        merge: Fold LoRA adapters into the encoder (a plain encoder comes back); ``False`` keeps the peft wrapper.

    Returns:
        The model with the kept weights in eval mode, the history (epoch 0 first) and the kept epoch.

    Raises:
        TlopsError: for a strategy or setting that does not apply to text, a batch that does not fit the data, an
            encoder that is not BERT-like, or a checkpoint of another run.
    """
    strategy = check_text_settings(strategy, config)
    encoded_train = encode_texts(tokenizer, *train, config.max_tokens)
    encoded_val = encode_texts(tokenizer, *val, config.max_tokens)
    if not len(encoded_train) or not len(encoded_val):
        raise TlopsError(
            f"text fine-tuning needs training and validation texts, got {len(encoded_train)} and {len(encoded_val)}: "
            "give both splits some texts"
        )
    micro_batch = micro_batch_size(config, len(encoded_train), 1, unit="texts")
    fingerprint = text_fingerprint(train, val, strategy, config) | (fingerprint or {})
    torch.manual_seed(config.seed)
    model = model.to(device)
    num_layers = encoder_layers(model)
    if strategy == "lora":
        model = add_lora(model, config)
    else:
        model.requires_grad_(True)
    model = model.to(device)  # the adapters too
    lengths = encoded_train.lengths
    num_batches = len(length_batches(lengths, micro_batch, config.seed, 1))
    # The adapters start at zero: they need a higher rate than fine-tuning pretrained weights (lora_lr).
    rates = replace(config, lr=config.lora_lr, layer_decay=1.0) if strategy == "lora" else config
    optimizer = torch.optim.AdamW(text_parameter_groups(model, rates))
    steps_per_epoch = math.ceil(num_batches / config.grad_accumulation)
    schedule = warmup_cosine(optimizer, config.epochs * steps_per_epoch, config.warmup_fraction)
    criterion = nn.CrossEntropyLoss(
        weight=class_weights.to(device) if class_weights is not None else None, label_smoothing=config.label_smoothing
    )

    run = TrainingRun(model=model)
    val_loss, val_accuracy = evaluate_texts(model, encoded_val, device)
    run.history.append(EpochRecord(0, None, None, val_loss, val_accuracy))
    best_accuracy, best_state = val_accuracy, trainable_state(model)
    start = 1
    saved = checkpoints.load(fingerprint) if checkpoints is not None else None
    if saved is not None:
        load_trainable_state(model, saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["scheduler"])
        run.history = [EpochRecord(**record) for record in saved["history"]]
        run.best_epoch, best_accuracy, best_state = saved["best_epoch"], saved["best_accuracy"], saved["best_state"]
        set_rng_state(saved["rng"])
        start = saved["epoch"] + 1
        run.resumed_from = saved["epoch"]
        logger.info("resuming from epoch %d of %d (checkpoint %s)", saved["epoch"], config.epochs, checkpoints.location)

    for epoch in range(start, config.epochs + 1):
        model.train()
        started = time.perf_counter()
        batches = progress(length_batches(lengths, micro_batch, config.seed, epoch), f"{strategy} epoch "
                           f"{epoch}/{config.epochs}", unit="batch")  # fmt: skip
        step = OptimizerStep(optimizer, schedule, model, config.grad_accumulation, config.clip_grad_norm)
        totals = train_text_epoch(model, encoded_train, batches, num_batches, criterion, step, device)
        seconds = time.perf_counter() - started
        val_loss, val_accuracy = evaluate_texts(model, encoded_val, device)
        record = EpochRecord(
            epoch,
            float(totals[0] / totals[2]),
            float(totals[1] / totals[2]),
            val_loss,
            val_accuracy,
            round(seconds, 3),
            round(float(totals[2]) / seconds, 2),
            num_layers,
        )
        run.history.append(record)
        logger.info(
            "epoch %d (%s): train loss %.4f, val loss %.4f, val acc %.4f, %.1f texts/s",
            epoch, strategy, record.train_loss, val_loss, val_accuracy, record.images_per_second,
        )  # fmt: skip
        if val_accuracy > best_accuracy:
            run.best_epoch, best_accuracy, best_state = epoch, val_accuracy, trainable_state(model)
        if checkpoints is not None:
            saving = time.perf_counter()
            state = {"epoch": epoch, "model": trainable_state(model), "optimizer": optimizer.state_dict()}
            state |= {"scheduler": schedule.state_dict(), "history": [vars(r) for r in run.history]}
            state |= {"rng": rng_state(), "best_epoch": run.best_epoch, "best_accuracy": best_accuracy}
            state |= {"best_state": best_state}
            checkpoints.save(state, fingerprint)
            record.checkpoint_seconds = round(time.perf_counter() - saving, 3)

    load_trainable_state(model, best_state)
    if merge and has_lora(model):
        model = merge_lora(model)
    run.model = model.eval()
    return run
