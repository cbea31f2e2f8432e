"""``--stages``: a multi-stage model (CPM, Stacked Hourglass, OpenPose CMU / light) stopped after stage t.

The model stopped after stage t is the same preset built with t stages and the weights of the first t stages of
the full model (every parameter of the shorter model exists, with the same name and shape, in the full one; the
stages are sequential, so its output is the full model's stage-t output). Each one runs through the ordinary
pipeline (PyTorch backend), so its accuracy and its time are those of a deployed model with t stages.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

__all__ = ["STAGE_FIELDS", "stage_field", "full_model", "truncated_state", "stage_specs"]

#: preset -> the builder argument that counts its stages.
STAGE_FIELDS = {"cpm": "num_stages", "openpose-cmu-coco": "num_stages", "openpose-light": "num_stages"}


def stage_field(preset: str) -> str:
    """The override that sets the number of stages of ``preset`` (ValueError for a model without stages)."""
    if preset in STAGE_FIELDS:
        return STAGE_FIELDS[preset]
    if preset.startswith("hourglass"):
        return "num_stacks"
    if preset == "openpose-tpami":
        raise ValueError("openpose-tpami: --stages is not supported (its PAF stages give no confidence maps, so it "
                         "cannot stop before its last PAF stage); use openpose-cmu-coco or openpose-light")
    raise ValueError(f"--stages needs a multi-stage preset (cpm, hourglass-*, openpose-cmu-coco, openpose-light), "
                     f"got {preset!r}")


def full_model(spec, work_dir: str | Path):
    """``(model, overrides, input_size)`` of a PyTorch multi-stage pipeline (``random`` or ``.pth``/``.pt``)."""
    from posekit.compare.build import write_random_checkpoint
    from posekit.models.checkpoints import (checkpoint_settings, is_torch_weights, load_preset, read_checkpoint,
                                            trained_overrides)

    stage_field(spec.model)
    if spec.random_weights:
        path = write_random_checkpoint(spec.model, spec.overrides, Path(work_dir) / "weights" / f"{spec.name}.pt",
                                       spec.seed, spec.input_size)
    elif is_torch_weights(spec.weights):
        path = Path(spec.weights)
    else:
        raise ValueError(f"pipeline '{spec.name}': --stages needs PyTorch weights (.pth / .pt or random) of a "
                         f"multi-stage preset, got weights={spec.weights!r}")
    ckpt = read_checkpoint(path)  # once, for the model, its overrides and its input size
    overrides = trained_overrides(spec.model, path, checkpoint=ckpt)  # top-down: + the trained input / heatmap size
    size = spec.input_size or checkpoint_settings(ckpt).get("input_size")
    return load_preset(spec.model, path, checkpoint=ckpt), overrides, size


def truncated_state(preset: str, overrides: dict, full_state: dict, t: int) -> dict:
    """The state dict of ``preset`` with ``t`` stages taken from ``full_state`` (ValueError naming the first
    parameter that is missing or has another shape)."""
    from posekit.models.checkpoints import _tuples
    from posekit.models.presets import build_model

    key = stage_field(preset)
    small = build_model(preset, **_tuples({**overrides, key: t}))
    out = {}
    for k, v in small.state_dict().items():
        if k not in full_state:
            raise ValueError(f"{preset} with {key}={t}: parameter {k!r} has no counterpart in the full model")
        if tuple(full_state[k].shape) != tuple(v.shape):
            raise ValueError(f"{preset} with {key}={t}: parameter {k!r} is {tuple(v.shape)} in the shorter model, "
                             f"{tuple(full_state[k].shape)} in the full one")
        out[k] = full_state[k].clone()
    return out


def stage_specs(spec, work_dir: str | Path) -> list[tuple[int, object]]:
    """``[(t, PipelineSpec of the model stopped after stage t)]`` for t = 1 .. the model's stage count; each
    stopped model is written as a posekit checkpoint under ``work_dir/weights/``."""
    from posekit.compare.build import write_random_checkpoint

    model, overrides, size = full_model(spec, work_dir)
    key = stage_field(spec.model)
    total = _count_stages(model, spec.model, overrides)
    state = model.state_dict()
    out = []
    for t in range(1, total + 1):
        over = {**overrides, key: t}
        path = write_random_checkpoint(spec.model, over, Path(work_dir) / "weights" / f"{spec.name}.stage{t}.pt",
                                       state_dict=truncated_state(spec.model, overrides, state, t), input_size=size)
        out.append((t, dataclasses.replace(spec, name=f"{spec.name}.stage{t}", weights=str(path), overrides={},
                                           input_size=None, seed=0, stages=False)))
    return out


def _count_stages(model, preset: str, overrides: dict) -> int:
    key = stage_field(preset)
    if key in overrides:
        return int(overrides[key])
    import inspect

    from posekit.models.presets import PRESETS

    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, key):
        return int(getattr(cfg, key))
    head = getattr(model, "head", None)
    for obj in (head, getattr(head, "head", None)):
        if obj is not None and hasattr(obj, "num_stages"):
            return int(obj.num_stages)
    p = inspect.signature(PRESETS[preset]).parameters.get(key)
    if p is not None and p.default is not inspect.Parameter.empty:
        return int(p.default)
    raise ValueError(f"cannot tell how many stages the {preset} model has; give overrides: {{{key}: N}}")
