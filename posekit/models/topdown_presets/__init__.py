"""Top-down presets: one name space for every top-down model posekit builds.

======================  ==============================================================================
:mod:`.single_stage`    SimpleBaseline, ViTPose, RTMPose (+ ``rtmpose-nano`` for CPU runs); MMPose 1.x configs
:mod:`.multi_stage`     CPM, Stacked Hourglass, CPN: a head that returns every stage; MMPose 0.x configs
======================  ==============================================================================

Both build a :class:`posekit.models.topdown.TopDownModel` (multi-stage: its subclass
:class:`~.multi_stage.StageTopDownModel`), so everything after the builder is shared: :data:`TOPDOWN_PRESETS` lists
every official configuration, :func:`build_topdown` builds one and loads its weights, :func:`load_topdown_weights`
loads an official MMPose (1.x or 0.x) / ViTPose checkpoint strictly, and :func:`build_topdown_from_mmpose_meta`
builds a model from an MMPose config of either kind.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

from posekit.models.topdown import TopDownModel
from posekit.models.topdown_presets.multi_stage import (MULTI_STAGE_PRESETS, STAGE_CONFIGS, CPMConfig, CPNConfig,
                                                        HourglassConfig, StageTopDownModel, build_stage_model,
                                                        cpn_global_codecs, stage_config_from_mmpose)
from posekit.models.topdown_presets.single_stage import (SINGLE_STAGE_PRESETS, TOPDOWN_CPU_PRESETS, TOPDOWN_URLS,
                                                         build_rtmpose, build_rtmpose_nano, build_simplebaseline,
                                                         build_vitpose, topdown_from_mmpose_config)
from posekit.models.weights import load_weights

__all__ = [
    "TOPDOWN_PRESETS", "TOPDOWN_CPU_PRESETS", "TOPDOWN_URLS", "SINGLE_STAGE_PRESETS", "MULTI_STAGE_PRESETS",
    "STAGE_CONFIGS", "CPMConfig", "HourglassConfig", "CPNConfig", "StageTopDownModel", "build_topdown",
    "build_simplebaseline", "build_vitpose", "build_rtmpose", "build_rtmpose_nano", "build_stage_model",
    "cpn_global_codecs", "topdown_from_mmpose_config", "stage_config_from_mmpose", "build_topdown_from_mmpose_meta",
    "load_topdown_weights", "topdown_family", "heatmap_stride",
]

#: every official top-down configuration: preset name -> builder(**overrides) -> TopDownModel.
TOPDOWN_PRESETS: Dict[str, Callable[..., TopDownModel]] = {**SINGLE_STAGE_PRESETS, **MULTI_STAGE_PRESETS}


def load_topdown_weights(model: TopDownModel, source) -> TopDownModel:
    """Load a checkpoint (path or loaded dict) strictly into any top-down model: MMPose 1.x keys, MMPose 0.x
    ``keypoint_head.*`` keys (renamed to ``head.*``), or the official ViTPose repository's layout; the same as
    :func:`posekit.load_weights`. Raises FileNotFoundError / ValueError / ``WeightsError`` naming the keys."""
    return load_weights(model, source)


def build_topdown(name: str, weights=None, **overrides) -> TopDownModel:
    """Preset ``name`` of :data:`TOPDOWN_PRESETS` or :data:`TOPDOWN_CPU_PRESETS` with ``overrides``; ``weights``
    (path or loaded checkpoint) loaded strictly if given; in eval mode."""
    builders = {**TOPDOWN_PRESETS, **TOPDOWN_CPU_PRESETS}
    if name not in builders:
        raise KeyError(f"unknown top-down preset {name!r}; available: {sorted(builders)}")
    model = builders[name](**overrides)
    if weights is not None:
        load_topdown_weights(model, weights)
    return model.eval()


def build_topdown_from_mmpose_meta(meta: Mapping[str, Any]) -> TopDownModel:
    """A model, in eval mode, from a reference ``meta.json`` dict: its ``model_cfg`` (an MMPose
    ``TopdownPoseEstimator`` config) and, for CPM / Hourglass, the ``constructor_defaults_not_in_cfg`` the config
    leaves out. Unsupported variants raise ValueError naming the field."""
    if "model_cfg" not in meta:
        raise KeyError("meta has no 'model_cfg' field")
    cfg = meta["model_cfg"]
    backbone = str((cfg.get("backbone") or {}).get("type", ""))
    if backbone.startswith(("CPM", "HourglassNet")):
        config = stage_config_from_mmpose(cfg, meta.get("constructor_defaults_not_in_cfg"))
        return build_stage_model(config).eval()
    return topdown_from_mmpose_config(cfg).eval()


def topdown_family(name: str) -> str:
    """The family of a top-down preset name: ``simplebaseline``, ``vitpose``, ``rtmpose``, ``cpm``, ``hourglass`` or
    ``cpn`` (ValueError otherwise)."""
    for prefix in ("simplebaseline", "vitpose", "rtmpose", "cpm", "hourglass", "cpn"):
        if name.startswith(prefix):
            return prefix
    raise ValueError(f"model.name {name!r} is not a top-down preset (simplebaseline-*, vitpose-*, rtmpose-*, cpm, "
                     f"hourglass-*, cpn-*)")


def heatmap_stride(name: str, overrides: Mapping[str, Any]) -> int | None:
    """Input pixels per heatmap cell of preset ``name`` with ``overrides`` (None for SimCC models)."""
    fam = topdown_family(name)
    if fam == "rtmpose":
        return None
    if fam == "cpm":
        return 8
    if fam in ("hourglass", "cpn"):
        return 4
    if fam == "simplebaseline":
        n = len(overrides.get("deconv_out_channels", (256, 256, 256)))
        return 32 // 2 ** n
    if overrides.get("decoder", "simple" if name.endswith("-simple") else "classic") == "simple":
        return 4
    return 16 // 2 ** len(overrides.get("deconv_out_channels", (256, 256)))
