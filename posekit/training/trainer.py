"""The training loop shared by every posekit model family.

:class:`Trainer` runs a :class:`~posekit.training.tasks.base.TrainTask` under a
:class:`~posekit.training.config.TrainConfig`: AdamW/SGD, warm-up + cosine/step schedule, gradient clipping, EMA,
AMP on CUDA, deterministic seeding, COCO-AP evaluation every N epochs, atomic ``last.pt``/``best.pt`` checkpoints,
exact resume (mid-epoch included), CSV + TensorBoard scalars, a tqdm progress bar, multi-process data loading and
``torchrun`` DistributedDataParallel (gloo on CPU, nccl on CUDA; only rank 0 logs and saves).

Exactness rules:

* the model is built after seeding every RNG with ``cfg.seed`` (identical on every rank);
* batches come from :class:`~posekit.training.distributed.GlobalBatchSampler` (order from ``(seed, epoch)``,
  resumable at any batch);
* before each sample is loaded, python ``random``, numpy's global RNG and torch's CPU RNG are seeded from
  ``(seed, epoch, index)`` (in the main process they are restored afterwards), and datasets with ``set_epoch``
  get the epoch, so the data do not depend on the number of workers, on the world size, or on a resume;
* the data loader gets its own generator seeded from ``(seed, epoch, first batch)`` and never draws from the
  global RNG; the main-process RNG states of every rank are saved in checkpoints and restored on resume.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from posekit.training.checkpoint import (CHECKPOINT_FORMAT, get_rng_state, load_checkpoint, save_checkpoint,
                                         set_rng_state)
from posekit.training.config import OptimConfig, TrainConfig, config_to_dict, save_config
from posekit.training.distributed import (DistInfo, GlobalBatchSampler, all_gather_objects, all_reduce_mean,
                                          barrier, cleanup_distributed, init_distributed, resolve_device)
from posekit.training.ema import ModelEMA, unwrap_model
from posekit.training.logging import ScalarLogger
from posekit.training.schedules import LRSchedule
from posekit.training.tasks import TrainTask, get_task

__all__ = ["Trainer", "train", "build_optimizer", "param_groups", "vit_layer_id", "seed_everything", "derive_seed", "EpochSeededDataset",
           "STALL_ENV"]

#: test hook: after finishing this optimiser step (and its checkpoint, if any) every rank writes
#: ``out_dir/stalled`` (rank 0) and sleeps until killed; used to SIGKILL a run at a known point.
STALL_ENV = "POSEKIT_TRAIN_STALL_AT_STEP"

# config sections whose change makes a resumed run differ from the interrupted one
_TRAJECTORY_KEYS = ("task", "model", "data", "optim", "schedule", "ema", "seed", "batch_size", "epochs",
                    "max_steps", "sync_bn")


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (``np.random.SeedSequence``): different tuples give independent streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
               .astype(np.uint64).dot(np.array([1 << 31, 1], np.uint64))) & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


class EpochSeededDataset(Dataset):
    """Wraps a map-style dataset for one epoch: item ``i`` is loaded with the global RNGs (python, numpy, torch
    CPU) seeded from ``(seed, epoch, i)``; in the main process (``workers=0``) their previous states are put back
    afterwards, so loading does not disturb the training RNG. Calls ``dataset.set_epoch(epoch)`` when present."""

    def __init__(self, dataset, seed: int, epoch: int):
        self.dataset, self.seed, self.epoch = dataset, int(seed), int(epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        s = derive_seed(self.seed, 2, self.epoch, int(i))
        main = torch.utils.data.get_worker_info() is None
        if main:
            saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(s)
        np.random.seed(s % (1 << 32))
        torch.default_generator.manual_seed(s)
        try:
            return self.dataset[i]
        finally:
            if main:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def vit_layer_id(name: str, num_layers: int) -> int:
    """MMPose's ``get_num_layer_for_vit``: 0 for the position embedding and the patch embedding, ``i + 1`` for
    ``backbone.layers.i``, ``num_layers + 1`` for everything else (final norm, head)."""
    if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed") or \
            name.startswith("backbone.patch_embed"):
        return 0
    if name.startswith("backbone.layers."):
        return int(name.split(".")[2]) + 1
    return num_layers + 1


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """The optimiser's parameter groups: ``{"params", "weight_decay", "lr", "names"}``, one per distinct
    (weight decay, learning-rate factor) pair, in first-seen order.

    No weight decay on 1-D parameters (``no_decay_1d``) and on names containing one of ``no_decay_keys``; the
    learning rate is ``lr`` times the ``lr_mult`` of the longest matching name prefix and, with ``layer_decay < 1``,
    ``layer_decay ** (num_layers + 1 - vit_layer_id(name))`` (MMPose's ``LayerDecayOptimWrapperConstructor``)."""
    groups: dict[tuple, dict] = {}
    mults = sorted(((str(k), float(v)) for k, v in (cfg.lr_mult or {}).items()), key=lambda kv: -len(kv[0]))
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = (cfg.no_decay_1d and p.ndim <= 1) or any(k in name for k in cfg.no_decay_keys)
        wd = 0.0 if no_decay else float(cfg.weight_decay)
        f = next((v for k, v in mults if name.startswith(k)), 1.0)
        if cfg.layer_decay < 1.0:
            n = int(cfg.layer_decay_num_layers)
            f *= float(cfg.layer_decay) ** (n + 1 - vit_layer_id(name, n))
        key = (no_decay, f)
        g = groups.setdefault(key, {"params": [], "weight_decay": wd, "lr": float(cfg.lr) * f, "names": []})
        g["params"].append(p)
        g["names"].append(name)
    order = sorted(groups, key=lambda k: k[0])  # decayed first, first-seen order otherwise (a stable sort)
    return [groups[k] for k in order]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD over the trainable parameters, grouped by :func:`param_groups` (with ``no_decay_1d`` the
    1-D ones, biases and norm scales, get no weight decay; decayed groups first)."""
    groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups(model, cfg)]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    raise ValueError(f"config field 'optim.name' must be 'adamw', 'adam' or 'sgd', got {cfg.name!r}")


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class Trainer:
    """Train ``task`` (default: ``get_task(cfg.task)``) as ``cfg`` says. ``fit(resume=path)`` continues a run
    from a checkpoint (a file, or a folder holding ``last.pt``)."""

    def __init__(self, cfg: TrainConfig, task: TrainTask | None = None):
        self.cfg = cfg.validate()
        self.task = task
        self.out_dir = Path(cfg.out_dir)

    # ------------------------------------------------------------------ entry point
    def fit(self, resume: str | os.PathLike | None = None) -> dict:
        """Run the training; returns ``{"step", "epoch", "best", "last_eval", "out_dir", "last_checkpoint"}``."""
        cfg = self.cfg
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
        was_initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
        det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
               torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
        info = init_distributed(device)
        try:
            return self._fit(device, info, resume)
        finally:
            if not was_initialised:
                cleanup_distributed()
            torch.use_deterministic_algorithms(det[0], warn_only=det[1])
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = det[2], det[3]

    def _say(self, msg: str) -> None:
        if self.info.is_main:
            from tqdm import tqdm

            tqdm.write(f"[posekit train] {msg}", file=sys.stderr)

    # ------------------------------------------------------------------ the loop
    def _fit(self, device: torch.device, info: DistInfo, resume) -> dict:
        from tqdm import tqdm

        cfg = self.cfg
        self.info, self.device = info, device
        if cfg.batch_size % info.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} (global) is not divisible by the {info.world_size} "
                             f"processes")
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        seed_everything(cfg.seed)
        task = self.task if self.task is not None else get_task(cfg.task)
        self.task = task
        train_ds, val_ds = task.build_datasets(cfg)
        model = task.build_model(cfg)
        if cfg.model.init_from and resume is None:
            self._init_from(model)
        model = model.to(device)
        if cfg.sync_bn and info.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # per-rank stream for everything after the (identical) initialisation: dropout, etc.
        seed_everything(derive_seed(cfg.seed, 3, info.rank))

        spe = len(train_ds) // cfg.batch_size
        if spe < 1:
            raise ValueError(f"the training set has {len(train_ds)} samples, fewer than one batch of "
                             f"{cfg.batch_size} (batch_size is global)")
        total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * spe
        num_epochs = math.ceil(total / spe)
        self.steps_per_epoch, self.total_steps = spe, total

        optimizer = build_optimizer(model, cfg.optim)
        schedule = LRSchedule(optimizer, cfg.schedule, total, spe)
        ema = ModelEMA(model, cfg.ema.decay, cfg.ema.warmup_steps) if cfg.ema.enabled else None
        use_amp = device.type == "cuda" and cfg.optim.amp != "off"
        amp_dtype = torch.bfloat16 if cfg.optim.amp == "bf16" else torch.float16
        scaler = torch.amp.GradScaler("cuda") if use_amp and cfg.optim.amp == "fp16" else None
        if cfg.optim.amp != "off" and not use_amp:
            self._say(f"optim.amp={cfg.optim.amp!r} ignored on {device.type} (AMP is CUDA-only)")

        step = 0
        best = {"metric": cfg.eval.metric, "value": None, "step": -1}
        if resume is not None:
            ckpt = load_checkpoint(resume)
            if ckpt.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"{resume}: not a posekit training checkpoint (format {ckpt.get('format')!r})")
            now = config_to_dict(cfg)
            changed = _diff_keys({k: ckpt["config"].get(k) for k in _TRAJECTORY_KEYS},
                                 {k: now[k] for k in _TRAJECTORY_KEYS})
            if changed:
                msg = f"resuming {resume} with a changed config ({', '.join(changed)}): the run will not be exact"
                warnings.warn(msg, stacklevel=2)
                self._say(msg)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            schedule.load_state_dict(ckpt["scheduler"])
            schedule.total_steps = total
            if ema is not None:
                if ckpt.get("ema") is None:
                    self._say("the checkpoint has no EMA weights: EMA restarts from the current weights")
                else:
                    ema.load_state_dict(ckpt["ema"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            step = int(ckpt["step"])
            best = dict(ckpt.get("best") or best)
            states = ckpt.get("rng") or []
            if len(states) == info.world_size:
                set_rng_state(states[info.rank])
            elif states:
                self._say(f"checkpoint written by {len(states)} process(es), resuming with {info.world_size}: "
                          "RNG states are not restored exactly")
                set_rng_state(states[0])
            self._say(f"resumed from {resume} at step {step} (epoch {step // spe})")

        if info.distributed:
            ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        else:
            ddp = model
        self.model, self.ema, self.optimizer, self.schedule, self.scaler = model, ema, optimizer, schedule, scaler

        logger = ScalarLogger(self.out_dir, enabled=info.is_main, resume_step=step if resume is not None else None)
        if info.is_main:
            save_config(cfg, self.out_dir / "config.yaml")
        stall = int(os.environ.get(STALL_ENV, "-1") or -1)
        pbar = tqdm(total=total, initial=step, disable=not (info.is_main and cfg.progress), file=sys.stderr,
                    dynamic_ncols=True, desc="train", leave=True)
        last_eval: dict = {}
        last_ckpt = None
        try:
            for epoch in range(step // spe, num_epochs):
                epoch_end = min((epoch + 1) * spe, total)
                skip = step - epoch * spe
                if step >= epoch_end:
                    continue
                sampler = GlobalBatchSampler(len(train_ds), cfg.batch_size, info.rank, info.world_size, cfg.seed,
                                             epoch, shuffle=True, start_batch=skip)
                loader = DataLoader(
                    EpochSeededDataset(train_ds, cfg.seed, epoch), batch_sampler=sampler,
                    num_workers=cfg.workers, collate_fn=task.collate, pin_memory=device.type == "cuda",
                    worker_init_fn=_worker_init,
                    generator=torch.Generator().manual_seed(derive_seed(cfg.seed, 4, epoch, skip, info.rank)),
                )
                ddp.train()
                acc: dict[str, float] = {}
                n_acc, t0, images = 0, time.perf_counter(), 0
                for batch in loader:
                    lr = schedule.apply(step)
                    n_img = task.batch_size_of(batch) or cfg.batch_size // info.world_size
                    batch = task.to_device(batch, device)
                    task.set_step(step)
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                        loss, scalars = task.compute_loss(ddp, batch)
                    if not torch.isfinite(loss.detach()).all():
                        raise RuntimeError(f"the loss is {float(loss)} at step {step} (epoch {epoch}); stopping")
                    optimizer.zero_grad(set_to_none=True)
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                    if cfg.optim.grad_clip > 0:
                        if scaler is not None:
                            scaler.unscale_(optimizer)
                        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                        scalars = {**scalars, "grad_norm": float(gn)}
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    step += 1
                    if ema is not None:
                        ema.update(model)

                    # ---- logging
                    images += n_img * info.world_size
                    acc["loss"] = acc.get("loss", 0.0) + float(loss.detach())
                    for k, v in scalars.items():
                        acc[k] = acc.get(k, 0.0) + float(v)
                    n_acc += 1
                    dt = time.perf_counter() - t0
                    ips = images / dt if dt > 0 else 0.0
                    pbar.update(1)
                    pbar.set_postfix(loss=f"{float(loss.detach()):.4g}", lr=f"{lr:.3g}", img_s=f"{ips:.1f}",
                                     refresh=False)
                    if step % cfg.log_every_steps == 0 or step == epoch_end:
                        means = all_reduce_mean({f"train/{k}": v / n_acc for k, v in acc.items()}, device)
                        means.update({"train/lr": lr, "train/images_per_s": ips, "train/epoch": epoch})
                        logger.log(means, step, epoch)
                        acc, n_acc, t0, images = {}, 0, time.perf_counter(), 0

                    # ---- mid-epoch checkpoint (epoch ends are saved below, after evaluation)
                    if cfg.checkpoint.every_steps and step % cfg.checkpoint.every_steps == 0 and step < epoch_end:
                        last_ckpt = self._save("last.pt", step, best)
                    if step == stall:
                        self._stall(step)
                    if step >= epoch_end:
                        break

                # ---- epoch end: evaluate, best checkpoint, last checkpoint
                finished = step >= total
                every = cfg.eval.every_epochs
                if val_ds is not None and ((every and (epoch + 1) % every == 0) or (finished and every)):
                    if info.is_main:
                        net = ema.module if (ema is not None and cfg.eval.use_ema) else model
                        last_eval = task.evaluate(net, val_ds)
                        logger.log({f"val/{k}": v for k, v in last_eval.items()}, step, epoch)
                        value = last_eval.get(cfg.eval.metric)
                        if value is None:
                            raise KeyError(f"task {cfg.task!r} evaluation returned no {cfg.eval.metric!r} "
                                           f"(eval.metric); it returned {sorted(last_eval)}")
                        self._say(f"epoch {epoch + 1} step {step}: {cfg.eval.metric} = {value:.4f}")
                        if best["value"] is None or value > best["value"]:
                            best = {"metric": cfg.eval.metric, "value": float(value), "step": step}
                            if cfg.checkpoint.save_best:
                                self._save("best.pt", step, best, gather_rng=False)
                    barrier()
                last_ckpt = self._save("last.pt", step, best)
        finally:
            pbar.close()
            logger.close()
        return {"step": step, "epoch": step // spe, "best": best, "last_eval": last_eval,
                "out_dir": str(self.out_dir), "last_checkpoint": str(last_ckpt) if last_ckpt else None}

    def _init_from(self, model: nn.Module) -> None:
        """``model.init_from``: load every fitting tensor, print the report, write ``out_dir/init_from.json``."""
        import json

        from posekit.data.io import write_bytes_atomic
        from posekit.training.finetune import format_report, load_matching

        m = self.cfg.model
        report = load_matching(model, m.init_from, m.init_keys, m.init_exclude)
        self._say(format_report(report))
        if self.info.is_main:
            write_bytes_atomic(self.out_dir / "init_from.json", json.dumps(report, indent=1).encode())

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, step: int, best: dict, rng: list | None = None) -> dict:
        """The checkpoint dict (see :mod:`posekit.training.checkpoint`), plus the task's ``checkpoint_meta()``."""
        meta = self.task.checkpoint_meta() if hasattr(self.task, "checkpoint_meta") else {}
        return {**meta,
            "format": CHECKPOINT_FORMAT,
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": int(step),
            "epoch": int(step // self.steps_per_epoch),
            "best": dict(best),
            "config": config_to_dict(self.cfg),
            "rng": rng if rng is not None else [get_rng_state()],
            "world_size": self.info.world_size,
        }

    def _save(self, name: str, step: int, best: dict, gather_rng: bool = True) -> Path:
        """Rank 0 writes ``out_dir/name`` atomically; with ``gather_rng`` every rank must call it (its RNG state
        is collected)."""
        rng = all_gather_objects(get_rng_state()) if gather_rng else None
        path = self.out_dir / name
        if self.info.is_main:
            save_checkpoint(self.state_dict(step, best, rng), path)
        return path

    def _stall(self, step: int) -> None:  # pragma: no cover - exercised through a killed subprocess
        if self.info.is_main:
            (self.out_dir / "stalled").write_text(str(step))
        while True:
            time.sleep(1.0)


def train(cfg: TrainConfig, resume: str | os.PathLike | None = None, task: TrainTask | None = None) -> dict:
    """``Trainer(cfg, task).fit(resume)``."""
    return Trainer(cfg, task).fit(resume)
