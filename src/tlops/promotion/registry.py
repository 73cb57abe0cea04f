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

from tlops.errors import TlopsError
from tlops.promotion.config import RegistryConfig as RegistryConfig  # re-exported
from tlops.promotion.tracking import check_tracking_server

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from tlops.data.prepare import PreparedData

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
VERSION_METRICS = ("test_accuracy", "test_macro_f1", "test_ece")
TAG_VALUE_LIMIT = 5000  # MLflow's limit on a model version tag's value (8000 on recent servers; kept below)

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

    from tlops.serving.model import ServingConfig
    from tlops.serving.package import log_served_model

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
            serving = ServingConfig(
                classes=prepared.classes, data_config=record.data_config, temperature=record.temperature
            )
            metadata = {"classes": prepared.classes, "data_config": record.data_config, "backbone": record.backbone}
            logged = log_served_model(record.model, serving, metadata)
            version = mlflow.register_model(
                logged.model_uri, config.model_name, tags=version_tags(record, run.info.run_id)
            )
            moved = assign_aliases(client, config.model_name, version.version, record.promote, record.compared_champion)
            mlflow.set_tag("tlops.champion", moved.reason)
            client.set_model_version_tag(config.model_name, version.version, "champion.reason", moved.reason)
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
    """An alias move in the registry: which version is champion now, and which one it replaced.

    Attributes:
        forced: Whether the move overrode the promotion gate's refusal (``--force``).
        reason: Why the version was moved by hand (``--reason``; empty when none was given).
    """

    registered_model: str
    champion: int
    previous: int | None
    forced: bool = False
    reason: str = ""


def _version_of_alias(client, model_name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def promote(
    client,
    model_name: str,
    version: int | None = None,
    rollback: bool = False,
    *,
    force: bool = False,
    reason: str | None = None,
) -> Promotion:
    """Make a version the ``champion``, keeping the one it replaces as ``previous-champion`` for a rollback.

    A move is recorded on the promoted version as the tags ``promotion.by``, ``promotion.reason``,
    ``promotion.forced`` and ``promotion.time``. A version the promotion gate refused (tag ``gate.decision`` is
    ``keep``) needs ``force`` and a ``reason``; a rollback returns to the former champion and needs neither.

    Args:
        client: ``MlflowClient`` of the registry.
        model_name: Registered model name.
        version: Version to promote; ``None`` promotes the current ``challenger``.
        rollback: Promote the ``previous-champion`` instead (``version`` must be ``None``).
        force: Promote a version the gate refused.
        reason: Why the version is promoted by hand (required with ``force``).

    Raises:
        TlopsError: when the model, the version or the alias to promote does not exist, the gate refused the
            version and ``force`` is not set, or ``force`` comes without a reason (nothing is moved).
    """
    reason = check_override(force, reason)
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
    found = get_version(client, model_name, version)
    current = _version_of_alias(client, model_name, CHAMPION)
    if current == version:
        return Promotion(model_name, version, _version_of_alias(client, model_name, PREVIOUS_CHAMPION))
    forced = False if rollback else check_gate(found, force)
    move_champion(client, model_name, version, current)
    record_promotion(client, model_name, version, reason, forced)
    return Promotion(model_name, version, current, forced, reason)


PROMOTED_BY = "tlops promote"
GATE_DECISION_TAG = "gate.decision"
GATE_REASONS_TAG = "gate.reasons"
GATE_REFUSED = "keep"


def check_override(force: bool, reason: str | None) -> str:
    """The reason of a manual move, stripped; ``--force`` needs one.

    Raises:
        TlopsError: when ``force`` is set and the reason is missing or blank.
    """
    reason = (reason or "").strip()
    if force and not reason:
        raise TlopsError("--force needs --reason TEXT (recorded on the version)")
    return reason


def get_version(client, model_name: str, version: int | str):
    """The registered ``ModelVersion``.

    Raises:
        TlopsError: when the model has no such version, naming the command that lists them.
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model_name, str(version))
    except MlflowException:
        raise TlopsError(
            f"{model_name!r} has no version {version}; list its versions with tlops models --model-name {model_name}"
        ) from None


def check_gate(model_version, force: bool) -> bool:
    """Whether promoting ``model_version`` overrides the gate's refusal.

    Raises:
        TlopsError: when the gate refused the version (tag ``gate.decision`` is ``keep``) and ``force`` is unset.
    """
    tags = model_version.tags or {}
    if tags.get(GATE_DECISION_TAG) != GATE_REFUSED:
        return False
    if force:
        return True
    first = _first_gate_reason(tags.get(GATE_REASONS_TAG, ""))
    why = f" ({first})" if first else ""
    raise TlopsError(
        f"version {model_version.version} was refused by the gate{why}; pass --force --reason TEXT to override"
    )


def _first_gate_reason(reasons: str) -> str:
    """The first of the gate's reasons, stored as a JSON list or joined by `` | `` or newlines."""
    import json

    text = reasons.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if isinstance(items, list):
            return str(items[0]).strip() if items else ""
    return text.replace("\n", " | ").split(" | ")[0].strip()


def move_champion(client, model_name: str, version: int, current: int | None) -> None:
    """Point ``champion`` at ``version``; the replaced ``current`` becomes ``previous-champion``."""
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    if current is not None:
        client.set_registered_model_alias(model_name, PREVIOUS_CHAMPION, str(current))


def record_promotion(
    client, model_name: str, version: int, reason: str, forced: bool, extra: dict[str, str] | None = None
) -> None:
    """Tag a manual move on the version: ``promotion.by``, ``.reason``, ``.forced``, ``.time`` (UTC) and ``extra``."""
    from datetime import UTC, datetime

    tags = {
        "promotion.by": PROMOTED_BY,
        "promotion.reason": reason,
        "promotion.forced": "true" if forced else "false",
        "promotion.time": datetime.now(UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)
