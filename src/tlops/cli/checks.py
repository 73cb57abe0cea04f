"""Checks of command-line options shared by several commands: one-line errors before anything runs."""

from __future__ import annotations

import os

from tlops.data.archives import ArchiveLimits
from tlops.errors import TlopsError
from tlops.tasks import TASKS, Task


def backbone_list(text: str, task: Task | None = None) -> list[str]:
    """The names of a comma-separated ``--backbones`` option, each checked (no torch import).

    Args:
        text: The option's value; empty: the task's own candidates.
        task: The task the names must suit; ``None`` (not known yet): a name any task takes passes.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        return list(task.default_backbones) if task is not None else []
    for name in names:
        if task is not None:
            task.check_backbone(name)
            continue
        errors = []
        for _, candidate_task in TASKS:
            try:
                candidate_task.check_backbone(name)
                break
            except TlopsError as error:
                errors.append(error)
        else:  # no task takes it: the error of a task that knew the name's form says more than "unknown"
            raise next((error for error in errors if not str(error).startswith("unknown")), errors[0])
    return names


def archive_limits() -> ArchiveLimits:
    """Archive expansion limits, from ``TLOPS_ARCHIVE_MAX_BYTES`` / ``_MAX_RATIO`` / ``_MAX_MEMBERS`` when set."""
    return ArchiveLimits.from_environment(os.environ)
