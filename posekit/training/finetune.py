"""Fine-tuning: load every fitting tensor of a checkpoint into a model whose head (or more) differs.

``model.init_from: PATH`` in a training config calls :func:`load_matching` right after the task builds the model
(and not on ``--resume``, which restores the run's own weights). Any checkpoint :func:`posekit.models.weights.
load_weights` reads is accepted: a posekit training checkpoint (its EMA weights when it has them), an official
MMPose / ViTPose checkpoint or a plain state_dict, in any key layout ``load_weights`` recognises (``module.``
prefixes, ...). Unlike ``load_weights``, loading is *partial*: a tensor is copied when its name exists in the model
and its shape is the same; everything else is reported:

* ``skipped``: checkpoint tensors not loaded, each with its reason (``filtered`` by ``init_keys``, ``excluded``
  by ``init_exclude``, ``not in the model``, ``shape (17, 256) in the checkpoint, (6, 256) in the model``);
* ``initialised``: model tensors that keep the task's initialisation (``missing from the checkpoint`` or one of
  the reasons above).

The trainer prints the summary and writes the whole report to ``out_dir/init_from.json``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

__all__ = ["load_matching", "format_report"]


def _state_of(obj, where: str) -> dict:
    from posekit.models.checkpoints import training_parts
    from posekit.models.weights import extract_state_dict

    state, _, cfg = training_parts(obj, use_ema=True)
    if cfg:  # a posekit training checkpoint: EMA (or raw) weights
        return dict(state)
    sd, _ = extract_state_dict(obj, where)
    return sd


def load_matching(model: nn.Module, source, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> dict:
    """Copy every tensor of ``source`` (a path or a loaded checkpoint) whose name and shape fit ``model``.

    Args:
        include: regular expressions (``re.search`` on the checkpoint key, after the layout mapping); when
            given, only matching keys are considered.
        exclude: regular expressions; matching keys are skipped.

    Returns:
        ``{"source", "layout", "loaded": [keys], "skipped": [{key, reason}], "initialised": [{key, reason}]}``.

    Raises:
        FileNotFoundError, ValueError (not a checkpoint / no state_dict), ValueError when nothing at all fits
        (a wrong file is an error, not a silent from-scratch run).
    """
    from posekit.models.weights import remap_keys

    where = "checkpoint"
    if isinstance(source, (str, Path)):
        from posekit.models.checkpoints import read_checkpoint

        where = str(source)
        try:
            source = read_checkpoint(source)
        except (FileNotFoundError, ValueError) as e:
            raise type(e)(f"model.init_from: {e}") from None
    state = _state_of(source, where)
    convert = getattr(model, "convert_official_state_dict", None)
    if convert is not None:
        state = convert(state)
    own = model.state_dict()
    mapped, layout = remap_keys(state, set(own))
    inc = [re.compile(p) for p in include]
    exc = [re.compile(p) for p in exclude]
    loaded, skipped, new_state = [], [], {}
    why_not: dict[str, str] = {}
    for k, v in mapped.items():
        if inc and not any(p.search(k) for p in inc):
            reason = "filtered (matches no model.init_keys pattern)"
        elif any(p.search(k) for p in exc):
            reason = "excluded (matches model.init_exclude)"
        elif k not in own:
            reason = "not in the model"
        elif tuple(v.shape) != tuple(own[k].shape):
            reason = f"shape {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} in the model"
        else:
            new_state[k] = v.to(dtype=own[k].dtype)
            loaded.append(k)
            continue
        skipped.append({"key": k, "reason": reason})
        why_not[k] = reason
    if not loaded:
        raise ValueError(f"model.init_from: no tensor of {where} fits the model (layout {layout!r}; e.g. "
                         f"{skipped[:3]}); is it a checkpoint of this family?")
    initialised = [{"key": k, "reason": why_not.get(k, "missing from the checkpoint")}
                   for k in own if k not in new_state]
    model.load_state_dict(new_state, strict=False)
    return {"source": where, "layout": layout, "loaded": loaded, "skipped": skipped, "initialised": initialised}


def format_report(report: dict, limit: int = 40) -> str:
    """A human-readable summary: counts, then each skipped and each re-initialised tensor with its reason."""
    lines = [f"init_from {report['source']} (key layout: {report['layout']}): loaded {len(report['loaded'])} "
             f"tensors, skipped {len(report['skipped'])}, {len(report['initialised'])} model tensors keep their "
             f"initialisation"]
    for title, items in (("skipped", report["skipped"]), ("re-initialised", report["initialised"])):
        for it in items[:limit]:
            lines.append(f"  {title}: {it['key']}: {it['reason']}")
        if len(items) > limit:
            lines.append(f"  ... {len(items) - limit} more {title} (see init_from.json)")
    return "\n".join(lines)
