"""Submitting the compiled pipeline to Kubeflow Pipelines: one pipeline, a version per code, runs of a version.

The pipeline is uploaded once by its name; each compiled spec becomes a version named after the tlops version and
the spec's hash (``0.1.0-<sha256[:12]>``), so submitting the same code again uploads nothing and a run always
names the exact spec it runs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlops import __version__
from tlops.errors import TlopsError
from tlops.pipeline.kfp_api import Connection, calling

CRON_HELP = "KFP cron expressions have 6 fields, seconds first: '0 0 3 * * *' runs daily at 03:00"
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")
_NOT_TASKS = ("root", "executor")  # the DAG itself and Argo's executor nodes: not a step of the pipeline


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


@dataclass(frozen=True)
class Package:
    """A compiled pipeline package and what the server is told about it."""

    path: Path
    name: str
    description: str
    version: str
    inputs: dict[str, dict[str, Any]]


def read_package(path: Path, tlops_version: str = __version__) -> Package:
    """The package at ``path``, its version named ``<tlops version>-<sha256 of the file, 12 characters>``."""
    import yaml

    data = path.read_bytes()
    spec = next(yaml.safe_load_all(data))
    info = spec["pipelineInfo"]
    return Package(
        path,
        info["name"],
        info.get("description", ""),
        f"{tlops_version}-{hashlib.sha256(data).hexdigest()[:12]}",
        spec["root"].get("inputDefinitions", {}).get("parameters", {}),
    )


@dataclass(frozen=True)
class PipelineVersion:
    """The pipeline version runs are made of, and whether this call uploaded it."""

    pipeline_id: str
    version_id: str
    name: str
    uploaded_pipeline: bool
    uploaded_version: bool


def _equals(key: str, value: str) -> str:
    import json

    return json.dumps({"predicates": [{"operation": "EQUALS", "key": key, "string_value": value}]})


def _find_version(connection: Connection, pipeline_id: str, name: str) -> str | None:
    token = ""
    while True:
        with calling(connection, f"listing the versions of pipeline {pipeline_id}"):
            page = connection.client.list_pipeline_versions(
                pipeline_id, page_token=token, page_size=100, filter=_equals("display_name", name)
            )
        for version in page.pipeline_versions or []:
            if name in (version.display_name, version.name):
                return version.pipeline_version_id
        token = page.next_page_token
        if not token:
            return None


def _find_pipeline(connection: Connection, name: str) -> str | None:
    with calling(connection, f"looking up pipeline {name!r}"):
        found = connection.client.list_pipelines(
            page_size=2, filter=_equals("display_name", name), namespace=connection.namespace
        )
    pipelines = [p for p in found.pipelines or [] if name in (p.display_name, p.name)]
    if len(pipelines) > 1:
        raise TlopsError(f"Kubeflow Pipelines at {connection.host} has more than one pipeline named {name!r}")
    return pipelines[0].pipeline_id if pipelines else None


def ensure_version(connection: Connection, package: Package) -> PipelineVersion:
    """The pipeline named like the package and its version for this spec, uploading what the server lacks.

    With a namespace (multi-user Kubeflow) the pipeline is the namespace's own, else a shared one.
    """
    client = connection.client
    pipeline_id = _find_pipeline(connection, package.name)
    uploaded_pipeline = pipeline_id is None
    if pipeline_id is None:
        with calling(connection, f"uploading pipeline {package.name!r}"):
            pipeline_id = client.upload_pipeline(
                str(package.path),
                pipeline_name=package.name,
                description=package.description,
                namespace=connection.namespace,
            ).pipeline_id
    version_id = _find_version(connection, pipeline_id, package.version)
    uploaded_version = version_id is None
    if version_id is None:
        with calling(connection, f"uploading version {package.version!r} of pipeline {package.name!r}"):
            version_id = client.upload_pipeline_version(
                str(package.path), pipeline_version_name=package.version, pipeline_id=pipeline_id
            ).pipeline_version_id
    return PipelineVersion(pipeline_id, version_id, package.version, uploaded_pipeline, uploaded_version)


def experiment_id(connection: Connection, name: str) -> str:
    """The id of the experiment ``name``, created when missing."""
    with calling(connection, f"finding or creating experiment {name!r}"):
        return connection.client.create_experiment(name, namespace=connection.namespace).experiment_id


def submit_run(
    connection: Connection,
    version: PipelineVersion,
    parameters: dict[str, Any],
    experiment: str,
    run_name: str,
    pipeline_root: str | None = None,
    service_account: str | None = None,
) -> Submission:
    """Start one run of ``version`` with exactly ``parameters`` (pods under ``service_account`` when given)."""
    experiment_key = experiment_id(connection, experiment)
    with calling(connection, f"creating run {run_name!r}"):
        run = connection.client.run_pipeline(
            experiment_key,
            run_name,
            params=parameters,
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
    return Submission("run", run.run_id, experiment, f"{connection.host}/#/runs/details/{run.run_id}")


@dataclass(frozen=True)
class RunOutcome:
    """How a followed run ended (or where it was when the wait timed out)."""

    state: str
    timed_out: bool = False
    failed_task: str | None = None
    error: str | None = None


def _failure(run: Any) -> tuple[str | None, str | None]:
    """The failed step of a run and its error: a FAILED task that is a step (not the DAG, a driver or Argo's)."""
    tasks = (run.run_details.task_details if run.run_details else None) or []
    failed = [task for task in tasks if task.state == "FAILED"]
    steps = [
        task for task in failed if task.display_name not in _NOT_TASKS and not task.display_name.endswith("-driver")
    ]
    task = (steps or failed or [None])[0]
    error = None
    for status in (task.error if task else None, run.error):
        if status is not None and status.message:
            error = " ".join(status.message.split())
            break
    return (task.display_name if task else None), error


def wait_for_run(
    connection: Connection,
    run_id: str,
    poll_interval: float,
    timeout: float,
    report: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> RunOutcome:
    """Follow a run until it ends, calling ``report(state)`` at each change of state.

    Args:
        connection: The connection.
        run_id: The run.
        poll_interval: Seconds between two reads of the run.
        timeout: Give up after this many seconds (0: never).
        report: Called with each new state.
        sleep: ``time.sleep`` (tests pass another).
        clock: ``time.monotonic`` (tests pass another).
    """
    start, last = clock(), None
    while True:
        with calling(connection, f"reading run {run_id}"):
            run = connection.client.get_run(run_id)
        state = run.state or "RUNTIME_STATE_UNSPECIFIED"
        if state != last:
            report(state)
            last = state
        if state in TERMINAL_STATES:
            task, error = _failure(run) if state != "SUCCEEDED" else (None, None)
            return RunOutcome(state, failed_task=task, error=error)
        remaining = timeout - (clock() - start) if timeout else poll_interval
        if remaining <= 0:
            return RunOutcome(state, timed_out=True)
        sleep(min(poll_interval, remaining))
