"""Registration: log the run to MLflow, register the model version, and move the aliases.

The new version becomes ``challenger``; the first version of a registered model also becomes ``champion``.
A failure after the version was created deletes it again, so no half-registered version or moved alias
remains.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tlops.data.prepare import MANIFEST_FILE, REPORT_FILE, load_prepared
from tlops.errors import TlopsError
from tlops.models.checkpoint import load_classifier
from tlops.promotion.gate import read_comparison
from tlops.promotion.tracking import check_tracking_server

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"


@dataclass(frozen=True)
class RegistryConfig:
    """Where and under which name a model is registered.

    Attributes:
        tracking_uri: MLflow tracking URI (server or local store).
        experiment: MLflow experiment of the run.
        model_name: Registered model name.
    """

    tracking_uri: str
    experiment: str = "tlops"
    model_name: str = "tlops-classifier"


@dataclass
class Registration:
    """A registered model version and where to find it."""

    tracking_uri: str
    registered_model: str
    version: int
    model_uri: str
    logged_model_uri: str
    run_id: str
    experiment: str
    aliases: list[str] = field(default_factory=list)


def _signature_and_example(input_size: int, num_classes: int):
    from mlflow.models import infer_signature

    # Batch size 2: torch.export specializes a size-1 dimension, and the served model must take any batch.
    example = np.full((2, 3, input_size, input_size), 0.5, dtype=np.float32)
    signature = infer_signature(example, np.zeros((2, num_classes), dtype=np.float32))
    return signature, example


def register_model(
    data_dir: Path,
    model_dir: Path,
    evaluation_dir: Path,
    config: RegistryConfig,
    extra_artifact_dirs: list[Path] | None = None,
    client=None,
) -> Registration:
    """Log params, metrics, plots, dataset lineage and the model to MLflow; register it and set aliases.

    Args:
        data_dir: Output of the prepare-data step (manifest, summary, report).
        model_dir: Output of the fine-tune step.
        evaluation_dir: Output of the evaluate step.
        config: Tracking URI, experiment and registered model name.
        extra_artifact_dirs: More step outputs whose JSON and PNG files are logged as artifacts.
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
    manifest, prepared = load_prepared(data_dir)
    model, model_config = load_classifier(model_dir)
    training = json.loads((Path(model_dir) / "training.json").read_text())
    evaluation = json.loads((Path(evaluation_dir) / "evaluation.json").read_text())
    experiment = _experiment(client, config)

    version = None
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        try:
            mlflow.log_params(
                {
                    "backbone": model_config["backbone"],
                    "strategy": training["strategy"],
                    "requested_strategy": training["requested_strategy"],
                    "input_size": model_config["data_config"]["input_size"],
                    "num_classes": len(prepared.classes),
                    "dataset_digest": prepared.digest,
                    **{f"train.{k}": v for k, v in training["config"].items()},
                }
            )
            mlflow.set_tags(
                {"tlops.dataset_digest": prepared.digest, "tlops.strategy_reasons": " | ".join(training["reasons"])}
            )
            mlflow.log_metrics(
                evaluation["metrics"]
                | {"val_accuracy": training["val_accuracy"], "probe_val_accuracy": training["probe_val_accuracy"]}
            )
            comparison = read_comparison(evaluation_dir)
            if comparison is not None:
                mlflow.set_tag("tlops.promotion.gate", " | ".join(comparison["reasons"]))
                numbers = ("difference", "ci_low", "ci_high", "mcnemar_p", "worst_class_regression")
                mlflow.log_metrics({f"gate.{k}": comparison[k] for k in numbers if comparison.get(k) is not None})
            for record in training["history"]:
                for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
                    if record.get(key) is not None:
                        mlflow.log_metric(f"curve.{key}", record[key], step=record["epoch"])
            dataset = mlflow.data.from_pandas(
                manifest[["relpath", "sha256", "label", "split"]],
                source=prepared.source or "unknown",
                name=Path(prepared.source.rstrip("/")).name or "dataset",
                digest=prepared.digest[:36],
                targets="label",
            )
            mlflow.log_input(dataset, context="training")
            for directory in [Path(data_dir), Path(evaluation_dir), Path(model_dir), *(extra_artifact_dirs or [])]:
                for path in sorted(directory.iterdir()):
                    if path.suffix in {".json", ".png", ".md"} or path.name == MANIFEST_FILE:
                        mlflow.log_artifact(str(path), artifact_path="report" if path.name != REPORT_FILE else "data")
            signature, example = _signature_and_example(
                model_config["data_config"]["input_size"], len(prepared.classes)
            )
            logged = mlflow.pytorch.log_model(
                model,
                name="model",
                signature=signature,
                input_example=example,
                serialization_format="pt2",
                metadata={
                    "classes": prepared.classes,
                    "data_config": model_config["data_config"],
                    "backbone": model_config["backbone"],
                },
            )
            version = mlflow.register_model(
                logged.model_uri,
                config.model_name,
                tags={
                    "dataset_digest": prepared.digest,
                    "backbone": model_config["backbone"],
                    "strategy": training["strategy"],
                    "test_accuracy": f"{evaluation['metrics']['test_accuracy']:.4f}",
                },
            )
            aliases = assign_aliases(
                client,
                config.model_name,
                version.version,
                promote=None if comparison is None else bool(comparison["promote"]),
            )
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
        aliases=aliases,
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


def assign_aliases(client, model_name: str, version: str | int, promote: bool | None = None) -> list[str]:
    """Make ``version`` the ``challenger``, and the ``champion`` when the gate says so or there is none yet.

    Args:
        client: ``MlflowClient`` of the registry.
        model_name: Registered model name.
        version: The new version.
        promote: The promotion gate's verdict; ``None`` when no comparison was made (then only a model without a
            champion gets one).

    Returns:
        The aliases the version holds now.
    """
    client.set_registered_model_alias(model_name, CHALLENGER, str(version))
    aliases = [CHALLENGER]
    current = _version_of_alias(client, model_name, CHAMPION)
    if current is None or promote:
        client.set_registered_model_alias(model_name, CHAMPION, str(version))
        if current is not None:
            client.set_registered_model_alias(model_name, PREVIOUS_CHAMPION, str(current))
        aliases.append(CHAMPION)
    return aliases


def registration_dict(registration: Registration) -> dict:
    """The registration as a JSON-ready dict."""
    return asdict(registration)


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
