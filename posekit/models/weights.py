"""``load_weights(model, source)``: load a checkpoint into a posekit model, whatever its layout, strictly.

Accepted sources:

* a path (``str`` / ``Path``) to a file saved with ``torch.save`` (read with ``weights_only=True``);
* an already loaded object:

  - a **posekit checkpoint**: ``{"state_dict": {...}, "preset": "<name>", ...}`` (``preset`` optional; when
    given it must equal ``model.preset``);
  - an **MMPose / OpenMMLab checkpoint**: ``{"state_dict": {...}, "meta": ...}`` with ``backbone.*``,
    ``neck.*``, ``head.*`` keys (``data_preprocessor.*`` entries are ignored);
  - a checkpoint whose weights are under ``"model"`` (``{"model": {...}, "optimizer": ...}``);
  - a **CMU flat state_dict** (``conv1_1.weight`` ... ``Mconv7_stage6_L2.bias``, as in ``body_pose_model.pth``);
  - any plain state_dict (``name -> tensor``).

Key layouts recognised on top of the model's own names: a ``module.`` prefix (DataParallel/DDP), a ``model.``
prefix, the ``mods.`` prefix of CMU ONNX initialisers, and pytorch-openpose's block prefixes (``model0.``,
``model1_1.``, ``model2_2.``, ...). The layout that matches the most model keys is used; loading is then strict:
any missing key, unexpected key or shape mismatch raises :class:`RuntimeError` listing them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

__all__ = ["load_weights", "extract_state_dict", "remap_keys", "WeightsError"]


class WeightsError(RuntimeError):
    """A checkpoint does not fit a model (missing / unexpected keys, shape mismatches)."""


_IGNORED_PREFIXES = ("data_preprocessor.",)
_PYTORCH_OPENPOSE_BLOCK = re.compile(r"^model\d+(_\d+)?\.")


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj, where: str = "checkpoint") -> tuple[dict, dict]:
    """``(state_dict, meta)`` from a loaded checkpoint object (see the module docstring for the layouts).

    Raises:
        ValueError: no state_dict can be found; the message names ``where`` and the top-level keys.
    """
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict()), {}
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected a checkpoint dict or a state_dict, got {type(obj).__name__}")
    for key in ("state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and (_is_tensor_dict(inner) or len(inner) == 0):
            meta = {k: v for k, v in obj.items() if k != key and not isinstance(v, (Mapping, torch.Tensor))}
            return dict(inner), meta
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors and len(tensors) == len(obj):
        return dict(obj), {}
    keys = sorted(str(k) for k in obj)[:12]
    raise ValueError(f"{where}: no state_dict found (no 'state_dict' or 'model' entry of tensors, and the top-level "
                     f"values are not all tensors); top-level keys: {keys}")


def _candidate_maps(model_keys: set[str]) -> list[tuple[str, Callable[[str], str]]]:
    def strip(prefix):
        return lambda k: k[len(prefix):] if k.startswith(prefix) else k

    return [
        ("as is", lambda k: k),
        ("'module.' prefix", strip("module.")),
        ("'model.' prefix", strip("model.")),
        ("'mods.' prefix (CMU ONNX)", strip("mods.")),
        ("pytorch-openpose blocks", lambda k: _PYTORCH_OPENPOSE_BLOCK.sub("", k)),
        ("'module.' + pytorch-openpose blocks", lambda k: _PYTORCH_OPENPOSE_BLOCK.sub("", strip("module.")(k))),
    ]


def remap_keys(state_dict: dict, model_keys: set[str]) -> tuple[dict, str]:
    """The state_dict renamed with the key layout that matches the most model keys."""
    sd = {k: v for k, v in state_dict.items() if not k.startswith(_IGNORED_PREFIXES)}
    best = (-1, sd, "as is")
    for label, fn in _candidate_maps(model_keys):
        mapped: dict = {}
        for k, v in sd.items():
            nk = fn(k)
            if nk in mapped:  # the map is not injective for this checkpoint: not this layout
                mapped = None
                break
            mapped[nk] = v
        if mapped is None:
            continue
        hits = len(model_keys.intersection(mapped))
        if hits > best[0]:
            best = (hits, mapped, label)
    return best[1], best[2]


def _fmt(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_weights(model: nn.Module, source, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load ``source`` into ``model`` strictly (see the module docstring); returns ``model``.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        ValueError: the file or object holds no recognisable state_dict, or a posekit checkpoint's ``preset``
            differs from ``model.preset``.
        WeightsError (a RuntimeError): missing keys, unexpected keys or shape mismatches, all listed.
    """
    where = "checkpoint"
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
        where = str(path)
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # unpicklable objects, not a torch file, truncated file
            raise ValueError(f"{path}: cannot read as a torch checkpoint ({type(e).__name__}: {e})") from e
    else:
        obj = source
    state_dict, meta = extract_state_dict(obj, where)
    preset = meta.get("preset")
    model_preset = getattr(model, "preset", None)
    if isinstance(preset, str) and model_preset and preset != model_preset:
        raise ValueError(f"{where}: checkpoint is for preset {preset!r}, the model is {model_preset!r}")

    convert = getattr(model, "convert_official_state_dict", None)
    if convert is not None:  # a family's official key layout that differs from posekit's (e.g. ViTPose's repo)
        state_dict = convert(state_dict)
    own = model.state_dict()
    mapped, layout = remap_keys(state_dict, set(own))
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(mapped[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own).intersection(mapped) if tuple(mapped[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        lines = [f"{where} does not fit {type(model).__name__}"
                 + (f" (preset {model_preset!r})" if model_preset else "") + f" [key layout tried: {layout}]:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_fmt(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {_fmt(shapes)}")
        raise WeightsError("\n".join(lines))
    model.load_state_dict(mapped, strict=True)
    return model
