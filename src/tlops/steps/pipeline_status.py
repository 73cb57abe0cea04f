"""The exit handler's step: when the pipeline did not succeed, leave a FAILED run in MLflow."""

from __future__ import annotations

import logging

from tlops.errors import TlopsError
from tlops.promotion.failures import PipelineOutcome, record_failed_run
from tlops.promotion.tracking import check_tracking_server

logger = logging.getLogger(__name__)


def record_pipeline_status(tracking_uri: str, experiment: str, outcome: PipelineOutcome, client=None) -> str | None:
    """Record a pipeline run that did not succeed as a FAILED MLflow run; do nothing when it succeeded.

    Args:
        tracking_uri: The MLflow tracking URI the pipeline tracks into.
        experiment: The MLflow experiment.
        outcome: The pipeline's final state, its KFP run id and name, and the error.
        client: ``MlflowClient`` (one for ``tracking_uri`` when ``None``).

    Returns:
        The MLflow run id marked FAILED, or ``None`` when the pipeline succeeded.

    Raises:
        TlopsError: when MLflow cannot be reached or refuses the write (the pipeline's failure stands either way).
    """
    if outcome.succeeded:
        logger.info("the pipeline run succeeded: nothing to record")
        return None
    from mlflow import MlflowClient

    check_tracking_server(tracking_uri)
    try:
        return record_failed_run(client or MlflowClient(tracking_uri), experiment, outcome)
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise TlopsError(
            f"the pipeline run ended {outcome.state}, and recording that in MLflow at {tracking_uri} failed "
            f"({first_line}); check the server"
        ) from error
