"""Registration: log the run to MLflow, register the model version, and move the aliases.

The new version becomes ``challenger``. It becomes ``champion`` when the promotion gate passed against the
version that is still the champion, or when there is no champion and none was compared against; a champion that
moved after the gate ran (a manual promotion, a concurrent run) is left alone. A failure after the version was
created deletes it again, so no half-registered version or moved alias remains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlops.errors import TlopsError
from tlops.promotion.config import RegistryConfig as RegistryConfig  # re-exported
from tlops.promotion.tracking import check_tracking_server

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from tlops.data.prepare import PreparedData

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"


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


@dataclass
class Registration:
    """A registered model version and where to find it.

    Attributes:
        champion: The champion version after registration (``None`` when there is none).
        champion_reason: Why the champion is that version.
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


def _signature_and_example(input_size: int, num_classes: int):
    from mlflow.models import infer_signature

    # Batch size 2: torch.export specializes a size-1 dimension, and the served model must take any batch.
    example = np.full((2, 3, input_size, input_size), 0.5, dtype=np.float32)
    signature = infer_signature(example, np.zeros((2, num_classes), dtype=np.float32))
    return signature, example


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
    import mlflow.pytorch
    from mlflow import MlflowClient

    check_tracking_server(config.tracking_uri)
    mlflow.set_tracking_uri(config.tracking_uri)
    client = client or MlflowClient(config.tracking_uri)
    model_existed = _registered_model_exists(client, config.model_name)
    prepared, training, comparison = record.prepared, record.training, record.comparison
    input_size = record.data_config["input_size"]
    experiment = _experiment(client, config)

    version = None
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        try:
            mlflow.log_params(
                {
                    "backbone": record.backbone,
                    "strategy": training["strategy"],
                    "requested_strategy": training["requested_strategy"],
                    "input_size": input_size,
                    "num_classes": len(prepared.classes),
                    "dataset_digest": prepared.digest,
                    **{f"train.{k}": v for k, v in training["config"].items()},
                }
            )
            mlflow.set_tags(
                {"tlops.dataset_digest": prepared.digest, "tlops.strategy_reasons": " | ".join(training["reasons"])}
            )
            mlflow.log_metrics(
                record.metrics
                | {"val_accuracy": training["val_accuracy"], "probe_val_accuracy": training["probe_val_accuracy"]}
            )
            if comparison is not None:
                mlflow.set_tag("tlops.promotion.gate", " | ".join(comparison["reasons"]))
                numbers = ("difference", "ci_low", "ci_high", "mcnemar_p", "worst_class_regression")
                mlflow.log_metrics({f"gate.{k}": comparison[k] for k in numbers if comparison.get(k) is not None})
            for epoch in training["history"]:
                if epoch.get("swa"):  # the weight average: not an epoch of the curves
                    mlflow.log_metric("swa.val_accuracy", epoch["val_accuracy"])
                    continue
                for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
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
            signature, example = _signature_and_example(input_size, len(prepared.classes))
            logged = mlflow.pytorch.log_model(
                record.model,
                name="model",
                signature=signature,
                input_example=example,
                serialization_format="pt2",
                # Named, not inferred: inference loads the model in a subprocess (about 12 s a registration).
                pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
                metadata={
                    "classes": prepared.classes,
                    "data_config": record.data_config,
                    "backbone": record.backbone,
                },
            )
            version = mlflow.register_model(
                logged.model_uri,
                config.model_name,
                tags={
                    "dataset_digest": prepared.digest,
                    "backbone": record.backbone,
                    "strategy": training["strategy"],
                    "test_accuracy": f"{record.metrics['test_accuracy']:.4f}",
                },
            )
            moved = assign_aliases(client, config.model_name, version.version, record.promote, record.compared_champion)
            mlflow.set_tag("tlops.champion", moved.reason)
        except Exception as error:
            if version is not None:
                client.delete_model_version(config.model_name, version.version)
                if not model_existed:
                    client.delete_registered_model(config.model_name)
            mlflow.set_tag("tlops.registration_failed", str(error)[:500])
            if isinstance(error, TlopsError):
                raise
            raise TlopsError(f"registering the model in MLflow at {config.tracking_uri} failed: {error}") from error
    return Registration(
        tracking_uri=config.tracking_uri,
        registered_model=config.model_name,
        version=int(version.version),
        model_uri=f"models:/{config.model_name}/{version.version}",
        logged_model_uri=logged.model_uri,
        run_id=run.info.run_id,
        experiment=config.experiment,
        aliases=moved.aliases,
        champion=moved.champion,
        champion_reason=moved.reason,
    )


def _registered_model_exists(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True


def _experiment(client, config: RegistryConfig):
    """Get or create the experiment; a local sqlite store keeps its artifacts beside the database file."""
    existing = client.get_experiment_by_name(config.experiment)
    if existing is not None:
        return existing
    location = None
    if config.tracking_uri.startswith("sqlite:///"):
        location = (Path(config.tracking_uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    return client.get_experiment(client.create_experiment(config.experiment, artifact_location=location))


@dataclass
class AliasMove:
    """What :func:`assign_aliases` did.

    Attributes:
        aliases: The aliases the new version holds now.
        champion: The champion version now (``None`` when there is none).
        reason: Why the champion is that version.
    """

    aliases: list[str]
    champion: int | None
    reason: str


def assign_aliases(
    client, model_name: str, version: str | int, promote: bool | None = None, compared_champion: int | None = None
) -> AliasMove:
    """Make ``version`` the ``challenger``, and the ``champion`` when the gate's verdict still holds.

    The gate compared the new version with ``compared_champion``. The champion moves only if it is still that
    version (a compare-then-set: if a manual promotion or a concurrent run moved it meanwhile, the verdict is
    stale and the champion is left alone).

    Args:
        client: ``MlflowClient`` of the registry.
        model_name: Registered model name.
        version: The new version.
        promote: The promotion gate's verdict; ``None`` when no comparison was made (then only a model without a
            champion gets one).
        compared_champion: The champion version the gate compared against (``None``: there was none).
    """
    version = int(version)
    client.set_registered_model_alias(model_name, CHALLENGER, str(version))
    current = _version_of_alias(client, model_name, CHAMPION)
    if promote is None:
        move = current is None
        reason = (
            "no champion yet: the new version becomes it"
            if move
            else f"no gate compared against this registry's champion: version {current} stays"
        )
    elif current != compared_champion:
        move = False
        reason = (
            f"the champion changed after the gate compared against {_describe(compared_champion)}: it is "
            f"{_describe(current)} now, left alone; evaluate again, or promote by hand (tlops promote --version "
            f"{version})"
        )
    elif promote:
        move = True
        reason = (
            "no champion yet: the new version becomes it"
            if current is None
            else f"the gate passed against version {current}: the new version replaces it ({PREVIOUS_CHAMPION})"
        )
    else:
        move = False
        reason = f"the gate kept version {current}"
    if not move:
        return AliasMove([CHALLENGER], current, reason)
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    if current is not None:
        client.set_registered_model_alias(model_name, PREVIOUS_CHAMPION, str(current))
    return AliasMove([CHALLENGER, CHAMPION], version, reason)


def _describe(version: int | None) -> str:
    return "no champion" if version is None else f"version {version}"


@dataclass
class Promotion:
    """An alias move in the registry: which version is champion now, and which one it replaced."""

    registered_model: str
    champion: int
    previous: int | None


def _version_of_alias(client, model_name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def promote(client, model_name: str, version: int | None = None, rollback: bool = False) -> Promotion:
    """Make a version the ``champion``, keeping the one it replaces as ``previous-champion`` for a rollback.

    Args:
        client: ``MlflowClient`` of the registry.
        model_name: Registered model name.
        version: Version to promote; ``None`` promotes the current ``challenger``.
        rollback: Promote the ``previous-champion`` instead (``version`` must be ``None``).

    Raises:
        TlopsError: when the model, the version or the alias to promote does not exist (nothing is moved).
    """
    from mlflow.exceptions import MlflowException

    if not _registered_model_exists(client, model_name):
        raise TlopsError(f"registered model {model_name!r} does not exist; check --model-name and the tracking URI")
    if rollback:
        version = _version_of_alias(client, model_name, PREVIOUS_CHAMPION)
        if version is None:
            raise TlopsError(f"{model_name!r} has no {PREVIOUS_CHAMPION!r} alias: there is nothing to roll back to")
    elif version is None:
        version = _version_of_alias(client, model_name, CHALLENGER)
        if version is None:
            raise TlopsError(f"{model_name!r} has no {CHALLENGER!r}; pass --version N")
    try:
        client.get_model_version(model_name, str(version))
    except MlflowException:
        raise TlopsError(f"{model_name!r} has no version {version}; list versions in the MLflow UI") from None
    current = _version_of_alias(client, model_name, CHAMPION)
    if current == version:
        return Promotion(model_name, version, _version_of_alias(client, model_name, PREVIOUS_CHAMPION))
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    if current is not None:
        client.set_registered_model_alias(model_name, PREVIOUS_CHAMPION, str(current))
    return Promotion(model_name, version, current)
