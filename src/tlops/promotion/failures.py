"""Leave a trace in MLflow of a pipeline run that failed: the pipeline's exit handler calls this.

Only the register step creates an MLflow run, so a pipeline that fails earlier would leave nothing in the
experiment: a team that watches MLflow would not see that last night's scheduled retraining broke. The exit handler
marks the pipeline run's MLflow run FAILED (the register step tags it ``tlops.kfp_run_id``), or creates one named
after the pipeline run, with the state and the error, when no step got as far as MLflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

SUCCEEDED = "SUCCEEDED"
KFP_RUN_TAG = "tlops.kfp_run_id"
MAX_ERROR_CHARS = 5000


@dataclass(frozen=True)
class PipelineOutcome:
    """How a pipeline run ended, as the exit handler sees it.

    Attributes:
        state: The pipeline's final state (``SUCCEEDED``, ``FAILED``, ``CANCELED``, ...).
        kfp_run_id: The KFP run's id.
        kfp_run_name: The KFP run's name.
        error: The error message of the failed task, when KFP gives one.
    """

    state: str
    kfp_run_id: str = ""
    kfp_run_name: str = ""
    error: str = ""

    @property
    def succeeded(self) -> bool:
        """Whether the pipeline succeeded (nothing to record)."""
        return self.state.upper() == SUCCEEDED


def record_failed_run(client, experiment: str, outcome: PipelineOutcome) -> str:
    """Mark the pipeline run's MLflow run FAILED, or create a FAILED run for it when there is none.

    Args:
        client: An ``MlflowClient``.
        experiment: The MLflow experiment the pipeline tracks into (created when missing).
        outcome: How the pipeline ended.

    Returns:
        The id of the MLflow run marked FAILED.
    """
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    tags = {
        KFP_RUN_TAG: outcome.kfp_run_id,
        "tlops.kfp_run_name": outcome.kfp_run_name,
        "tlops.pipeline_state": outcome.state,
        "tlops.pipeline_error": outcome.error[:MAX_ERROR_CHARS],
    }
    tags = {key: value for key, value in tags.items() if value}
    runs = []
    if outcome.kfp_run_id:
        runs = client.search_runs(
            [experiment_id], filter_string=f"tags.`{KFP_RUN_TAG}` = '{_quoted(outcome.kfp_run_id)}'", max_results=5
        )
    if runs:
        run_id = runs[0].info.run_id
    else:
        name = f"{outcome.kfp_run_name or outcome.kfp_run_id or 'pipeline'} ({outcome.state.lower()})"
        run_id = client.create_run(experiment_id, run_name=name[:250]).info.run_id
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    if not runs or runs[0].info.status != "FINISHED":  # a finished registration stands; the tags tell the rest
        client.set_terminated(run_id, status="FAILED")
    logger.info("marked MLflow run %s FAILED: the pipeline run ended %s", run_id, outcome.state)
    return run_id


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
