"""Training configuration: nested dataclasses, strict YAML loading and typed ``--set a.b=c`` overrides.

A config is a :class:`TrainConfig`. It is loaded from YAML with :func:`load_config`; every key must be a field
(unknown keys are rejected with the file and the dotted key path), and every value is converted to the field's
type (``"1e-3"`` for a float field is a float; ``3.5`` for an int field is an error). Overrides ``a.b=c`` are
applied after the file, their value parsed as YAML and typed by the field. Fields of type ``dict``
(``model.overrides``, ``data.options``, ``task_options``) take any keys: ``--set model.overrides.width=32``.

Relative paths in a config are relative to the current working directory (not to the YAML file).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

__all__ = [
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "ScheduleConfig",
    "EMAConfig",
    "EvalConfig",
    "CheckpointConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "apply_overrides",
    "save_config",
]


@dataclass
class ModelConfig:
    """The network: a preset ``name`` understood by the task's ``build_model`` and keyword ``overrides``.

    Fine-tuning: ``init_from`` (a posekit training checkpoint, an official MMPose/ViTPose checkpoint or a plain
    state_dict) is loaded into the freshly built model before training (not on ``--resume``): every tensor whose
    name and shape fit is copied, the others keep their initialisation, and the run logs what was loaded and what
    was skipped and why (:mod:`posekit.training.finetune`). ``init_keys``: regular expressions; when given, only
    checkpoint keys matching one of them are considered. ``init_exclude``: keys matching one of these are skipped."""

    name: str = ""
    overrides: dict = field(default_factory=dict)
    init_from: str = ""
    init_keys: list[str] = field(default_factory=list)
    init_exclude: list[str] = field(default_factory=list)


@dataclass
class DataConfig:
    """Datasets. ``input_size`` is the model input ``[w, h]`` in pixels; ``options`` holds task-specific keys.
    ``schema``: a keypoint schema file (YAML/JSON: names, skeleton, flip pairs, sigmas; see
    :meth:`posekit.schema.KeypointSchema.from_file`) or a built-in name, used instead of the annotation file's
    category (empty: the file's category)."""

    train_ann: str = ""
    train_images: str = ""
    val_ann: str = ""
    val_images: str = ""
    input_size: list[int] = field(default_factory=lambda: [64, 64])
    options: dict = field(default_factory=dict)
    schema: str = ""


@dataclass
class OptimConfig:
    """Optimiser. ``name``: ``adamw``, ``adam`` (L2 weight decay added to the gradient, as ``torch.optim.Adam``)
    or ``sgd``. ``grad_clip``: max global L2 norm of the gradients (0: off).
    ``amp``: ``off``, ``bf16`` or ``fp16`` autocast (CUDA only; ignored on CPU; fp16 uses a GradScaler).
    ``no_decay_1d``: no weight decay on 1-D parameters (biases, norm scales); ``no_decay_keys``: nor on parameters
    whose name contains one of these strings (``pos_embed``). ``lr_mult``: ``{name prefix: factor}`` on the
    learning rate (RTMO: ``{neck.encoder: 0.05}``). ``layer_decay`` (< 1: on): layer-wise learning-rate decay of a
    ViT backbone with ``layer_decay_num_layers`` blocks (ViTPose/MAE: block ``i`` gets
    ``layer_decay ** (num_layers - i)``, the patch embedding ``layer_decay ** (num_layers + 1)``, the head 1)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 0.0
    amp: str = "off"
    no_decay_1d: bool = True
    no_decay_keys: list[str] = field(default_factory=list)
    lr_mult: dict = field(default_factory=dict)
    layer_decay: float = 1.0
    layer_decay_num_layers: int = 0


@dataclass
class ScheduleConfig:
    """Learning-rate schedule per optimiser step: linear (or ``warmup_kind: quadratic``) warm-up from
    ``warmup_start_factor * lr`` over ``warmup_steps`` (or ``warmup_epochs`` epochs when > 0), then ``cosine`` (to
    ``min_lr_ratio * lr`` at the last step), ``step`` (times ``gamma`` at each epoch in ``milestones``, or every
    ``step_size_steps`` optimiser steps when > 0: Caffe's ``step`` policy), ``constant`` or ``piecewise``:
    ``phases``, a list of ``{end_epoch, kind: constant|cosine, start, end}`` factors (a phase runs from the previous
    one's ``end_epoch``; ``constant`` uses ``start``), the published multi-phase schedules of RTMPose and RTMO."""

    name: str = "cosine"
    warmup_steps: int = 0
    warmup_start_factor: float = 0.001
    min_lr_ratio: float = 0.01
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_kind: str = "linear"
    warmup_epochs: float = 0.0
    step_size_steps: int = 0
    phases: list[dict] = field(default_factory=list)


@dataclass
class EMAConfig:
    """Exponential moving average of the weights: ``decay * (1 - exp(-updates / warmup_steps))`` per step."""

    enabled: bool = False
    decay: float = 0.9998
    warmup_steps: float = 2000.0


@dataclass
class EvalConfig:
    """Evaluate every ``every_epochs`` epochs (0: never) and after the last step; ``metric`` (higher is better)
    picks the best checkpoint; ``use_ema`` evaluates the EMA weights when EMA is on."""

    every_epochs: int = 1
    use_ema: bool = True
    metric: str = "AP"


@dataclass
class CheckpointConfig:
    """``last.pt`` at every epoch end and every ``every_steps`` steps (0: epoch ends only); ``best.pt`` when the
    eval metric improves (``save_best``)."""

    every_steps: int = 0
    save_best: bool = True


@dataclass
class TrainConfig:
    """A whole training run.

    ``batch_size`` is the GLOBAL batch (split evenly over the processes of a ``torchrun`` launch). Training runs
    ``epochs`` epochs, or exactly ``max_steps`` optimiser steps when ``max_steps > 0``. ``device``: ``auto``
    (CUDA when available), ``cpu`` or ``cuda``. ``deterministic`` turns on deterministic algorithms.
    """

    task: str = "regression"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    seed: int = 0
    epochs: int = 1
    max_steps: int = 0
    batch_size: int = 16
    workers: int = 0
    out_dir: str = "runs/train"
    device: str = "auto"
    deterministic: bool = True
    sync_bn: bool = False
    log_every_steps: int = 10
    progress: bool = True
    task_options: dict = field(default_factory=dict)

    def validate(self) -> "TrainConfig":
        """Check values that types cannot; raises ValueError naming the field."""
        checks = [
            (self.optim.name in ("adamw", "adam", "sgd"), "optim.name", "must be 'adamw', 'adam' or 'sgd'",
             self.optim.name),
            (0 < self.optim.layer_decay <= 1, "optim.layer_decay", "must be in (0, 1]", self.optim.layer_decay),
            (self.optim.layer_decay == 1 or self.optim.layer_decay_num_layers > 0, "optim.layer_decay_num_layers",
             "must be > 0 when optim.layer_decay < 1", self.optim.layer_decay_num_layers),
            (self.optim.lr > 0, "optim.lr", "must be > 0", self.optim.lr),
            (self.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0", self.optim.weight_decay),
            (len(self.optim.betas) == 2, "optim.betas", "must have 2 values", self.optim.betas),
            (self.optim.grad_clip >= 0, "optim.grad_clip", "must be >= 0", self.optim.grad_clip),
            (self.optim.amp in ("off", "bf16", "fp16"), "optim.amp", "must be 'off', 'bf16' or 'fp16'",
             self.optim.amp),
            (self.schedule.name in ("cosine", "step", "constant", "piecewise"), "schedule.name",
             "must be 'cosine', 'step', 'constant' or 'piecewise'", self.schedule.name),
            (self.schedule.warmup_kind in ("linear", "quadratic"), "schedule.warmup_kind",
             "must be 'linear' or 'quadratic'", self.schedule.warmup_kind),
            (self.schedule.warmup_epochs >= 0, "schedule.warmup_epochs", "must be >= 0", self.schedule.warmup_epochs),
            (self.schedule.step_size_steps >= 0, "schedule.step_size_steps", "must be >= 0",
             self.schedule.step_size_steps),
            (self.schedule.name != "piecewise" or bool(self.schedule.phases), "schedule.phases",
             "must list the phases of a 'piecewise' schedule", self.schedule.phases),
            (self.schedule.warmup_steps >= 0, "schedule.warmup_steps", "must be >= 0", self.schedule.warmup_steps),
            (0 < self.schedule.warmup_start_factor <= 1, "schedule.warmup_start_factor", "must be in (0, 1]",
             self.schedule.warmup_start_factor),
            (0 <= self.schedule.min_lr_ratio <= 1, "schedule.min_lr_ratio", "must be in [0, 1]",
             self.schedule.min_lr_ratio),
            (0 <= self.ema.decay < 1, "ema.decay", "must be in [0, 1)", self.ema.decay),
            (self.ema.warmup_steps >= 0, "ema.warmup_steps", "must be >= 0", self.ema.warmup_steps),
            (self.eval.every_epochs >= 0, "eval.every_epochs", "must be >= 0", self.eval.every_epochs),
            (self.checkpoint.every_steps >= 0, "checkpoint.every_steps", "must be >= 0",
             self.checkpoint.every_steps),
            (self.seed >= 0, "seed", "must be >= 0", self.seed),
            (self.epochs >= 1 or self.max_steps > 0, "epochs", "must be >= 1 (or set max_steps)", self.epochs),
            (self.max_steps >= 0, "max_steps", "must be >= 0", self.max_steps),
            (self.batch_size >= 1, "batch_size", "must be >= 1", self.batch_size),
            (self.workers >= 0, "workers", "must be >= 0", self.workers),
            (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
             "must be 'auto', 'cpu', 'cuda' or 'cuda:N'", self.device),
            (self.log_every_steps >= 1, "log_every_steps", "must be >= 1", self.log_every_steps),
            (bool(self.out_dir), "out_dir", "must not be empty", self.out_dir),
            (len(self.data.input_size) == 2 and min(self.data.input_size) > 0, "data.input_size",
             "must be [w, h] with positive sides", self.data.input_size),
        ]
        for ok, name, what, value in checks:
            if not ok:
                raise ValueError(f"config field '{name}' {what}, got {value!r}")
        prev = 0.0
        for i, ph in enumerate(self.schedule.phases):
            where = f"schedule.phases[{i}]"
            if not isinstance(ph, Mapping) or set(ph) - {"end_epoch", "kind", "start", "end"} or "end_epoch" not in ph:
                raise ValueError(f"config field '{where}' must be a mapping with end_epoch and optional kind "
                                 f"(constant/cosine), start, end; got {ph!r}")
            if ph.get("kind", "constant") not in ("constant", "cosine") or not float(ph["end_epoch"]) > prev:
                raise ValueError(f"config field '{where}': kind must be constant or cosine and end_epoch must "
                                 f"increase, got {ph!r}")
            prev = float(ph["end_epoch"])
        if any(m < 0 for m in self.schedule.milestones) or list(self.schedule.milestones) != sorted(
                self.schedule.milestones):
            raise ValueError(f"config field 'schedule.milestones' must be increasing epochs >= 0, "
                             f"got {self.schedule.milestones!r}")
        return self


# ------------------------------------------------------------------------------------------------ conversion
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` converted to the annotated type ``tp``; ValueError naming ``where`` when it cannot be."""
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_mapping(tp, value, where)
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.strip().lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{where}: expected a boolean, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                raise ValueError(f"{where}: expected a number, got {value!r}") from None
        else:
            raise ValueError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(out):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if value is None:
            return ""
        hint = " (quote it: YAML reads on/off/yes/no as booleans)" if isinstance(value, bool) else ""
        raise ValueError(f"{where}: expected a string, got {value!r}{hint}")
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else []
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return [v if item is Any else _coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return copy.deepcopy(dict(value))
    raise TypeError(f"{where}: unsupported config field type {tp!r}")  # pragma: no cover - a bug in this module


def _from_mapping(cls, data: Mapping, where: str):
    """``cls`` from a mapping; ``where`` is the dotted key path of the mapping ("" at the top)."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        if k not in names:
            key = f"{where}.{k}" if where else str(k)
            raise ValueError(f"unknown config key '{key}' ({cls.__name__} has: {', '.join(names)})")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()})


def config_from_dict(data: Mapping, source: str = "<dict>") -> TrainConfig:
    """A validated :class:`TrainConfig` from a nested mapping; errors name ``source`` and the key path."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: a training config must be a mapping at the top level, got {type(data).__name__}")
    try:
        return _from_mapping(TrainConfig, data, "").validate()
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def config_to_dict(cfg: TrainConfig) -> dict:
    """A plain nested dict (only str/int/float/bool/list/dict) of ``cfg``: YAML- and ``weights_only``-safe."""
    return dataclasses.asdict(cfg)


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (None: all defaults), apply ``key.path=value`` overrides, validate."""
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise FileNotFoundError(f"training config not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: not valid YAML: {e}") from None
    cfg = config_from_dict(data, source)
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """A copy of ``cfg`` with each ``"a.b.c=value"`` applied (value parsed as YAML, typed by the field)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ValueError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        obj: Any = cfg
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            if dataclasses.is_dataclass(obj):
                names = [f.name for f in dataclasses.fields(obj)]
                if name not in names:
                    where = ".".join(parts[: i + 1])
                    raise ValueError(f"--set {item!r}: unknown config key '{where}'; "
                                     f"{type(obj).__name__} has: {', '.join(names)}")
                if last:
                    tp = _hints(type(obj))[name]
                    if dataclasses.is_dataclass(tp):
                        raise ValueError(f"--set {item!r}: '{key}' is a section; set one of its fields")
                    setattr(obj, name, _coerce(value, tp, f"--set {key}"))
                else:
                    obj = getattr(obj, name)
            elif isinstance(obj, dict):  # free-form dict fields: any key, YAML-typed value
                if last:
                    obj[name] = value
                else:
                    obj = obj.setdefault(name, {})
                    if not isinstance(obj, dict):
                        raise ValueError(f"--set {item!r}: '{'.'.join(parts[: i + 1])}' is not a mapping")
            else:
                raise ValueError(f"--set {item!r}: '{'.'.join(parts[:i])}' is not a section")
    return cfg.validate()


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as YAML (atomically); :func:`load_config` reads it back to an equal config."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    os.replace(tmp, p)
    return p
