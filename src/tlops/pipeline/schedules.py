"""Recurring runs of the pipeline on Kubeflow Pipelines, known by name: create or replace, list, delete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tlops.errors import TlopsError
from tlops.pipeline.kfp_api import Connection, calling
from tlops.pipeline.remote import PipelineVersion, Submission, check_cron, experiment_id

MAX_CONCURRENCY = 10  # the most the server accepts


@dataclass(frozen=True)
class Schedule:
    """One recurring run as ``tlops schedule --list`` shows it."""

    name: str
    cron: str
    enabled: bool
    max_concurrency: str
    id: str
    created: str


def _schedule(job: Any) -> Schedule:
    trigger = job.trigger
    if trigger is not None and trigger.cron_schedule is not None:
        cron = trigger.cron_schedule.cron or ""
    elif trigger is not None and trigger.periodic_schedule is not None:
        cron = f"every {trigger.periodic_schedule.interval_second} s"
    else:
        cron = ""
    created = job.created_at.strftime("%Y-%m-%d %H:%M:%S") if job.created_at else ""
    return Schedule(
        job.display_name or "",
        cron,
        job.mode == "ENABLE",
        str(job.max_concurrency or ""),
        job.recurring_run_id,
        created,
    )


def list_schedules(connection: Connection) -> list[Schedule]:
    """Every recurring run the connection sees (in its namespace), oldest first."""
    schedules, token = [], ""
    while True:
        with calling(connection, "listing the recurring runs"):
            page = connection.client.list_recurring_runs(
                page_token=token, page_size=100, sort_by="created_at", namespace=connection.namespace
            )
        schedules += [_schedule(job) for job in page.recurring_runs or []]
        token = page.next_page_token
        if not token:
            return schedules


def check_max_concurrency(value: int) -> int:
    """Refuse a concurrency the server would refuse.

    Raises:
        TlopsError: unless 1 <= ``value`` <= 10.
    """
    if not 1 <= value <= MAX_CONCURRENCY:
        raise TlopsError(f"--max-concurrency {value}: Kubeflow Pipelines runs 1 to {MAX_CONCURRENCY} at a time")
    return value


def schedule_run(
    connection: Connection,
    version: PipelineVersion,
    parameters: dict[str, Any],
    experiment: str,
    name: str,
    cron: str,
    max_concurrency: int = 1,
    catchup: bool = False,
    pipeline_root: str | None = None,
    service_account: str | None = None,
) -> tuple[Submission, list[Schedule]]:
    """Create the recurring run ``name`` and then delete the ones of that name it replaces.

    Returns:
        The new recurring run, and the replaced ones (deleted).
    """
    cron = check_cron(cron)
    check_max_concurrency(max_concurrency)
    replaced = [schedule for schedule in list_schedules(connection) if schedule.name == name]
    experiment_key = experiment_id(connection, experiment)
    with calling(connection, f"creating recurring run {name!r}"):
        job = connection.client.create_recurring_run(
            experiment_id=experiment_key,
            job_name=name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            params=parameters,
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            enabled=True,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
    _delete(connection, replaced)
    job_id = job.recurring_run_id
    return Submission(
        "recurring run", job_id, experiment, f"{connection.host}/#/recurringrun/details/{job_id}"
    ), replaced


def _delete(connection: Connection, schedules: list[Schedule]) -> None:
    for schedule in schedules:
        with calling(connection, f"deleting recurring run {schedule.name!r} ({schedule.id})"):
            connection.client.delete_recurring_run(schedule.id)


def delete_schedule(connection: Connection, name: str) -> list[Schedule]:
    """Delete the recurring runs named ``name``; the deleted ones.

    Raises:
        TlopsError: when there is none of that name, listing the names there are.
    """
    schedules = list_schedules(connection)
    matching = [schedule for schedule in schedules if schedule.name == name]
    if not matching:
        names = ", ".join(sorted({schedule.name for schedule in schedules})) or "none"
        raise TlopsError(
            f"no recurring run named {name!r} on Kubeflow Pipelines at {connection.host}; the recurring runs there: "
            f"{names}"
        )
    _delete(connection, matching)
    return matching


def format_schedules(schedules: list[Schedule]) -> str:
    """The table ``tlops schedule --list`` prints."""
    header = ("name", "cron", "enabled", "max concurrency", "id", "created")
    rows = [header] + [
        (s.name, s.cron, "yes" if s.enabled else "no", s.max_concurrency, s.id, s.created) for s in schedules
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
