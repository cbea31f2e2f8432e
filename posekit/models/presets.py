"""Named model configurations: ``build_model(name, **overrides)``.

:data:`PRESETS` is a plain dict ``name -> builder``; a builder is a function whose keyword arguments are the
preset's tunable fields and which returns the ``nn.Module``. Model families add their presets to this dict.

========================  ==========================================================================
``openpose-cmu-coco``     CMU OpenPose COCO body model (CVPR'17), CMU layer names (:mod:`.openpose`)
``openpose-tpami``        OpenPose TPAMI'19: PAF stages then confidence stages
``openpose-light``        small MobileNetV2 trunk + two thin stages (trains on a CPU)
``rtmo-t|s|m|l``          RTMO one-stage model, official sizes (:mod:`.rtmo`)
``simplebaseline-r18|r50`` top-down: ResNet + three deconvolutions (:mod:`.topdown_presets`)
``vitpose-s|b|l|h``       top-down: plain ViT + classic decoder (``-simple``: the simple decoder)
``rtmpose-t|s|m|l``       top-down: CSPNeXt + SimCC head with GAU
``cpm``                   top-down multi-stage: Convolutional Pose Machines (:mod:`.topdown_presets.multi_stage`)
``hourglass-52``          top-down multi-stage: MMPose's Hourglass52
``cpn-r50``, ``cpn-tiny`` top-down: CPN (GlobalNet + RefineNet) on ResNet
``rtmpose-nano``          a reduced RTMPose for CPU training runs (no official weights)
========================  ==========================================================================
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch.nn as nn

from posekit.models.openpose import openpose_cmu_coco, openpose_light, openpose_tpami
from posekit.models.rtmo import RTMO_PRESETS, build_rtmo
from posekit.models.topdown_presets import TOPDOWN_CPU_PRESETS, TOPDOWN_PRESETS

__all__ = ["PRESETS", "build_model", "list_models"]

#: preset name -> builder function (keyword arguments = overridable fields).
PRESETS: dict[str, Callable[..., nn.Module]] = {
    "openpose-cmu-coco": openpose_cmu_coco,
    "openpose-tpami": openpose_tpami,
    "openpose-light": openpose_light,
}


def _rtmo_builder(name: str) -> Callable[..., nn.Module]:
    def builder(**overrides) -> nn.Module:
        return build_rtmo(name, **overrides)

    builder.__name__ = builder.__qualname__ = name.replace("-", "_")
    builder.__doc__ = f"RTMO preset {name!r} (overrides: any RTMOConfig field)."
    return builder


PRESETS.update({name: _rtmo_builder(name) for name in RTMO_PRESETS})
PRESETS.update(TOPDOWN_PRESETS)
PRESETS.update(TOPDOWN_CPU_PRESETS)  # rtmpose-nano: a trained CPU model loads, exports and runs by its name


def list_models() -> list[str]:
    """The preset names, sorted."""
    return sorted(PRESETS)


def build_model(name: str, **overrides) -> nn.Module:
    """The ``nn.Module`` of preset ``name`` (random initialisation), with some builder arguments overridden.

    Raises:
        KeyError: unknown preset (the message lists the known ones).
        ValueError: an override the preset does not take (the message lists the ones it takes).
    """
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {list_models()}")
    builder = PRESETS[name]
    params = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        bad = sorted(set(overrides) - set(params))
        if bad:
            raise ValueError(f"model preset {name!r} does not take {bad}; it takes {sorted(params)}")
    model = builder(**overrides)
    try:
        model.preset = name
    except AttributeError:  # pragma: no cover - a module that forbids new attributes
        pass
    return model
