"""Exponential moving average (EMA) of model weights."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["ModelEMA", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class ModelEMA:
    """A frozen copy of a model whose floating-point weights and buffers follow
    ``ema = d * ema + (1 - d) * current`` after every optimiser step, with
    ``d = decay * (1 - exp(-updates / warmup_steps))`` (``d = decay`` when ``warmup_steps == 0``), so early
    averages are not dominated by the random initialisation. Integer buffers (BatchNorm's
    ``num_batches_tracked``) are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup_steps: float = 2000.0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if warmup_steps < 0:
            raise ValueError(f"EMA warmup_steps must be >= 0, got {warmup_steps}")
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.warmup_steps = float(warmup_steps)
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses."""
        n = self.updates + 1
        if self.warmup_steps > 0:
            return self.decay * (1.0 - math.exp(-n / self.warmup_steps))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
        src = unwrap_model(model).state_dict()
        for name, v in self.module.state_dict().items():
            s = src[name].detach()
            if v.dtype.is_floating_point:
                v.mul_(d).add_(s.to(v.dtype), alpha=1.0 - d)
            else:
                v.copy_(s)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
