"""Training tasks by name.

``TASKS`` maps a task name (``TrainConfig.task``) to ``"module:Class"``; the module is imported only when the task
is used. A new model family adds one module here and one line to ``TASKS``.
"""

from __future__ import annotations

import importlib

from posekit.training.tasks.base import TrainTask, move_to_device

__all__ = ["TASKS", "get_task", "TrainTask", "move_to_device"]

TASKS: dict[str, str] = {
    # a tiny conv net regressing keypoint coordinates from person crops: the engine's own test task
    "regression": "posekit.training.tasks.regression:RegressionTask",
    # OpenPose (PAF + confidence maps, masked stage L2): posekit/training/tasks/openpose.py, class OpenPoseTask
    "openpose": "posekit.training.tasks.openpose:OpenPoseTask",
    # every top-down family (SimpleBaseline, ViTPose, RTMPose, CPM, Hourglass, CPN): posekit/training/tasks/topdown.py
    "topdown": "posekit.training.tasks.topdown:TopDownTask",
    # RTMO (SimOTA, VariFocal/IoU/OKS/visibility + MLE losses): posekit/training/tasks/rtmo.py
    "rtmo": "posekit.training.tasks.rtmo:RTMOTask",
}


def get_task(name: str) -> TrainTask:
    """A new instance of the task called ``name``; KeyError lists the known names."""
    if name not in TASKS:
        raise KeyError(f"unknown training task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    module, _, cls = TASKS[name].partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            raise KeyError(f"training task {name!r} is registered but its module {module} is not part of this "
                           f"build") from None
        raise
    task = getattr(mod, cls)()
    if not isinstance(task, TrainTask):
        raise TypeError(f"{TASKS[name]} is not a TrainTask")
    return task
