"""The register step: log the run to MLflow, register the model version, move the aliases, write the summary."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tlops.io.provenance import git_commit, tlops_version
from tlops.promotion.registry import RegistryConfig, RunRecord, register_model
from tlops.promotion.tracking import check_tracking_server
from tlops.steps.audit_summary import audit_files, audit_metrics, audit_summary, read_audit
from tlops.steps.outputs import (
    LOGGED_FILES,
    REPORT_FILE,
    SELECTION_TABLE_ARTIFACT,
    Comparison,
    Evaluation,
    RunSummary,
    Selection,
    Training,
    load_model,
    load_prepared,
)
from tlops.steps.summary import run_summary

if TYPE_CHECKING:
    from tlops.steps.config import ExportConfig
    from tlops.steps.runtime import Runtime

logger = logging.getLogger(__name__)


def register(
    data_dir: Path,
    model_dir: Path,
    evaluation_dir: Path,
    config: RegistryConfig,
    *,
    output_dir: Path | None = None,
    selection_dir: Path | None = None,
    audit_dir: Path | None = None,
    lineage: dict[str, str] | None = None,
    run_config: dict | None = None,
    client=None,
    export: ExportConfig | None = None,
    runtime: Runtime | None = None,
) -> RunSummary:
    """Register the evaluated model in MLflow and assemble the run summary.

    The new version becomes ``challenger``. It becomes ``champion`` only when the evaluate step's gate, run
    against this registry and model name, passed against the version that is still the champion (or found none
    and there still is none); otherwise the champion is left alone and the summary says why.

    Args:
        data_dir: Output of the prepare-data step.
        model_dir: Output of the fine-tune step.
        evaluation_dir: Output of the evaluate step (with the gate's comparison).
        config: Tracking URI, experiment and registered model name.
        output_dir: Where ``run_summary.json`` is written, if given.
        selection_dir: Output of the select-backbone step, logged with the run when given.
        audit_dir: Output of the audit step: its report, record and contact sheet are logged under ``audit/``, its
            counts as ``audit_*`` metrics, and the summary says what it found and what training left out.
        lineage: Where the run happened, from the caller's environment (``kfp_run_id``, ``kfp_pipeline_name``,
            ``git_commit`` of a container image, ...); the tlops version, the git commit of a source checkout and
            the pretrained weights' checksum are added here.
        run_config: The run's settings (:meth:`RunConfig.to_mapping`), logged as ``config/config.yaml`` so that
            ``tlops run --config config.yaml`` repeats the run.
        client: ``MlflowClient`` for the registry calls (one for ``config.tracking_uri`` when ``None``).
        export: Export the registered image classifier too (:mod:`tlops.steps.export`), gated on its accuracy.
        runtime: Device, workers and caches of the export.

    Raises:
        TlopsError: when an input folder is not the expected step output, the tracking server does not answer
            (all checked before anything is logged), or registration fails (nothing is left registered).
    """
    manifest, prepared = load_prepared(data_dir)
    model, model_config = load_model(model_dir)
    training = Training.read(model_dir)
    evaluation = Evaluation.read(evaluation_dir)
    comparison = Comparison.read(evaluation_dir)
    folders = [Path(data_dir), Path(evaluation_dir), Path(model_dir)]
    selection = Selection.read(selection_dir) if selection_dir is not None else None
    if selection_dir is not None:
        folders.append(Path(selection_dir))
    audit = read_audit(audit_dir) if audit_dir is not None else None
    check_tracking_server(config.tracking_uri)
    same_registry = (comparison.tracking_uri, comparison.model_name) == (config.tracking_uri, config.model_name)
    record = RunRecord(
        prepared=prepared,
        manifest=manifest,
        model=model,
        backbone=model_config.backbone,
        data_config=model_config.data_config,
        training=training.to_dict(),
        metrics=evaluation.metrics | audit_metrics(audit, training),
        comparison=comparison.to_dict(),
        artifacts=artifact_files(folders) + audit_files(audit_dir),
        promote=comparison.promote if same_registry else None,
        compared_champion=comparison.champion_version,
        tables={SELECTION_TABLE_ARTIFACT: selection.rows} if selection else {},
        temperature=float(evaluation.calibration.get("temperature", 1.0)),
        lineage=model_lineage(model_config.weights_sha256, lineage or {}),
    )
    with tempfile.TemporaryDirectory(prefix="tlops-config-") as folder:
        if run_config is not None:
            import yaml

            settings = Path(folder) / "config.yaml"
            settings.write_text(yaml.safe_dump(run_config, sort_keys=False), encoding="utf-8")
            record.artifacts.append((settings, "config"))
        registration = register_model(record, config, client=client)
    logger.info("registered %s version %s: %s", config.model_name, registration.version, registration.champion_reason)
    summary = run_summary(prepared, model_config, training, evaluation, comparison, registration, selection)
    summary.audit = audit_summary(audit, training)
    if export is not None and runtime is not None:
        from tlops.steps.export import run_export

        summary.export = run_export(
            export,
            data_dir,
            model,
            model_config,
            record.temperature,
            registration,
            runtime=runtime,
            output_dir=output_dir,
        )
    if output_dir is not None:
        summary.write(output_dir)
    return summary


def model_lineage(weights_sha256: str, given: dict[str, str]) -> dict[str, str]:
    """The lineage tags: the pretrained weights' checksum, the tlops version and commit, and what the caller gave."""
    lineage = {"weights_sha256": weights_sha256, "tlops_version": tlops_version(), "git_commit": git_commit() or ""}
    return lineage | {key: value for key, value in given.items() if value}


def artifact_files(folders: list[Path]) -> list[tuple[Path, str]]:
    """The step outputs logged with the run: the report under ``data/``, the rest under ``report/``."""
    return [
        (path, "data" if name == REPORT_FILE else "report")
        for folder in folders
        for name in LOGGED_FILES
        if (path := Path(folder) / name).is_file()
    ]
