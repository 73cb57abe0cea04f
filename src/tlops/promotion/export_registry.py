"""Registering an accepted export: its own registered model, ``<model-name>-onnx`` or ``<model-name>-int8``.

The exported pyfunc is logged into the MLflow run of the fp32 version it came from, with the export's numbers
(accuracy loss and interval, size, latency), and registered under a name of its own, so that its versions, aliases
and serving (``models:/tlops-classifier-int8@champion``) never mix with the fp32 model's champion/challenger
history. The new version gets ``challenger``, and ``champion`` too when its fp32 source is the champion after this
run; its tags name the source version. A refused export logs only its numbers, and registers nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from tlops.errors import TlopsError
from tlops.promotion.aliases import CHALLENGER, CHAMPION
from tlops.promotion.tracking import check_tracking_server

logger = logging.getLogger(__name__)


def export_model_name(model_name: str, export_format: str) -> str:
    """The registered model name of an export: ``tlops-classifier-int8``."""
    return f"{model_name}-{export_format}"


def log_export_numbers(
    tracking_uri: str, run_id: str, export_format: str, numbers: dict[str, float], reason: str
) -> None:
    """Log the export's metrics (``export.int8.*``) and its verdict (a tag) into the fp32 version's run."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    for key, value in numbers.items():
        client.log_metric(run_id, f"export.{export_format}.{key}", float(value))
    client.set_tag(run_id, f"tlops.export.{export_format}", reason[:5000])


def register_export(
    tracking_uri: str,
    run_id: str,
    source: tuple[str, int, bool],
    export_format: str,
    log_model: Any,
    tags: dict[str, str],
) -> dict[str, Any]:
    """Log the exported pyfunc into the fp32 version's run and register it as ``<model-name>-<format>``.

    Args:
        tracking_uri: The MLflow tracking server.
        run_id: The run of the fp32 version.
        source: The fp32 model's registered name, version, and whether that version is the champion now.
        export_format: ``onnx`` or ``int8``.
        log_model: Called with the logged model's name inside the active run; returns MLflow's ``ModelInfo``.
        tags: Tags of the new version (the export's numbers).

    Returns:
        ``registered_model``, ``version``, ``model_uri`` and ``aliases`` of the new version.

    Raises:
        TlopsError: when registration fails (a version it created is deleted again).
    """
    import mlflow
    from mlflow import MlflowClient

    check_tracking_server(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    source_name, source_version, champion = source
    name = export_model_name(source_name, export_format)
    version = None
    try:
        # The fp32 version's run may be in another experiment than the one this process set last.
        mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)
        with mlflow.start_run(run_id=run_id):
            info = log_model(f"model-{export_format}")
        tags = tags | {"source_model": source_name, "source_version": str(source_version), "export": export_format}
        version = mlflow.register_model(info.model_uri, name, tags=tags)
        aliases = [CHALLENGER, *([CHAMPION] if champion else [])]
        for alias in aliases:
            client.set_registered_model_alias(name, alias, version.version)
    except Exception as error:
        if version is not None:
            try:
                client.delete_model_version(name, version.version)
            except Exception as cleanup:  # the registry itself failed: say so below
                logger.warning("deleting the half-registered export %s %s failed: %s", name, version.version, cleanup)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise TlopsError(f"registering the {export_format} export as {name} failed ({first_line})") from error
    logger.info("registered the %s export as %s version %s [%s]", export_format, name, version.version, aliases)
    return {
        "registered_model": name,
        "version": int(version.version),
        "model_uri": f"models:/{name}/{version.version}",
        "aliases": aliases,
    }
