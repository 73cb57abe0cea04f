"""The fine-tune step for texts: the chosen probe on the frozen encoder, LoRA or LP-FT, or the TF-IDF baseline.

The decisions are the images' (:func:`tlops.steps.probes.choose_probe`, :func:`tlops.train.auto.decide`,
:func:`tlops.train.auto.keep_fine_tuned`); what differs is the model: an encoder with mean pooling and a head
(:class:`tlops.models.text_model.EncoderTextModel`), trained by :mod:`tlops.train.text_finetune`, or the TF-IDF
classifier (:class:`tlops.models.tfidf.TfidfClassifier`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tlops.errors import TlopsError
from tlops.estimates import image_difference
from tlops.models.extraction import weights_checksum
from tlops.models.names import TFIDF_BASELINE
from tlops.models.text_model import EncoderTextModel
from tlops.steps.encoders import TEXT_TASK, load_encoder, prepared_manifest, targets_of, texts_of
from tlops.steps.outputs import (
    LEARNING_CURVES_FILE,
    TFIDF_DIR,
    ModelConfig,
    ProbeSummary,
    Training,
    read_head,
    save_model,
    write_calibration_set,
)
from tlops.steps.probes import ProbeFit, choose_probe
from tlops.steps.runtime import Runtime
from tlops.train.auto import Evidence, keep_fine_tuned
from tlops.train.config import TrainConfig
from tlops.train.finetune import SINGLE_PROCESS, Distributed, balanced_class_weights
from tlops.train.resume import CheckpointStore
from tlops.train.strategies import STRATEGIES

logger = logging.getLogger(__name__)


def fine_tune_text(
    data_dir: Path,
    probe_dir: Path,
    output_dir: Path,
    config: TrainConfig,
    runtime: Runtime,
    *,
    features_dir: Path | None = None,
    selection_dir: Path | None = None,
    checkpoint_uri: str = "",
    distributed: Distributed = SINGLE_PROCESS,
) -> Training | None:
    """:func:`tlops.steps.fine_tune.fine_tune` for prepared texts (the same arguments and outputs)."""
    from tlops.steps.fine_tune import Outcome, _decide, _evidence, _training_record

    STRATEGIES.get(config.strategy).check_task(TEXT_TASK)
    if distributed.world_size > 1:
        raise TlopsError(
            f"text fine-tuning runs in one process, not {distributed.world_size}: set --processes-per-node 1 "
            "(a text encoder's LoRA or LP-FT fits one GPU)"
        )
    probe_summary = ProbeSummary.read(probe_dir)
    manifest, classes, _ = prepared_manifest(data_dir, runtime)
    class_weights = (
        balanced_class_weights(list(targets_of(manifest, "train", classes)), len(classes))
        if config.class_weighted
        else None
    )
    if probe_summary.backbone == TFIDF_BASELINE:
        if config.strategy_entry.trains_backbone:
            raise TlopsError(
                f"strategy {config.strategy!r} fine-tunes an encoder, but the TF-IDF baseline was chosen: "
                "pass --no-ship-baseline, or a probe strategy"
            )
        return _ship_tfidf(manifest, classes, probe_summary, output_dir, config) if distributed.is_main else None
    val_images = int((manifest["split"] == "val").sum())
    probe = choose_probe(probe_dir, features_dir, config, len(classes), class_weights, val_images, unit="texts")
    evidence = _evidence(manifest, probe_summary, probe, selection_dir, unit="texts")
    strategy, config, reasons = _decide(config, evidence, probe)
    encoder = load_encoder(TEXT_TASK, probe_summary.backbone, runtime)
    pretrained_checksum = weights_checksum(encoder.model)
    outcome = Outcome(strategy.name)
    if strategy.trains_backbone:
        outcome = _fine_tune_encoder(
            EncoderTextModel(encoder, read_head(probe_dir), runtime.device, runtime.batch_size),
            manifest, classes, strategy.name, config, runtime, evidence, probe,
            class_weights=class_weights,
            checkpoints=CheckpointStore(checkpoint_uri, runtime.s3) if checkpoint_uri else None,
            fingerprint={"encoder": probe_summary.backbone, "classes": classes},
        )  # fmt: skip
        reasons += outcome.reasons
    if not distributed.is_main:
        return None
    shipped_probe = outcome.model is None
    model = EncoderTextModel(encoder, probe.head) if shipped_probe else outcome.model
    training = _training_record(outcome, config, reasons, evidence, probe)
    model_config = ModelConfig(
        backbone=probe_summary.backbone,
        classes=classes,
        data_config=encoder.preprocessing(),
        strategy=outcome.strategy,
        head_hidden=probe.mlp_hidden if shipped_probe else 0,
        weights_sha256=pretrained_checksum,
        task=TEXT_TASK,
    )
    save_model(output_dir, model.classifier, model_config)
    if shipped_probe and probe.calibration is not None:
        write_calibration_set(output_dir, *probe.calibration)
    training.write(output_dir)
    if outcome.history:
        from tlops.evaluation.plots import learning_curves_figure, save_png

        save_png(learning_curves_figure(outcome.history), output_dir / LEARNING_CURVES_FILE)
    if checkpoint_uri:
        CheckpointStore(checkpoint_uri, runtime.s3).remove()
    return training


def _fine_tune_encoder(
    model: EncoderTextModel,
    manifest: pd.DataFrame,
    classes: list[str],
    strategy: str,
    config: TrainConfig,
    runtime: Runtime,
    evidence: Evidence,
    probe: ProbeFit,
    **options,
):
    """Fine-tune the encoder (LoRA or LP-FT) from the probe head; under ``auto`` keep it only if it beats the probe."""
    import copy

    from tlops.steps.fine_tune import Outcome
    from tlops.train.text_finetune import train_text_classifier

    val = (texts_of(manifest, "val"), targets_of(manifest, "val", classes))
    probe_correct = probe.validation_correct() if config.strategy == "auto" and probe.val is not None else None
    pretrained = copy.deepcopy(model.encoder.model.state_dict())
    run = train_text_classifier(
        model.classifier,
        model.encoder.tokenizer,
        (texts_of(manifest, "train"), targets_of(manifest, "train", classes)),
        val,
        strategy,
        config,
        runtime.device,
        **options,
    )
    tuned = EncoderTextModel(model.encoder, run.model.head, runtime.device, runtime.batch_size)
    tuned.encoder.model = run.model.encoder
    outcome = Outcome(strategy, tuned, run.history, run.best_epoch, getattr(run, "resumed_from", None))
    if probe_correct is None:
        return outcome
    correct = tuned.logits(val[0]).argmax(1) == val[1]
    difference = image_difference(correct, probe_correct, f"paired on {len(correct)} validation texts")
    keep, why = keep_fine_tuned(difference, evidence)
    outcome.reasons.append(why)
    if not keep:
        model.encoder.model.load_state_dict(pretrained)
        outcome.strategy, outcome.model, outcome.best_epoch = evidence.best_probe[0], None, 0
    return outcome


def _ship_tfidf(
    manifest: pd.DataFrame, classes: list[str], summary: ProbeSummary, output_dir: Path, config: TrainConfig
) -> Training:
    """Refit the TF-IDF classifier on train+val; its out-of-fold logits calibrate it, their accuracy estimates it."""
    from sklearn.model_selection import StratifiedKFold

    from tlops.estimates import fold_standard_error
    from tlops.models.tfidf import TfidfClassifier
    from tlops.steps.fine_tune import Outcome, _training_record

    texts = texts_of(manifest, "train") + texts_of(manifest, "val")
    targets = np.concatenate([targets_of(manifest, "train", classes), targets_of(manifest, "val", classes)])
    folds = int(min(5, np.bincount(targets, minlength=len(classes)).min()))
    weighting = "balanced" if config.class_weighted else None
    oof = np.zeros((len(texts), len(classes)), dtype=np.float32)
    fold_scores = []
    if folds >= 2:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
        for train, test in splitter.split(np.zeros(len(targets)), targets):
            fitted = TfidfClassifier().fit([texts[i] for i in train], targets[train], class_weight=weighting)
            oof[test] = fitted.logits([texts[i] for i in test])
            fold_scores.append(float((oof[test].argmax(1) == targets[test]).mean()))
    model = TfidfClassifier().fit(texts, targets, class_weight=weighting)
    estimate = float(np.mean(fold_scores)) if fold_scores else summary.val_accuracy
    std_error = fold_standard_error(fold_scores, folds) if fold_scores else 0.0
    basis = f"{folds}-fold CV on {len(texts)} train+val texts" if fold_scores else "the validation split"
    probe = ProbeFit(
        strategy="linear-probe",
        head=torch.nn.Identity(),
        accuracy=estimate,
        std_error=std_error,
        basis=basis,
        reasons=[f"TF-IDF baseline {estimate:.3f} ± {std_error:.3f} ({basis}); refitted on all {len(texts)} texts"],
        train_accuracy=float((model.logits(texts).argmax(1) == targets).mean()),
    )
    evidence = Evidence(
        train_images_per_class=manifest.loc[manifest["split"] == "train", "label"].value_counts().to_dict(),
        val_images=int((manifest["split"] == "val").sum()),
        linear_probe_val=summary.val_accuracy,
        backbone=TFIDF_BASELINE,
        probe_accuracy=estimate,
        probe_std_error=std_error,
        probe_basis=basis,
        unit="texts",
    )
    reasons = [evidence.describe(), *probe.reasons, "the no-transfer baseline has no encoder to fine-tune"]
    training = _training_record(Outcome("linear-probe"), config, reasons, evidence, probe)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save(output_dir / TFIDF_DIR)
    if fold_scores:
        write_calibration_set(output_dir, oof, targets)
    ModelConfig(
        backbone=TFIDF_BASELINE,
        classes=classes,
        data_config={},
        strategy="linear-probe",
        task=TEXT_TASK,
    ).write(output_dir)
    training.write(output_dir)
    return training
