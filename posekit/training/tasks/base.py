"""The interface between the training engine and a model family."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["TrainTask", "move_to_device"]


def move_to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor (inside dicts, lists and tuples) moved to ``device``; other values unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


class TrainTask(ABC):
    """What the :class:`~posekit.training.trainer.Trainer` needs from a model family.

    The engine owns the loop (sampling, optimiser, schedule, AMP, EMA, DDP, checkpoints, logging); a task owns
    the model, the data and the loss. Rules that keep multi-process and resumed training exact:

    * ``compute_loss`` returns the MEAN over the samples of the batch with a per-sample normaliser that does not
      depend on the other samples (e.g. divide by ``batch * K``, not by the number of visible keypoints of the
      batch), so the average over processes equals the loss of the whole global batch;
    * augmentation randomness comes from the dataset's per-sample generator (``CocoPoseDataset.rng(i)``) or the
      global RNGs, which the engine seeds per sample from ``(seed, epoch, index)``.
    """

    #: the name in ``posekit.training.tasks.TASKS``
    name: str = ""

    @abstractmethod
    def build_model(self, cfg) -> nn.Module:
        """The network for ``cfg.model`` (``name`` + ``overrides``)."""

    @abstractmethod
    def build_datasets(self, cfg) -> tuple[Any, Any]:
        """``(train, val)`` map-style datasets (``val`` may be None: no evaluation)."""

    @abstractmethod
    def collate(self, samples: list[dict]) -> Any:
        """A batch (tensors on the CPU) from a list of dataset samples; runs in the data-loader workers."""

    @abstractmethod
    def compute_loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss, scalars)``: the scalar loss to minimise (batch mean) and named floats to log."""

    @abstractmethod
    def evaluate(self, model: nn.Module, val: Any) -> dict[str, float]:
        """Stats on the validation set, including the metric named by ``cfg.eval.metric`` (``"AP"``)."""

    def to_device(self, batch: Any, device: torch.device) -> Any:
        """Move a collated batch to the training device (default: every tensor, recursively)."""
        return move_to_device(batch, device)

    def set_step(self, step: int) -> None:
        """Called by the engine with the global optimiser step (the same on every process) before each
        ``compute_loss``; default: nothing (RTMO draws its synchronised batch size from it)."""

    def checkpoint_meta(self) -> dict:
        """Extra plain-data entries stored in every checkpoint (e.g. the keypoint ``schema``); default none."""
        return {}

    def batch_size_of(self, batch: Any) -> int | None:
        """Number of images in a batch, for the images/s readout (None: the engine counts sampler indices)."""
        return None


def merge_data_options(task: str, given: Mapping, defaults: Mapping) -> dict:
    """A task's ``data.options``: ``defaults`` updated with ``given``; unknown keys and a bad ``scale_range``
    (when the task has one) are errors naming the key."""
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"unknown data.options key(s) for task {task!r}: {sorted(unknown)} "
                         f"(known: {', '.join(sorted(defaults))})")
    out = {**defaults, **given}
    if "scale_range" in out:
        lo, hi = (float(v) for v in out["scale_range"])
        if not 0 < lo <= hi:
            raise ValueError(f"data.options.scale_range must be 0 < lo <= hi, got {out['scale_range']!r}")
        out["scale_range"] = (lo, hi)
    return out
