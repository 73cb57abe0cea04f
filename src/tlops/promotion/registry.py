"""Registration: log the run to MLflow, register the model version, and move the aliases.

The new version becomes ``challenger``. It becomes ``champion`` when the promotion gate passed against the
version that is still the champion, or when there is no champion and none was compared against; a champion that
moved after the gate ran (a manual promotion, a concurrent run) is left alone (:mod:`tlops.promotion.aliases`).
A failure deletes a version it created and points the aliases back, so no half-registered version or moved alias
remains; when the registry itself fails (the server stops), the error says what may be left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.data.prepared import OBJECT_DETECTION, TEXT_CLASSIFICATION
from tlops.errors import TlopsError
from tlops.models.names import TFIDF_BASELINE
from tlops.promotion.aliases import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    assign_aliases,
    registered_model_exists,
    version_of_alias,
)
from tlops.promotion.config import RegistryConfig as RegistryConfig  # re-exported
from tlops.promotion.tracking import check_tracking_server

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from tlops.data.prepare import PreparedData

logger = logging.getLogger(__name__)

GATE_NUMBERS = (
    "challenger_score",
    "champion_score",
    "difference",
    "ci_low",
    "ci_high",
    "mcnemar_p",
    "worst_class_regression",
    "challenger_ece",
    "champion_ece",
)
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION)
VERSION_METRICS = ("test_accuracy", "test_macro_f1", "test_ece")
TAG_VALUE_LIMIT = 5000  # MLflow's limit on a model version tag's value (8000 on recent servers; kept below)


@dataclass
class RunRecord:
    """What a registration logs: the step outputs, read by the register step.

    Attributes:
        prepared: The prepare-data summary.
        manifest: The manifest (relpath, sha256, label, split), the run's dataset input.
        model: The trained classifier.
        backbone: Its backbone name.
        data_config: Its preprocessing as a dict (``input_size``, ``mean``, ...).
        training: The fine-tune step's training record as a dict.
        metrics: The test metrics.
        comparison: The promotion gate's comparison as a dict (``promote``, ``champion_version``, ``reasons`` and
            the numbers) to log, or ``None`` when no gate ran.
        artifacts: Files to log, each with the artifact folder it goes into.
        promote: The gate's verdict for this registry, ``None`` when no gate compared against it.
        compared_champion: The champion version the gate compared against (``None``: there was none).
        tables: MLflow table artifacts: artifact file (``report/x.json``) -> rows (e.g. the backbone ranking).
        temperature: The calibration temperature the served model divides the logits by.
        lineage: Where the model came from, as tags (``weights_sha256``, ``tlops_version``, ``git_commit``,
            ``kfp_run_id``, ...); empty values are left out.
    """

    prepared: PreparedData
    manifest: pd.DataFrame
    model: nn.Module
    backbone: str
    data_config: dict[str, Any]
    training: dict[str, Any]
    metrics: dict[str, float]
    comparison: dict[str, Any] | None = None
    artifacts: list[tuple[Path, str]] = field(default_factory=list)
    promote: bool | None = None
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    compared_champion: int | None = None
    temperature: float = 1.0
    lineage: dict[str, str] = field(default_factory=dict)


@dataclass
class Registration:
    """A registered model version and where to find it.

    Attributes:
        model_uri: ``models:/NAME/VERSION``: the served model (image bytes in).
        logged_model_uri: The served model as MLflow logged it (``models:/m-...``).
        champion: The champion version after registration (``None`` when there is none).
        champion_reason: Why the champion is that version.
        tensor_model_uri: The same network as a ``pytorch`` flavour taking preprocessed tensors.
    """

    tracking_uri: str
    registered_model: str
    version: int
    model_uri: str
    logged_model_uri: str
    run_id: str
    experiment: str
    aliases: list[str] = field(default_factory=list)
    champion: int | None = None
    champion_reason: str = ""
    tensor_model_uri: str = ""


def version_tags(record: RunRecord, run_id: str) -> dict[str, str]:
    """The tags a new model version carries: metrics, the gate's decision and numbers, and its lineage.

    ``gate.decision`` is ``first`` (no champion to compare with), ``promote`` or ``keep`` (the gate's verdict), or
    ``none`` (no gate compared against this registry); ``tlops promote`` asks for ``--force`` on a ``keep``.
    """
    import json

    prepared, comparison = record.prepared, record.comparison
    tags = {
        "dataset_digest": prepared.digest,
        "dataset_source": prepared.source or "",
        "backbone": record.backbone,
        "strategy": record.training["strategy"],
        "strategy_reasons": " | ".join(record.training["reasons"]),
        "mlflow_run_id": run_id,
        "temperature": f"{record.temperature:.4f}",
        **{key: f"{record.metrics[key]:.4f}" for key in VERSION_METRICS if key in record.metrics},
        **{key: value for key, value in record.lineage.items() if value},
    }
    if comparison is None or record.promote is None:
        tags["gate.decision"] = "none"
    else:
        first = comparison.get("champion_version") is None
        tags["gate.decision"] = "first" if first else "promote" if record.promote else "keep"
        tags["gate.champion_version"] = "" if first else str(comparison["champion_version"])
        tags["gate.reasons"] = " | ".join(comparison["reasons"])
        tags["gate.metric"] = comparison.get("metric") or ""
        tags["gate.config"] = json.dumps(comparison.get("config") or {}, sort_keys=True)
        tags.update({f"gate.{k}": f"{comparison[k]:.6g}" for k in GATE_NUMBERS if comparison.get(k) is not None})
    return {key: str(value)[:TAG_VALUE_LIMIT] for key, value in tags.items() if value != ""}


def register_model(record: RunRecord, config: RegistryConfig, client=None) -> Registration:
    """Log params, metrics, plots, dataset lineage and the model to MLflow; register it and set aliases.

    Args:
        record: The step outputs to log.
        config: Tracking URI, experiment and registered model name.
        client: ``MlflowClient`` for the registry calls (one for ``config.tracking_uri`` when ``None``).

    Raises:
        TlopsError: when the tracking server does not answer or registration fails (nothing is left registered).
    """
    import mlflow
    from mlflow import MlflowClient

    check_tracking_server(config.tracking_uri)
    mlflow.set_tracking_uri(config.tracking_uri)
    client = client or MlflowClient(config.tracking_uri)
    model_existed = registered_model_exists(client, config.model_name)
    earlier = earlier_registration(client, config, record.lineage.get("kfp_run_id", "")) if model_existed else None
    if earlier is not None:
        logger.info(
            "version %d was registered by an earlier attempt of this pipeline run (%s): not registered again",
            earlier.version,
            record.lineage["kfp_run_id"],
        )
        return earlier
    experiment = _experiment(client, config)

    run = mlflow.start_run(experiment_id=experiment.experiment_id)
    before = {alias: version_of_alias(client, config.model_name, alias) for alias in ALIASES} if model_existed else {}
    version = None
    try:
        _log_run(record)
        logged = _log_served(record)
        tags = version_tags(record, run.info.run_id)
        tags |= {"tensor_model_uri": logged.tensors.model_uri} if logged.tensors is not None else {}
        version = mlflow.register_model(logged.served.model_uri, config.model_name, tags=tags)
        moved = assign_aliases(client, config.model_name, version.version, record.promote, record.compared_champion)
    except Exception as error:
        undone = _undo(client, config.model_name, version, model_existed, before)
        _best_effort(mlflow.set_tag, "tlops.registration_failed", str(error)[:500])
        _best_effort(mlflow.end_run, status="FAILED")
        if isinstance(error, TlopsError):
            raise
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise TlopsError(
            f"registering the model in MLflow at {config.tracking_uri} failed ({first_line}); {undone}; "
            "fix the cause and run the step again"
        ) from error
    # The registration stands: what follows only annotates it.
    _best_effort(mlflow.set_tag, "tlops.champion", moved.reason)
    _best_effort(client.set_model_version_tag, config.model_name, version.version, "champion.reason", moved.reason)
    _best_effort(mlflow.end_run)
    return Registration(
        tracking_uri=config.tracking_uri,
        registered_model=config.model_name,
        version=int(version.version),
        model_uri=f"models:/{config.model_name}/{version.version}",
        logged_model_uri=logged.served.model_uri,
        tensor_model_uri=logged.tensors.model_uri if logged.tensors is not None else "",
        run_id=run.info.run_id,
        experiment=config.experiment,
        aliases=moved.aliases,
        champion=moved.champion,
        champion_reason=moved.reason,
    )


def _log_served(record: RunRecord) -> Any:
    """Log the served model of the record's task into the active run (``LoggedModels``)."""
    prepared = record.prepared
    metadata = {"classes": prepared.classes, "data_config": record.data_config, "backbone": record.backbone}
    if prepared.task == TEXT_CLASSIFICATION:
        from tlops.serving.text_model import TextServingConfig
        from tlops.serving.text_package import log_served_text_model

        if record.backbone == TFIDF_BASELINE:
            serving = TextServingConfig(prepared.classes, kind="tfidf", temperature=record.temperature)
            return log_served_text_model(record.model, None, serving, metadata)
        encoder = record.model.encoder
        serving = TextServingConfig(prepared.classes, temperature=record.temperature, max_length=encoder.max_length)
        return log_served_text_model(record.model.classifier, encoder.tokenizer, serving, metadata)
    if prepared.task == OBJECT_DETECTION:
        from tlops.models.detector_checkpoint import DetectorConfig
        from tlops.serving.detection_package import log_served_detection_model

        architecture = str(record.data_config.get("detector", "fasterrcnn"))
        config = DetectorConfig.of(record.model, architecture, record.backbone, prepared.classes)
        return log_served_detection_model(record.model, config, metadata)
    from tlops.serving.model import ServingConfig
    from tlops.serving.package import log_served_model

    serving = ServingConfig(classes=prepared.classes, data_config=record.data_config, temperature=record.temperature)
    return log_served_model(record.model, serving, metadata)


def _log_run(record: RunRecord) -> None:
    """Log params, tags, metrics, learning curves, the dataset, the step outputs and tables into the active run."""
    import mlflow

    prepared, training, comparison = record.prepared, record.training, record.comparison
    mlflow.log_params(
        {
            "backbone": record.backbone,
            "strategy": training["strategy"],
            "requested_strategy": training["requested_strategy"],
            "input_size": record.data_config.get("input_size", 0),
            "num_classes": len(prepared.classes),
            "dataset_digest": prepared.digest,
            **{f"train.{k}": v for k, v in training["config"].items()},
        }
    )
    mlflow.set_tags(
        {"tlops.dataset_digest": prepared.digest, "tlops.strategy_reasons": " | ".join(training["reasons"])}
        | {f"tlops.{key}": value for key, value in record.lineage.items() if value}
    )
    mlflow.log_metrics(
        record.metrics
        | {"val_accuracy": training["val_accuracy"], "probe_val_accuracy": training["probe_val_accuracy"]}
    )
    if comparison is not None:
        mlflow.set_tag("tlops.promotion.gate", " | ".join(comparison["reasons"]))
        mlflow.log_metrics({f"gate.{k}": comparison[k] for k in GATE_NUMBERS if comparison.get(k) is not None})
    for epoch in training["history"]:
        if epoch.get("swa"):  # the weight average: not an epoch of the curves
            mlflow.log_metric("swa.val_accuracy", epoch["val_accuracy"])
            continue
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_map50", "val_map"):
            if epoch.get(key) is not None:
                mlflow.log_metric(f"curve.{key}", epoch[key], step=epoch["epoch"])
    dataset = mlflow.data.from_pandas(
        record.manifest[["relpath", "sha256", "label", "split"]],
        source=prepared.source or "unknown",
        name=Path(prepared.source.rstrip("/")).name or "dataset",
        digest=prepared.digest[:36],
        targets="label",
    )
    mlflow.log_input(dataset, context="training")
    for path, folder in record.artifacts:
        mlflow.log_artifact(str(path), artifact_path=folder)
    for artifact_file, rows in record.tables.items():
        import pandas

        mlflow.log_table(pandas.DataFrame(rows), artifact_file=artifact_file)


def _undo(client, model_name: str, version, model_existed: bool, before: dict[str, int | None]) -> str:
    """Delete a half-registered version and point the aliases back; says what it could do (best effort)."""
    if version is None:
        return "no version was registered and no alias was moved"
    try:
        client.delete_model_version(model_name, version.version)
        if not model_existed:
            client.delete_registered_model(model_name)
            return f"version {version.version} was deleted again"
        for alias, previous in before.items():
            if previous is not None and version_of_alias(client, model_name, alias) != previous:
                client.set_registered_model_alias(model_name, alias, str(previous))
    except Exception as error:  # the registry itself failed: say what may be left
        return (
            f"version {version.version} may remain and its aliases may have moved (cleaning up failed too: "
            f"{type(error).__name__}); check tlops models --model-name {model_name}"
        )
    return f"version {version.version} was deleted again and the aliases point where they did"


def _best_effort(call, *args, **kwargs) -> None:
    """Call an MLflow function whose failure must not hide the error being reported (or undo a registration)."""
    try:
        call(*args, **kwargs)
    except Exception as error:
        logger.warning("MLflow call %s failed: %s", getattr(call, "__name__", call), error)


def earlier_registration(client, config: RegistryConfig, kfp_run_id: str) -> Registration | None:
    """The version that an earlier attempt of this pipeline run's register step registered, if one did.

    A retried register step (KFP retries it after a network error) must not register the model twice: the
    version tagged with the pipeline run's id stands, with the aliases it has now.
    """
    if not kfp_run_id:
        return None
    quoted = kfp_run_id.replace("\\", "\\\\").replace("'", "\\'")
    found = client.search_model_versions(f"name = '{config.model_name}' and tags.kfp_run_id = '{quoted}'")
    if not found:
        return None
    # A search does not return aliases (the REST store leaves them out): read the version itself.
    version = client.get_model_version(config.model_name, max(found, key=lambda v: int(v.version)).version)
    champion = version_of_alias(client, config.model_name, CHAMPION)
    return Registration(
        tracking_uri=config.tracking_uri,
        registered_model=config.model_name,
        version=int(version.version),
        model_uri=f"models:/{config.model_name}/{version.version}",
        logged_model_uri=version.source,
        run_id=version.run_id,
        experiment=config.experiment,
        aliases=sorted(version.aliases),
        champion=champion,
        champion_reason=version.tags.get("champion.reason", ""),
        tensor_model_uri=version.tags.get("tensor_model_uri", ""),
    )


def _experiment(client, config: RegistryConfig):
    """Get or create the experiment; a local sqlite store keeps its artifacts beside the database file."""
    existing = client.get_experiment_by_name(config.experiment)
    if existing is not None:
        return existing
    location = None
    if config.tracking_uri.startswith("sqlite:///"):
        location = (Path(config.tracking_uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    return client.get_experiment(client.create_experiment(config.experiment, artifact_location=location))
