"""Tasks: the one place where "what the network predicts" lives (see :class:`~adacal.tasks.base.Task`).

``get_task(name, **info)`` builds a registered task for a dataset's facts; ``register_task`` adds
one. Each task family has its own module.
"""
from __future__ import annotations

from typing import Any

from adacal.checks import suggest
from adacal.errors import ConfigError
from adacal.tasks.base import MetricSet, Task
from adacal.tasks.classification import Classification

__all__ = ["TASKS", "Classification", "MetricSet", "Task", "get_task", "register_task"]

TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Make a :class:`Task` subclass available by its ``name`` (usable as a class decorator)."""
    if not cls.name:
        raise ConfigError(f"task class {cls.__name__} has no name")
    TASKS[cls.name] = cls
    return cls


def get_task(task: str | Task, **info: Any) -> Task:
    """A task instance: a registered name built with the dataset facts ``info``, or an instance as is."""
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; registered: {sorted(TASKS)}{suggest(str(task), TASKS)}")
    return TASKS[task](**info)


register_task(Classification)
from adacal.tasks import detection as _detection  # noqa: E402,F401  (registers the detection task)
from adacal.tasks import events as _events  # noqa: E402,F401  (registers event_classification)
from adacal.tasks import pointcloud as _pointcloud  # noqa: E402,F401  (registers pointcloud_classification, part_segmentation)
from adacal.tasks import segmentation as _segmentation  # noqa: E402,F401  (registers the task)
