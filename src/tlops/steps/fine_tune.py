"""The fine-tune step: the final classifier from the probe head with the chosen transfer strategy."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from tlops.data.loading import make_loader, split_dataset
from tlops.data.preprocessing import eval_transform, train_transform
from tlops.errors import TlopsError
from tlops.estimates import image_difference
from tlops.io.storage import check_writable_location
from tlops.models.backbones import Backbone, load_backbone
from tlops.models.extraction import weights_checksum
from tlops.steps.common import localized_manifest
from tlops.steps.config import RunConfig
from tlops.steps.encoders import is_detection, is_text
from tlops.steps.outputs import (
    LEARNING_CURVES_FILE,
    ModelConfig,
    PreparedData,
    ProbeSummary,
    Selection,
    Training,
    read_head,
    save_model,
    write_calibration_set,
)
from tlops.steps.probes import ProbeFit, choose_probe
from tlops.steps.runtime import Runtime
from tlops.tasks import task_of
from tlops.train.auto import Evidence, decide, keep_fine_tuned
from tlops.train.blocks import block_groups
from tlops.train.config import TrainConfig
from tlops.train.finetune import (
    SINGLE_PROCESS,
    Distributed,
    EpochRecord,
    TrainingRun,
    balanced_class_weights,
    train_classifier,
)
from tlops.train.resume import CheckpointStore
from tlops.train.strategies import STRATEGIES, Strategy

logger = logging.getLogger(__name__)


def fine_tune(
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
    """Produce the final classifier with the chosen transfer strategy, starting from the probe head.

    Writes the model (``model.safetensors``, ``model_config.json``), ``training.json`` and, when layers were
    fine-tuned, ``learning_curves.png`` into ``output_dir`` (on rank 0 only under torchrun).

    Args:
        data_dir: Output of the prepare-data step.
        probe_dir: The probe/ folder of the extract-features step.
        output_dir: Where the model goes.
        config: The strategy and every training setting.
        runtime: Device, workers, S3 client.
        features_dir: The features/ folder of extract-features (``mlp-probe`` needs it; ``auto`` uses it).
        selection_dir: The select-backbone output, whose table ``auto`` reads (optional).
        checkpoint_uri: Folder or ``s3://`` prefix for the per-epoch checkpoint a restarted step resumes from
            (``""``: none).
        distributed: Rank and world size when started by torchrun.

    Returns:
        The training record (``None`` on ranks other than 0).

    Raises:
        TlopsError: for inputs of the wrong kind or of other classes, options the data or backbone cannot take,
            or a checkpoint of another run.
    """
    prepared = PreparedData.read(data_dir)
    if is_text(prepared.task):
        from tlops.steps.fine_tune_text import fine_tune_text

        return fine_tune_text(
            data_dir, probe_dir, output_dir, config, runtime,
            features_dir=features_dir, selection_dir=selection_dir, checkpoint_uri=checkpoint_uri,
            distributed=distributed,
        )  # fmt: skip
    if is_detection(prepared.task):
        from tlops.steps.fine_tune_detection import fine_tune_detection

        return fine_tune_detection(
            data_dir, probe_dir, output_dir, config, runtime, checkpoint_uri=checkpoint_uri, distributed=distributed
        )
    STRATEGIES.get(config.strategy).check_task(task_of(prepared.task).name)
    probe_summary = ProbeSummary.read(probe_dir)
    if probe_summary.classes != prepared.classes:
        raise TlopsError(
            f"the probe in {probe_dir} was fitted on other classes than the dataset in {data_dir} has: "
            "run tlops extract-features on this dataset"
        )
    if config.strategy == "mlp-probe" and features_dir is None:
        raise TlopsError(
            "--strategy mlp-probe trains on the cached features: pass --features (extract-features' features/)"
        )
    if checkpoint_uri:
        check_writable_location(checkpoint_uri, runtime.s3, "--checkpoint-uri")
    manifest, classes = localized_manifest(data_dir, runtime)
    class_weights = (
        balanced_class_weights(
            [classes.index(label) for label in manifest[manifest["split"] == "train"]["label"]], len(classes)
        )
        if config.class_weighted
        else None
    )
    task = task_of(prepared.task)  # the model on the backbone is the task's
    val_images = int((manifest["split"] == "val").sum())
    probe = choose_probe(probe_dir, features_dir, config, len(classes), class_weights, val_images)
    evidence = _evidence(manifest, probe_summary, probe, selection_dir)
    strategy, config, reasons = _decide(config, evidence, probe)
    backbone = load_backbone(
        probe_summary.backbone, image_size=probe_summary.image_size, s3=runtime.s3, cache_dir=runtime.cache_dir
    )
    pretrained_checksum = weights_checksum(backbone.model)  # lineage: which pretrained weights this started from
    if strategy.trains_backbone:
        checkpoints = CheckpointStore(checkpoint_uri, runtime.s3) if checkpoint_uri else None
        outcome = _fine_tune_backbone(
            task.build_model(backbone, len(classes), head=read_head(probe_dir)), backbone, manifest, classes,
            strategy, config, runtime, evidence,
            probe=probe, features_dir=features_dir,
            class_weights=class_weights, checkpoints=checkpoints, distributed=distributed,
            fingerprint=_fingerprint(probe_summary.backbone, classes, manifest, strategy.name, config),
        )  # fmt: skip
        if outcome is None:  # another rank of a torchrun group: rank 0 writes
            return None
        reasons += outcome.reasons
    elif not distributed.is_main:
        return None
    else:
        outcome = Outcome(strategy.name)
    shipped_probe = outcome.model is None
    if shipped_probe:  # the chosen probe's head on the frozen backbone
        outcome.model = task.build_model(backbone, len(classes), head=probe.head).eval()
    training = _training_record(outcome, config, reasons, evidence, probe)
    model_config = ModelConfig(
        backbone=backbone.name,
        classes=classes,
        data_config=asdict(backbone.data_config),
        strategy=outcome.strategy,
        head_hidden=probe.mlp_hidden if shipped_probe else 0,
        weights_sha256=pretrained_checksum,
    )
    save_model(output_dir, outcome.model, model_config)
    if shipped_probe and probe.calibration is not None:  # the head saw the validation split
        write_calibration_set(output_dir, *probe.calibration)
    training.write(output_dir)
    if outcome.history:
        from tlops.evaluation.plots import learning_curves_figure, save_png

        curves = learning_curves_figure([r for r in outcome.history if not r.swa])
        save_png(curves, output_dir / LEARNING_CURVES_FILE)
    if checkpoint_uri:
        CheckpointStore(checkpoint_uri, runtime.s3).remove()
    return training


@dataclass
class Outcome:
    """What training produced: the strategy kept, its model (``None``: a probe's, built from its head), its epochs.

    Attributes:
        strategy: The strategy whose model is kept (``auto`` may roll back to a probe).
        model: The fine-tuned classifier, or ``None`` for a probe.
        history: The epochs trained (empty for a probe).
        best_epoch: The epoch whose weights were kept (0: the probe's).
        resumed_from: The checkpoint's epoch a restarted run resumed from.
        reasons: What happened, for the record (resumed, kept or rolled back).
    """

    strategy: str
    model: nn.Module | None = None
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    resumed_from: int | None = None
    reasons: list[str] = field(default_factory=list)


def _decide(config: TrainConfig, evidence: Evidence, probe: ProbeFit) -> tuple[Strategy, TrainConfig, list[str]]:
    """The strategy to train (``auto`` decides from the evidence), the settings it trains with, and why."""
    name, reasons = decide(config, evidence)
    if STRATEGIES.get(name).kind == "feature-based" or config.strategy == "auto":
        reasons = [*reasons[:1], *probe.reasons, *reasons[1:]]  # how the probe was chosen, after the evidence
    for reason in reasons:
        logger.info("strategy %s: %s", name, reason)
    return STRATEGIES.get(name), config, reasons


def _fine_tune_backbone(
    model: nn.Module,
    backbone: Backbone,
    manifest,
    classes: list[str],
    strategy: Strategy,
    config: TrainConfig,
    runtime: Runtime,
    evidence: Evidence,
    *,
    probe: ProbeFit,
    features_dir: Path | None,
    **loop_options,
) -> Outcome | None:
    """Train the blocks ``strategy`` names; under ``auto`` keep the result only when it beats the chosen probe.

    ``model`` is the task's model on ``backbone``, starting from the linear probe's head. ``auto`` compares the
    fine-tuned model with the chosen probe fitted on the training split, image by image on the validation split.

    Returns:
        The outcome on rank 0 (``None`` on the other ranks of a torchrun group). When ``auto`` rolls back, the
        backbone's pretrained weights are restored and the outcome is the best probe's.
    """
    blocks = block_groups(backbone.model)
    strategy.trained_blocks(len(blocks), config)  # refuses more blocks than there are
    probe_correct = None
    if config.strategy == "auto" and loop_options["distributed"].is_main:  # what the fine-tuned model must beat
        probe_correct = (
            probe.validation_correct()
            if probe.val is not None
            else _validation_correct(model, backbone, manifest, classes, runtime)  # the linear probe, frozen
        )
    pretrained = copy.deepcopy(backbone.model.state_dict())  # training updates the backbone in place
    run = _train_backbone(model, backbone, manifest, classes, strategy.name, blocks, config, runtime, **loop_options)
    if not loop_options["distributed"].is_main:
        return None
    outcome = Outcome(strategy.name, run.model, run.history, run.best_epoch, run.resumed_from)
    if run.resumed_from is not None:
        outcome.reasons.append(f"resumed from the checkpoint of epoch {run.resumed_from}")
    if config.strategy != "auto":
        return outcome
    assert probe_correct is not None
    correct = _validation_correct(run.model, backbone, manifest, classes, runtime)
    difference = image_difference(correct, probe_correct, f"paired on {len(correct)} validation images")
    keep, why = keep_fine_tuned(difference, evidence)
    outcome.reasons.append(why)
    if not keep:
        backbone.model.load_state_dict(pretrained)
        outcome.strategy, outcome.model, outcome.best_epoch = evidence.best_probe[0], None, 0
    return outcome


def _validation_correct(model: nn.Module, backbone: Backbone, manifest, classes: list[str], runtime: Runtime):
    """Per-image correctness of ``model`` on the validation split, in the manifest's order (as the features).

    Under ``no_grad``, not inference mode: the model may be trained afterwards.
    """
    import numpy as np
    import torch

    loader = make_loader(
        split_dataset(manifest, "val", classes, eval_transform(backbone.data_config)),
        runtime.batch_size,
        workers=runtime.workers,
        pin_memory=runtime.pin_memory,
    )
    was_training = model.training
    model.eval().to(runtime.device)
    correct = []
    with torch.no_grad():
        for images, labels in loader:
            predicted = model(images.to(runtime.device)).argmax(1).cpu()
            correct.append((predicted == labels).numpy())
    model.train(was_training)
    return np.concatenate(correct) if correct else np.zeros(0, dtype=bool)


def _training_record(
    outcome: Outcome, config: TrainConfig, reasons: list[str], evidence: Evidence, probe: ProbeFit
) -> Training:
    """The training record (``training.json``): what was trained, why, and each epoch's numbers.

    For a shipped probe the validation accuracy is the probe's estimate (cross-validated on small data).
    """
    records = [asdict(r) for r in outcome.history]
    records = records or [asdict(EpochRecord(0, None, probe.train_accuracy, float("nan"), probe.accuracy))]
    best = outcome.best_epoch
    val_accuracy = (
        probe.accuracy if best == 0 else next(r["val_accuracy"] for r in reversed(records) if r["epoch"] == best)
    )
    throughput = [r["images_per_second"] for r in records if r.get("images_per_second")]
    return Training(
        strategy=outcome.strategy,
        requested_strategy=config.strategy,
        reasons=reasons,
        best_epoch=best,
        val_accuracy=val_accuracy,
        probe_val_accuracy=probe.accuracy,
        history=[{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in records],
        config=asdict(config),
        evidence=asdict(evidence),
        resumed_from=outcome.resumed_from,
        images_per_second=round(sum(throughput) / len(throughput), 2) if throughput else None,
    )


def _evidence(
    manifest, probe_summary: ProbeSummary, probe: ProbeFit, selection_dir: Path | None, unit: str = "images"
) -> Evidence:
    """What ``auto`` decides from: the data's size, the chosen probe's estimate, the selection table's scores."""
    train_rows = manifest[manifest["split"] == "train"]
    evidence = Evidence(
        train_images_per_class=train_rows["label"].value_counts().to_dict(),
        val_images=int((manifest["split"] == "val").sum()),
        linear_probe_val=probe_summary.val_accuracy,
        backbone=probe_summary.backbone,
        probe=probe.strategy,
        probe_accuracy=probe.accuracy,
        probe_std_error=probe.std_error,
        probe_basis=probe.basis,
        cross_validation=probe.cross_validation,
        unit=unit,
    )
    _add_selection_evidence(evidence, selection_dir, probe_summary.backbone)
    return evidence


def _train_backbone(
    model: nn.Module,
    backbone: Backbone,
    manifest,
    classes: list[str],
    strategy: str,
    blocks: list[list[str]],
    config: TrainConfig,
    runtime: Runtime,
    **loop_options,
) -> TrainingRun:
    """Fine-tune the backbone's blocks the strategy names, from the probe head, on the augmented training split."""
    train_set = split_dataset(
        manifest,
        "train",
        classes,
        train_transform(backbone.data_config, config.hflip, config.crop_scale, config.trivial_augment),
    )
    val_loader = make_loader(
        split_dataset(manifest, "val", classes, eval_transform(backbone.data_config)),
        runtime.batch_size,
        workers=runtime.workers,
        pin_memory=runtime.pin_memory,
    )
    return train_classifier(
        model,
        train_set,
        val_loader,
        config,
        runtime.device,
        strategy=strategy,
        blocks=blocks,
        num_classes=len(classes),
        workers=runtime.workers,
        pin_memory=runtime.pin_memory,
        **loop_options,
    )


def _add_selection_evidence(evidence: Evidence, selection_dir: Path | None, backbone: str) -> None:
    """Copy the chosen backbone's kNN and probe scores and the raw-pixel baseline's from the selection table."""
    if selection_dir is None:
        return
    selection = Selection.read(selection_dir)
    row = next((r for r in selection.ranking if r.get("name") == backbone), None)
    if row is not None:
        evidence.knn_accuracy = row.get("knn_accuracy")
        evidence.backbone_probe = row.get("probe_accuracy")
    if selection.baseline:
        evidence.baseline_probe = selection.baseline.get("probe_accuracy")


def _fingerprint(backbone: str, classes: list[str], manifest, strategy: str, config: TrainConfig) -> dict:
    """What a checkpoint must match to be resumed: backbone, classes, training images, strategy and settings."""
    rows = manifest[manifest["split"].isin(["train", "val"])]
    digest = hashlib.sha256("\n".join(sorted(rows["split"] + ":" + rows["sha256"])).encode()).hexdigest()
    return {
        "backbone": backbone,
        "classes": list(classes),
        "dataset": digest,
        "strategy": strategy,
        "config": {k: v for k, v in sorted(asdict(config).items())},
    }


def worker_request(
    data_dir: Path | str,
    probe_dir: Path | str,
    output_dir: Path | str,
    config: RunConfig,
    *,
    features_dir: Path | str | None = None,
    selection_dir: Path | str | None = None,
) -> str:
    """The one JSON argument of :mod:`tlops.steps.ddp_worker`: the step's folders and the whole run config."""
    folders = {"dataset": data_dir, "probe": probe_dir, "output": output_dir}
    folders |= {"features": features_dir, "selection": selection_dir}
    request = {name: (str(value) if value is not None else None) for name, value in folders.items()}
    return json.dumps(request | {"config": config.to_mapping()}, sort_keys=True)


def torchrun_command(processes: int, request: str) -> list[str]:
    """``torch.distributed.run`` module arguments that start the fine-tune worker in ``processes`` processes.

    Run as ``python -m <these>``; every process joins one process group (gloo on CPUs, NCCL on GPUs) and rank 0
    writes the outputs. A TrainJob runs the same worker: ``torchrun -m tlops.steps.ddp_worker REQUEST``.
    """
    return ["torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m", "tlops.steps.ddp_worker",
            request]  # fmt: skip


def fine_tune_on_processes(
    data_dir: Path,
    probe_dir: Path,
    output_dir: Path,
    config: RunConfig,
    runtime: Runtime,
    *,
    features_dir: Path | None = None,
    selection_dir: Path | None = None,
    audit_dir: Path | None = None,
) -> Training:
    """:func:`fine_tune` in this process, or in ``config.resources.processes_per_node`` DDP processes (torchrun).

    The settings are ``config.train``; the checkpoint goes to ``config.storage.checkpoint_uri``. Under torchrun
    every process gets the whole config as one JSON argument, so no setting falls back to its default. With
    ``config.audit.exclude_suspected_label_errors`` the training examples the audit in ``audit_dir`` flagged are
    dropped from the dataset and the features first (:mod:`tlops.steps.exclusion`), for every strategy and process;
    the training record counts them.

    Raises:
        TlopsError: as :func:`fine_tune`; when the exclusion is asked for without an audit; or when the torchrun
            processes fail.
    """
    if not config.audit.exclude_suspected_label_errors:
        return _fine_tune_processes(data_dir, probe_dir, output_dir, config, runtime, features_dir, selection_dir)
    if audit_dir is None:
        raise TlopsError(
            "--exclude-suspected-label-errors needs the audit: pass --audit (the folder tlops audit wrote)"
        )
    import tempfile

    from tlops.steps.exclusion import exclude_flagged

    with tempfile.TemporaryDirectory(prefix="tlops-excluded-") as work:
        excluded = exclude_flagged(data_dir, features_dir, audit_dir, Path(work))
        training = _fine_tune_processes(
            excluded.data_dir, probe_dir, output_dir, config, runtime, excluded.features_dir, selection_dir
        )
    training.excluded_label_errors = len(excluded.dropped)
    training.reasons.append(f"trained without {len(excluded.dropped)} suspected label errors the audit flagged")
    training.write(output_dir)
    return training


def _fine_tune_processes(
    data_dir: Path,
    probe_dir: Path,
    output_dir: Path,
    config: RunConfig,
    runtime: Runtime,
    features_dir: Path | None,
    selection_dir: Path | None,
) -> Training:
    """:func:`fine_tune` in this process, or in torchrun processes that each get the whole config."""
    inputs = {"features_dir": features_dir, "selection_dir": selection_dir}
    processes = config.resources.processes_per_node
    if processes <= 1:
        training = fine_tune(
            data_dir, probe_dir, output_dir, config.train, runtime, checkpoint_uri=config.storage.checkpoint_uri,
            **inputs,
        )  # fmt: skip
        assert training is not None  # one process is rank 0
        return training
    import subprocess
    import sys

    command = torchrun_command(processes, worker_request(data_dir, probe_dir, output_dir, config, **inputs))
    if subprocess.run([sys.executable, "-m", *command], check=False).returncode != 0:
        raise TlopsError(f"fine-tuning in {processes} torchrun processes failed: see their log above")
    return Training.read(output_dir)
