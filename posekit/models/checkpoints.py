"""A named preset with the weights of a checkpoint file, for every family.

One entry point, :func:`load_preset`, reads any checkpoint posekit meets and builds the preset it belongs to:

* a posekit training checkpoint (:mod:`posekit.training`: ``{"model", "ema", "config", ...}``): its EMA weights
  when it has them and ``use_ema``, and the model it was trained as unless ``overrides`` is given: the saved
  ``model.overrides`` and, for top-down and RTMO models, the training input size (``data.input_size``; top-down
  heatmap models with the heatmap size the task derives from it); a checkpoint trained as another preset is an
  error;
* an official checkpoint (MMPose 1.x / 0.x, the official ViTPose repository, CMU's OpenPose) or a plain state_dict,
  loaded strictly by the family's loader.

The families differ only in how the preset is rebuilt: OpenPose presets take their overrides as given, RTMO also
reads the input size and the keypoint count from the checkpoint, top-down presets (single- and multi-stage) load
through :func:`posekit.models.weights.load_weights`. Every file is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from posekit.data.io import TORCH_SUFFIXES, is_torch_weights  # torch-free, so the ONNX path can ask too

__all__ = ["TORCH_SUFFIXES", "is_torch_weights", "read_checkpoint", "training_parts", "check_openpose_model",
           "model_family", "preset_family", "load_preset", "load_openpose_checkpoint", "load_rtmo_checkpoint",
           "trained_overrides", "checkpoint_settings"]

_OPENPOSE_ATTRS = ("codec", "num_pafs", "num_heatmaps", "mean", "std", "stride", "schema")



def read_checkpoint(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; FileNotFoundError for a missing file, ValueError naming
    the file for one that is not a PyTorch checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise ValueError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {e})") from None


def training_parts(ckpt: Any, use_ema: bool = True) -> tuple[Any, dict, dict]:
    """``(weights, saved model overrides, config)`` of a posekit training checkpoint (the EMA weights when present
    and ``use_ema``); ``(ckpt, {}, {})`` for anything else."""
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("model"), Mapping) and isinstance(ckpt.get("config"),
                                                                                           Mapping):
        cfg = dict(ckpt["config"])
        m = cfg.get("model") or {}
        over = dict(m.get("overrides") or {}) if isinstance(m, Mapping) else {}
        ema = ckpt.get("ema")
        state = ema["module"] if (use_ema and isinstance(ema, Mapping) and isinstance(ema.get("module"), Mapping)) \
            else ckpt["model"]
        return state, over, cfg
    return ckpt, {}, {}


def _check_trained_as(cfg: Mapping, preset: str, path: Path) -> None:
    m = cfg.get("model")
    name = m.get("name") if isinstance(m, Mapping) else None
    if name and name != preset:
        raise ValueError(f"{path}: checkpoint was trained as model {name!r}, not {preset!r}")


def _tuples(over: Mapping[str, Any]) -> dict:
    """YAML gives lists where builders take tuples."""
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in over.items()}


def check_openpose_model(model, what: str = "model") -> None:
    """ValueError naming ``what`` and the first missing attribute unless ``model`` is a posekit OpenPose model."""
    for attr in _OPENPOSE_ATTRS:
        if not hasattr(model, attr):
            raise ValueError(f"{what} is a {type(model).__name__}, not a posekit OpenPose model (no {attr!r})")


def model_family(model) -> str:
    """``"topdown"``, ``"rtmo"`` or ``"openpose"`` for a posekit model (ValueError otherwise)."""
    from posekit.models.topdown import TopDownModel

    if isinstance(model, TopDownModel):
        return "topdown"
    if hasattr(model, "config") and hasattr(getattr(model, "head", None), "dcc"):
        return "rtmo"
    if all(hasattr(model, a) for a in _OPENPOSE_ATTRS):
        return "openpose"
    raise ValueError(f"{type(model).__name__} is not a posekit top-down, RTMO or OpenPose model")


def preset_family(preset: str) -> str:
    """The family of a preset name (``"topdown"``, ``"rtmo"``, ``"openpose"``); KeyError for an unknown one."""
    from posekit.models.presets import PRESETS, list_models
    from posekit.models.rtmo import RTMO_PRESETS
    from posekit.models.topdown_presets import TOPDOWN_CPU_PRESETS, TOPDOWN_PRESETS

    if preset not in PRESETS:
        raise KeyError(f"unknown model preset {preset!r} (no PyTorch preset of that name); known: {list_models()}")
    if preset in RTMO_PRESETS:
        return "rtmo"
    if preset in TOPDOWN_PRESETS or preset in TOPDOWN_CPU_PRESETS:
        return "topdown"
    if preset.startswith("openpose"):
        return "openpose"
    raise KeyError(f"preset {preset!r} is not a pose model with a runtime path (top-down, RTMO, OpenPose)")


def load_openpose_checkpoint(preset: str, weights: str | Path, overrides: Mapping[str, Any] | None = None,
                             use_ema: bool = True, checkpoint: Any = None) -> nn.Module:
    """An OpenPose preset with the weights of ``weights``, in eval mode.

    ``weights``: a posekit training checkpoint, a dict with ``"state_dict"``, or a plain state_dict (``module.``
    prefixes of DDP are dropped). The load is strict: a checkpoint of another architecture is a ValueError naming
    the keys or the first mis-shaped tensor.
    """
    from posekit.models.presets import build_model

    path = Path(weights)
    ckpt = read_checkpoint(path) if checkpoint is None else checkpoint
    state, saved, cfg = training_parts(ckpt, use_ema)
    _check_trained_as(cfg, preset, path)
    if state is ckpt and isinstance(ckpt, Mapping) and "state_dict" in ckpt:
        state = ckpt["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state_dict or a checkpoint dict, got {type(ckpt).__name__}")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    model = build_model(preset, **(dict(overrides) if overrides is not None else saved))
    check_openpose_model(model, f"preset {preset!r}")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        lines = str(e).splitlines()
        first = lines[1].strip() if len(lines) > 1 else str(e)
        raise ValueError(f"{path}: weights do not fit preset {preset!r} ({first}; wrong preset or model "
                         f"overrides?)") from None
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit preset {preset!r}: missing {list(missing)[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected {list(unexpected)[:5]}"
                         f"{'...' if len(unexpected) > 5 else ''} (wrong preset or model overrides?)")
    return model.eval()


def load_rtmo_checkpoint(preset: str, weights: str | Path, overrides: Optional[Mapping[str, Any]] = None,
                         use_ema: bool = True, checkpoint: Any = None) -> nn.Module:
    """An RTMO preset with the weights of ``weights``, in eval mode.

    ``weights``: a posekit training checkpoint (its saved overrides and ``data.input_size`` unless ``overrides`` is
    given) or anything :func:`~posekit.models.rtmo.load_mmpose_rtmo_checkpoint` reads (official ``.pth``, plain
    state_dict). The keypoint count comes from the weights when no override sets it. The load is strict.
    """
    from posekit.models.rtmo import build_rtmo, load_mmpose_rtmo_checkpoint

    path = Path(weights)
    ckpt = read_checkpoint(path) if checkpoint is None else checkpoint
    state, saved, cfg = training_parts(ckpt, use_ema)
    _check_trained_as(cfg, preset, path)
    if overrides is None:
        over = dict(saved)
        size = (cfg.get("data") or {}).get("input_size")
        if size:
            over.setdefault("input_size", tuple(int(v) for v in size))
    else:
        over = dict(overrides)
    over = _tuples(over)
    if "num_keypoints" not in over and isinstance(state, Mapping):
        sd = state.get("state_dict", state)
        key = "head.head_module.out_kpt_vis.0.weight"
        if key in sd:
            over["num_keypoints"] = int(sd[key].shape[0])
    model = build_rtmo(preset, **over)
    load_mmpose_rtmo_checkpoint(model, state)
    return model.eval()


def load_preset(preset: str, weights: str | Path, overrides: Optional[Mapping[str, Any]] = None,
                use_ema: bool = True, checkpoint: Any = None) -> nn.Module:
    """Preset ``preset`` with the weights of ``weights`` (a ``.pth`` / ``.pt`` file), in eval mode, through its
    family's loader (see the module docstring). ``checkpoint``: the file's content when the caller has already
    read it (:func:`read_checkpoint`), so that it is not read twice; ``weights`` then only names it in messages.

    Raises:
        FileNotFoundError, KeyError (unknown preset), ValueError / RuntimeError (weights that do not fit).
    """
    from posekit.models.presets import build_model
    from posekit.models.weights import load_weights

    family = preset_family(preset)
    if family == "openpose":
        return load_openpose_checkpoint(preset, weights, overrides, use_ema=use_ema, checkpoint=checkpoint)
    if family == "rtmo":
        return load_rtmo_checkpoint(preset, weights, overrides, use_ema=use_ema, checkpoint=checkpoint)
    path = Path(weights)
    ckpt = read_checkpoint(path) if checkpoint is None else checkpoint
    state, saved, cfg = training_parts(ckpt, use_ema)
    _check_trained_as(cfg, preset, path)
    over = _tuples(overrides) if overrides is not None else _topdown_trained_overrides(preset, _tuples(saved), cfg)
    over = {**_trained_schema(preset, ckpt), **over}
    model = build_model(preset, **over)
    load_weights(model, state)
    return model.eval()


def _trained_schema(preset: str, ckpt: Any) -> dict:
    """``{"schema": KeypointSchema}`` (and ``num_keypoints`` for the multi-stage families) when a top-down
    training checkpoint saved the keypoint schema it was trained for (a custom schema: ``data.schema``); else {}."""
    from posekit.models.topdown_presets import topdown_family
    from posekit.schema import KeypointSchema

    d = ckpt.get("schema") if isinstance(ckpt, Mapping) else None
    if not isinstance(d, Mapping):
        return {}
    schema = KeypointSchema.from_dict(d, source="checkpoint schema")
    out: dict = {"schema": schema}
    if topdown_family(preset) in ("cpm", "hourglass", "cpn"):
        out["num_keypoints"] = schema.num_keypoints
    return out


def _topdown_trained_overrides(preset: str, saved: dict, cfg: Mapping) -> dict:
    """The overrides a top-down training run built its model with: the saved ``model.overrides`` plus, as the
    top-down task does (:func:`posekit.training.tasks.topdown.build_topdown_for_training`), ``input_size`` from
    ``data.input_size`` and, for heatmap models, ``heatmap_size`` = ceil(input / the preset's stride), unless the
    overrides set them."""
    import math

    from posekit.models.topdown_presets import heatmap_stride

    data = cfg.get("data")
    size = data.get("input_size") if isinstance(data, Mapping) else None
    if not size or "input_size" in saved:
        return saved
    w, h = (int(v) for v in size)
    over = {**saved, "input_size": (w, h)}
    stride = heatmap_stride(preset, saved)
    if stride is not None and "heatmap_size" not in over:
        over["heatmap_size"] = (math.ceil(w / stride), math.ceil(h / stride))
    return over


def trained_overrides(preset: str, weights: str | Path, use_ema: bool = True, checkpoint: Any = None) -> dict:
    """The builder overrides :func:`load_preset` rebuilds a top-down training checkpoint with (its saved
    ``model.overrides`` plus the training input and heatmap sizes); the saved overrides for other checkpoints.
    ``checkpoint``: the already read content of ``weights``, as for :func:`load_preset`."""
    _, saved, cfg = training_parts(read_checkpoint(weights) if checkpoint is None else checkpoint, use_ema)
    saved = _tuples(saved)
    return _topdown_trained_overrides(preset, saved, cfg) if preset_family(preset) == "topdown" else saved


def checkpoint_settings(weights: Any) -> dict:
    """What a posekit training checkpoint says about running the model: ``input_size`` (``data.input_size``), the
    keypoint ``schema`` (a dict) when the task saved it and, for the ``openpose`` task, the association
    ``paf_params`` its evaluation used. Empty for other files.
    ``weights``: the file, or its content already read (:func:`read_checkpoint`)."""
    from posekit.association.params import DEFAULT_EVAL_PARAMS

    if isinstance(weights, (str, os.PathLike)):
        try:
            ckpt = torch.load(Path(weights), map_location="cpu", weights_only=True)
        except Exception:  # not a training checkpoint; the loader reports real problems
            return {}
    else:
        ckpt = weights
    cfg = ckpt.get("config") if isinstance(ckpt, Mapping) else None
    out: dict = {}
    if isinstance(cfg, Mapping):
        size = (cfg.get("data") or {}).get("input_size")
        if size:
            out["input_size"] = tuple(int(v) for v in size)
        if isinstance(ckpt.get("schema"), Mapping):
            out["schema"] = dict(ckpt["schema"])
        if cfg.get("task") == "openpose":
            out["paf_params"] = {**DEFAULT_EVAL_PARAMS,
                                 **dict((cfg.get("task_options") or {}).get("paf_params") or {})}
    return out
