"""The posekit training engine (model-agnostic): config, loop, checkpoints, DDP, schedules, EMA, scalar logs.

See ``docs/training.md``. Model families plug in as tasks (``posekit.training.tasks.TASKS``).
"""

from posekit.training.config import (CheckpointConfig, DataConfig, EMAConfig, EvalConfig, ModelConfig,
                                     OptimConfig, ScheduleConfig, TrainConfig, apply_overrides, config_from_dict,
                                     config_to_dict, load_config, save_config)

__all__ = [
    "TrainConfig", "ModelConfig", "DataConfig", "OptimConfig", "ScheduleConfig", "EMAConfig", "EvalConfig",
    "CheckpointConfig", "load_config", "apply_overrides", "config_from_dict", "config_to_dict", "save_config",
    "Trainer", "train",
]


def __getattr__(name):  # the loop pulls in torch and the data stack: import it on first use
    if name in ("Trainer", "train"):
        from posekit.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'posekit.training' has no attribute {name!r}")
