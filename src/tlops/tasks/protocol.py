"""The :class:`Task` protocol and the :data:`TASKS` registry (no heavy import)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tlops.data.prepared import IMAGE_CLASSIFICATION
from tlops.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from tlops.data.config import SplitConfig
    from tlops.data.prepared import PreparedData
    from tlops.data.prepared_cache import PreparedCache
    from tlops.io.storage import S3Client
    from tlops.models.backbones import Backbone


class Task(Protocol):
    """What a task family defines; the pipeline's steps call these and nothing task-specific besides.

    Attributes:
        name: What users choose it by (``image-classification``).
        summary: One line for ``tlops list tasks``.
        default_backbones: The candidates scored when ``--backbones`` is not given.
        baseline: The no-transfer candidate scored beside them (``pixels``, ``tfidf``).
        ships_baseline: Whether that baseline may be the model shipped when it scores best (a detector needs a
            backbone: object detection keeps the best backbone and says so).
    """

    name: str
    summary: str
    default_backbones: tuple[str, ...]
    baseline: str
    ships_baseline: bool

    def recognises(self, source: str, s3: S3Client | None) -> bool:
        """Whether ``source`` holds a dataset of this task (cheap: lists files, reads a table's header)."""
        ...

    def check_backbone(self, name: str) -> None:
        """Check a candidate's name without the network (one-line ``TlopsError`` naming the fix)."""
        ...

    def preflight(
        self, source: str, config: SplitConfig, s3: S3Client | None, cache: PreparedCache | None
    ) -> PreparedData:
        """Everything :meth:`prepare` checks, before any step runs (``tlops run``)."""
        ...

    def prepare(
        self,
        source: str,
        output: Path,
        config: SplitConfig,
        s3: S3Client | None,
        cache: PreparedCache | None = None,
        fingerprint: str | None = None,
    ) -> PreparedData:
        """Recognise, validate, quarantine and split a dataset of this task; write the manifest and report.

        ``cache`` and ``fingerprint``: reuse what the preflight of ``tlops run`` prepared for the same source.
        """
        ...

    def build_model(self, backbone: Backbone, num_classes: int, head: nn.Module | None = None) -> nn.Module:
        """The trainable model on a backbone: preprocessing, backbone and the task's head."""
        ...

    def metrics(self, targets: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, float]:
        """The task's test metrics from the targets and the model's outputs."""
        ...

    def gate_statistic(self, targets: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """One number per test example that the promotion gate pairs between champion and challenger."""
        ...

    def serving_signature(self, classes: list[str]) -> Any:
        """The MLflow signature of the served model (what a request holds)."""
        ...


TASKS: Registry[Task] = Registry("task", "--task")
DEFAULT_TASK = IMAGE_CLASSIFICATION
"""The task of prepared data from before tasks were recorded, and of a source no task recognises."""
DETECT_TASK = "auto"
"""``--task auto``: the task is recognised from the data."""


def task_of(name: str) -> Task:
    """The registered task ``name`` (``""``: :data:`DEFAULT_TASK`)."""
    return TASKS.get(name or DEFAULT_TASK)


def detect_task(name: str, source: str, s3: S3Client | None) -> Task:
    """The task ``name`` names, or for :data:`DETECT_TASK` the first other task that recognises ``source``.

    Image classification, the default, is asked last: its layouts are the most general (any folder of folders).
    """
    if name != DETECT_TASK:
        return task_of(name)
    for task_name, task in TASKS:
        if task_name != DEFAULT_TASK and task.recognises(source, s3):
            return task
    return task_of(DEFAULT_TASK)
