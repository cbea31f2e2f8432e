"""Multi-process training under ``torchrun``: process-group set-up, rank helpers and the global-batch sampler.

``torchrun --nproc_per_node N`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR/PORT``;
:func:`init_distributed` joins the group (``nccl`` on CUDA, ``gloo`` on CPU). Without those variables it is a
single process (rank 0 of 1) and nothing is initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "barrier", "all_reduce_mean",
           "all_gather_objects", "GlobalBatchSampler", "resolve_device"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``cuda`` -> ``cuda:<local_rank>``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init_distributed(device: torch.device) -> DistInfo:
    """Join the ``torchrun`` process group if the environment asks for one (``WORLD_SIZE > 1``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local, backend=backend)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean over processes of each scalar (every process must call it with the same keys)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (just ``[obj]`` in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class GlobalBatchSampler:
    """Yields this rank's share of each global batch of one epoch, resumable mid-epoch.

    The epoch's order is ``np.random.default_rng([seed, 1, epoch]).permutation(num_samples)`` (identity when
    ``shuffle=False``), cut into ``num_samples // global_batch`` global batches (the remainder is dropped, so
    every step sees exactly ``global_batch`` samples). Rank ``r`` of ``W`` gets the ``r``-th of ``W`` equal
    slices of every global batch, so the union over ranks of step ``i`` is the same set of samples for any
    ``W``: with per-sample-mean losses and gradient averaging, ``W`` processes compute the gradient of one
    process with the whole batch. ``start_batch`` skips the batches already trained on (resume).
    """

    def __init__(self, num_samples: int, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 epoch: int = 0, shuffle: bool = True, start_batch: int = 0):
        if global_batch % world_size:
            raise ValueError(f"batch_size (global) {global_batch} is not divisible by the world size {world_size}")
        if num_samples < global_batch:
            raise ValueError(f"the dataset has {num_samples} samples, fewer than one global batch of {global_batch}")
        self.num_samples = int(num_samples)
        self.global_batch = int(global_batch)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed, self.epoch, self.shuffle = int(seed), int(epoch), bool(shuffle)
        self.num_batches = self.num_samples // self.global_batch
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"start_batch {start_batch} outside 0..{self.num_batches}")
        self.start_batch = int(start_batch)

    def order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, 1, self.epoch]).permutation(self.num_samples)

    def __iter__(self) -> Iterator[list[int]]:
        perm = self.order()
        per = self.global_batch // self.world_size
        for b in range(self.start_batch, self.num_batches):
            g = perm[b * self.global_batch:(b + 1) * self.global_batch]
            yield g[self.rank * per:(self.rank + 1) * per].tolist()

    def __len__(self) -> int:
        return self.num_batches - self.start_batch
