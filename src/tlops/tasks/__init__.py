"""Tasks: what differs between image classification, text classification and object detection.

A :class:`Task` owns how a dataset of its kind is recognised and prepared, the model it trains on a backbone, its
metrics and the per-example statistic the promotion gate pairs, and how the registered model serves. Everything
else (sources, splits, manifests, the feature cache, steps, pipeline, registry, gate, CLI) is shared. Tasks register
in :data:`TASKS`; ``tlops list tasks`` prints them. docs/architecture.md says how to add one.
"""

from __future__ import annotations

from tlops.tasks.protocol import DEFAULT_TASK, DETECT_TASK, TASKS, Task, detect_task, task_of

__all__ = ["DEFAULT_TASK", "DETECT_TASK", "TASKS", "Task", "detect_task", "task_of"]

# Importing a task module registers it.
from tlops.tasks import image_classification, object_detection, text_classification  # noqa: F401
