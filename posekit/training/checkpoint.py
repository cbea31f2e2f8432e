"""Checkpoints: atomic ``torch.save`` and ``weights_only`` loading, RNG states as plain lists and tensors.

A training checkpoint (written by :class:`posekit.training.trainer.Trainer`) is a plain dict::

    format     "posekit-train/1"
    model      state_dict of the (unwrapped) model
    optimizer  optimizer.state_dict()
    scheduler  LRSchedule.state_dict()      {"step", "base_lrs", "total_steps"}
    ema        ModelEMA.state_dict() or None {"module", "updates"}
    scaler     GradScaler.state_dict() or None
    step       optimiser steps done (the next step's index)
    epoch      the epoch the next step belongs to
    best       {"metric", "value", "step"} of the best evaluation so far (value None before any)
    config     the TrainConfig as a plain dict
    rng        list (one per rank) of get_rng_state() dicts
    world_size number of processes that wrote it

Everything in it is a tensor, number, string, None, list or dict, so ``torch.load(..., weights_only=True)``
reads it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "get_rng_state", "set_rng_state", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "posekit-train/1"


def save_checkpoint(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to a temporary file beside ``path``, fsync, then ``os.replace``: a reader never sees a
    half-written checkpoint, and a crash leaves the previous file intact."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """``torch.load(path, weights_only=True)`` with errors that name the file."""
    p = Path(path)
    if p.is_dir():
        p = p / "last.pt"
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt, truncated, or holding pickled objects
        raise RuntimeError(f"cannot load checkpoint {p}: {type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {p} holds a {type(ckpt).__name__}, not a dict")
    return ckpt


def get_rng_state() -> dict:
    """The global RNG states of python ``random``, numpy, torch (CPU) and every CUDA device, as lists/tensors."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": int(version), "mt": [int(v) for v in mt], "gauss": gauss},
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned (CUDA states only where devices are present)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["mt"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.int64).astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        cuda = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda])
