"""Submitting the compiled pipeline to a Kubeflow Pipelines server, once or on a schedule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlops.errors import TlopsError

CRON_HELP = "KFP cron expressions have 6 fields, seconds first: '0 0 3 * * *' runs daily at 03:00"


def check_cron(expression: str) -> str:
    """Check that a cron expression has the six fields (seconds first) Kubeflow Pipelines expects.

    Raises:
        TlopsError: naming the expression and showing the expected form.
    """
    fields = expression.split()
    if len(fields) != 6:
        raise TlopsError(f"cron expression {expression!r} has {len(fields)} fields; {CRON_HELP}")
    return " ".join(fields)


@dataclass(frozen=True)
class Submission:
    """What was created on the server."""

    kind: str
    id: str
    experiment: str
    url: str


def _client(host: str):
    import kfp
    import requests

    try:
        requests.get(host.rstrip("/") + "/apis/v2beta1/healthz", timeout=10)
    except requests.RequestException as error:
        raise TlopsError(
            f"Kubeflow Pipelines at {host} does not answer ({type(error).__name__}); check --host "
            "(e.g. http://localhost:8080 with `kubectl port-forward svc/ml-pipeline-ui 8080:80 -n kubeflow`)"
        ) from None
    return kfp.Client(host=host)


def submit_run(host: str, package: Path, parameters: dict[str, Any], experiment: str, run_name: str) -> Submission:
    """Start one run of a compiled pipeline package on a Kubeflow Pipelines server."""
    client = _client(host)
    result = client.create_run_from_pipeline_package(
        str(package), arguments=parameters, run_name=run_name, experiment_name=experiment
    )
    return Submission("run", result.run_id, experiment, f"{host.rstrip('/')}/#/runs/details/{result.run_id}")


def schedule_run(
    host: str,
    package: Path,
    parameters: dict[str, Any],
    experiment: str,
    job_name: str,
    cron: str,
    max_concurrency: int = 1,
) -> Submission:
    """Create a recurring run (no catch-up of missed runs, at most ``max_concurrency`` at a time)."""
    cron = check_cron(cron)
    client = _client(host)
    experiment_id = client.create_experiment(experiment).experiment_id
    job = client.create_recurring_run(
        experiment_id=experiment_id,
        job_name=job_name,
        cron_expression=cron,
        max_concurrency=max_concurrency,
        no_catchup=True,
        params=parameters,
        pipeline_package_path=str(package),
        enabled=True,
    )
    job_id = job.recurring_run_id
    return Submission("recurring run", job_id, experiment, f"{host.rstrip('/')}/#/recurringrun/details/{job_id}")
