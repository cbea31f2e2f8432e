"""Learning-rate schedules per optimiser step: linear warm-up, then cosine, step or constant.

:func:`lr_factor` is a pure function of the step; :class:`LRSchedule` applies ``base_lr * factor`` to an
optimiser's parameter groups and keeps only the step in its state (so resume is exact and ``weights_only``-safe).
"""

from __future__ import annotations

import math

from posekit.training.config import ScheduleConfig

__all__ = ["lr_factor", "LRSchedule", "warmup_steps_of"]


def lr_factor(step: int, cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int) -> float:
    """The multiplier of the base learning rate for optimiser step ``step`` (0-based, the step about to run).

    Warm-up: ``start + (1 - start) * step / warmup_steps`` for ``step < warmup_steps`` (quadratic:
    ``((step + 1) / warmup_steps)^2``; ``warmup_epochs`` counts in epochs). Then
    ``cosine``: from 1 at ``warmup_steps`` to ``min_lr_ratio`` at ``total_steps - 1``;
    ``step``: ``gamma ** (number of milestones m with step >= m * steps_per_epoch)`` (or ``gamma ** (step //
    step_size_steps)``); ``constant``: 1; ``piecewise``: the warm-up factor times the phase factor (see
    :class:`~posekit.training.config.ScheduleConfig`).
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    w = warmup_steps_of(cfg, steps_per_epoch)
    if cfg.name == "piecewise":  # the warm-up multiplies the phase factor (MMEngine chains its schedulers)
        return _warmup(step, w, cfg) * _piecewise(step, cfg, steps_per_epoch)
    if step < w:
        return _warmup(step, w, cfg)
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        if int(cfg.step_size_steps) > 0:
            return float(cfg.gamma) ** (step // int(cfg.step_size_steps))
        n = sum(1 for m in cfg.milestones if step >= int(m) * steps_per_epoch)
        return float(cfg.gamma) ** n
    if cfg.name == "cosine":
        w = int(w)
        span = max(total_steps - 1 - w, 1)
        t = min(max(step - w, 0) / span, 1.0)
        lo = float(cfg.min_lr_ratio)
        return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule name {cfg.name!r} (expected 'cosine', 'step' or 'constant')")


def warmup_steps_of(cfg: ScheduleConfig, steps_per_epoch: int) -> int:
    """The warm-up length in optimiser steps: ``warmup_epochs * steps_per_epoch`` when set, else
    ``warmup_steps``."""
    if float(cfg.warmup_epochs) > 0:
        return int(round(float(cfg.warmup_epochs) * steps_per_epoch))
    return int(cfg.warmup_steps)


def _warmup(step: int, w: int, cfg: ScheduleConfig) -> float:
    """Warm-up factor (1 from step ``w`` on): linear from ``warmup_start_factor``, or quadratic
    ``((step + 1) / w)^2`` (YOLOX's / MMDet's ``QuadraticWarmupLR``; ``warmup_start_factor`` is not used)."""
    if step >= w:
        return 1.0
    s = float(cfg.warmup_start_factor)
    if cfg.warmup_kind == "quadratic":
        return ((step + 1) / w) ** 2
    return s + (1.0 - s) * step / w


def _piecewise(step: int, cfg: ScheduleConfig, steps_per_epoch: int) -> float:
    """The factor of ``cfg.phases`` at ``step``; past the last phase, its end value."""
    begin = 0
    last = 1.0
    for ph in cfg.phases:
        end = int(round(float(ph["end_epoch"]) * steps_per_epoch))
        kind = ph.get("kind", "constant")
        a = float(ph.get("start", 1.0))
        b = float(ph.get("end", a))
        if step < end:
            if kind == "constant":
                return a
            t = (step - begin) / max(end - begin, 1)
            return b + (a - b) * 0.5 * (1.0 + math.cos(math.pi * t))
        begin, last = end, (a if kind == "constant" else b)
    return last


class LRSchedule:
    """Sets ``lr = base_lr * lr_factor(step)`` in every parameter group of ``optimizer``.

    ``base_lr`` of a group is its ``lr`` when the schedule is built (stored as ``initial_lr``). Call
    :meth:`apply` before each optimiser step with that step's index.
    """

    def __init__(self, optimizer, cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int):
        self.optimizer = optimizer
        self.cfg = cfg
        self.total_steps = int(total_steps)
        self.steps_per_epoch = int(steps_per_epoch)
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.step = 0

    def apply(self, step: int) -> float:
        """Set the learning rates for optimiser step ``step``; returns the first group's lr."""
        self.step = int(step)
        f = lr_factor(self.step, self.cfg, self.total_steps, self.steps_per_epoch)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * f
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"step": self.step, "base_lrs": list(self.base_lrs), "total_steps": self.total_steps}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = base
