"""Multi-stage top-down models: Convolutional Pose Machines, Stacked Hourglass and CPN.

Each preset is a frozen config dataclass in :data:`STAGE_CONFIGS`; :func:`build_stage_model` turns a preset
name (or a config) into a :class:`StageTopDownModel` -- a :class:`posekit.models.topdown.TopDownModel` whose
head returns every stage:

==================  ===================================================================================
``cpm``             CPM, 6 stages, 256x192 -> 32x24 (MMPose ``td-hm_cpm_8xb64-210e_coco-256x192``)
``hourglass-52``    Hourglass-52 (1 stack), 256x256 -> 64x64 (MMPose ``td-hm_hourglass52_8xb32-210e_coco``)
``cpn-r50``         CPN on ResNet-50, 256x192 -> 64x48 (paper setting; no MMPose checkpoint exists)
``cpn-tiny``        a narrow CPN (ResNet-18 layout, 16 base channels, 128x96) for CPU training runs
==================  ===================================================================================

Forward output (``model(x)``, ``x`` normalised RGB crops ``(B, 3, H, W)``): ``"backbone"`` (backbone
outputs), ``"heatmaps"`` (the last stage, used by decoding and the flip test), ``"stage_heatmaps"`` (every
stage / stack, for :func:`posekit.losses.stage.stage_l2_loss`) and, for CPN, ``"global_heatmaps"`` (GlobalNet
levels, deepest first; the RefineNet output is ``"heatmaps"``). ``model.decode(raw)`` gives keypoints in
model-input pixels (MSRA heatmap decoding of the last stage).

Official MMPose checkpoints (``url``) load strictly with :func:`posekit.models.topdown_presets.load_topdown_weights`
(MMPose 0.x ``keypoint_head.*`` keys are renamed to ``head.*`` as MMPose 1.x does).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch.nn as nn

from posekit.codecs.heatmap import HeatmapCodec, heatmap_codec_from_mmpose
from posekit.models.backbones.cpm import CPM, CPM_MIDDLE_CHANNELS, CPM_STEM_CHANNELS
from posekit.models.backbones.hourglass import HourglassNet
from posekit.models.backbones.resnet import ResNet
from posekit.models.cpn import CPNHead
from posekit.models.heads.cpm import CPMHead
from posekit.models.topdown import TopDownModel
from posekit.schema import get_schema

__all__ = [
    "CPMConfig", "HourglassConfig", "CPNConfig", "STAGE_CONFIGS", "StageTopDownModel",
    "MULTI_STAGE_PRESETS", "build_stage_model", "stage_config_from_mmpose", "cpn_global_codecs",
]

_MMPOSE = "https://download.openmmlab.com/mmpose/top_down/"


class _Replace:
    def replace(self, **overrides: Any):
        """A copy with some fields changed; unknown names raise ValueError naming the valid ones."""
        names = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(overrides) - names)
        if bad:
            raise ValueError(f"unknown {type(self).__name__} field(s) {bad}; valid fields: {sorted(names)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CPMConfig(_Replace):
    """CPM (:class:`posekit.models.backbones.cpm.CPM` + a parameter-free :class:`CPMHead`).

    ``background=True`` predicts ``K + 1`` belief maps (the paper's background map; train with a
    ``HeatmapCodec(background=True)`` target); official weights have ``K`` maps. ``schema`` gives the flip
    pairs of the flip test (None: no flip test); ``input_size`` / ``heatmap_size`` are ``(W, H)``.
    """

    num_keypoints: int = 17
    schema: Optional[str] = "coco17"
    num_stages: int = 6
    feat_channels: int = 128
    middle_channels: int = 32
    stem_channels: Tuple[int, ...] = CPM_STEM_CHANNELS
    middle_widths: Tuple[int, ...] = CPM_MIDDLE_CHANNELS
    background: bool = False
    input_size: Tuple[int, int] = (192, 256)
    heatmap_size: Tuple[int, int] = (24, 32)
    sigma: float = 2.0
    shift_heatmap: bool = True
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    url: Optional[str] = None


@dataclass(frozen=True)
class HourglassConfig(_Replace):
    """Stacked Hourglass (:class:`posekit.models.backbones.hourglass.HourglassNet` + :class:`CPMHead` with a
    1x1 final conv per stack). ``down="maxpool"`` switches to the paper's max-pool down path (not loadable
    from MMPose weights)."""

    num_keypoints: int = 17
    schema: Optional[str] = "coco17"
    downsample_times: int = 5
    num_stacks: int = 1
    stage_channels: Tuple[int, ...] = (256, 256, 384, 384, 384, 512)
    stage_blocks: Tuple[int, ...] = (2, 2, 2, 2, 2, 4)
    feat_channel: int = 256
    stem_channels: Tuple[int, int] = (128, 256)
    down: str = "conv"
    input_size: Tuple[int, int] = (256, 256)
    heatmap_size: Tuple[int, int] = (64, 64)
    sigma: float = 2.0
    shift_heatmap: bool = True
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    url: Optional[str] = None


@dataclass(frozen=True)
class CPNConfig(_Replace):
    """CPN: ResNet (``depth``, ``stem_channels``, ``base_channels``) -> GlobalNet (``channels`` wide) ->
    RefineNet (``refine_blocks`` bottlenecks of width ``mid_channels`` per level, deepest first).

    ``sigma`` is the Gaussian of the RefineNet target; ``global_sigmas`` (one per level, deepest first) the
    GlobalNet targets (None: ``sigma`` for every level). ``topk``: keypoints kept by OHKM.
    """

    num_keypoints: int = 17
    schema: Optional[str] = "coco17"
    depth: int = 50
    stem_channels: int = 64
    base_channels: int = 64
    channels: int = 256
    mid_channels: int = 128
    refine_blocks: Tuple[int, ...] = (3, 2, 1, 0)
    input_size: Tuple[int, int] = (192, 256)
    heatmap_size: Tuple[int, int] = (48, 64)
    sigma: float = 2.0
    global_sigmas: Optional[Tuple[float, ...]] = None
    topk: int = 8
    shift_heatmap: bool = True
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    url: Optional[str] = None


StageConfig = Union[CPMConfig, HourglassConfig, CPNConfig]

#: Official configurations (MMPose configs/body_2d_keypoint/topdown_heatmap/coco/ and the CPN paper).
STAGE_CONFIGS: Dict[str, StageConfig] = {
    "cpm": CPMConfig(url=_MMPOSE + "cpm/cpm_coco_256x192-aa4ba095_20200817.pth"),
    "hourglass-52": HourglassConfig(url=_MMPOSE + "hourglass/hourglass52_coco_256x256-4ec713ba_20200709.pth"),
    "cpn-r50": CPNConfig(),
    "cpn-tiny": CPNConfig(depth=18, stem_channels=16, base_channels=16, channels=32, mid_channels=16,
                          input_size=(96, 128), heatmap_size=(24, 32), sigma=1.0, global_sigmas=(1.75, 1.5, 1.25, 1.0),
                          topk=8),
}


class StageTopDownModel(TopDownModel):
    """A :class:`TopDownModel` whose head returns a dict (``heatmaps`` = last stage, ``stage_heatmaps``, ...);
    every entry is copied into the forward output. ``config`` holds the preset config."""

    config: Optional[StageConfig] = None


def _flip_index(cfg: StageConfig, channels: int) -> Optional[List[int]]:
    if cfg.schema is None:
        return None
    schema = get_schema(cfg.schema)
    if schema.num_keypoints != cfg.num_keypoints:
        raise ValueError(f"schema {cfg.schema!r} has {schema.num_keypoints} keypoints, the config "
                         f"num_keypoints = {cfg.num_keypoints}")
    fi = [int(i) for i in schema.flip_index]
    return fi + list(range(len(fi), channels))  # a background map flips onto itself


def _codec(cfg: StageConfig, background: bool = False) -> HeatmapCodec:
    return HeatmapCodec(input_size=tuple(cfg.input_size), heatmap_size=tuple(cfg.heatmap_size),
                        sigma=float(cfg.sigma), kind="msra", background=background)


def _wrap(cfg: StageConfig, backbone: nn.Module, head: nn.Module, codec: HeatmapCodec, channels: int,
          preset: Optional[str]) -> StageTopDownModel:
    model = StageTopDownModel(backbone, head, codec, flip_index=_flip_index(cfg, channels),
                              shift_heatmap=cfg.shift_heatmap, preset=preset, url=cfg.url)
    model.config = cfg
    return model


def _check_stride(cfg: StageConfig, stride: int, what: str) -> None:
    W, H = cfg.input_size
    w, h = cfg.heatmap_size
    if (-(-W // stride), -(-H // stride)) != (w, h):
        raise ValueError(f"{what}: heatmap_size {tuple(cfg.heatmap_size)} does not match input_size "
                         f"{tuple(cfg.input_size)} at stride {stride} (expected {(-(-W // stride), -(-H // stride))})")


def build_cpm(cfg: CPMConfig, preset: Optional[str] = None) -> StageTopDownModel:
    _check_stride(cfg, 8, "CPM")
    ch = cfg.num_keypoints + (1 if cfg.background else 0)
    backbone = CPM(3, ch, cfg.feat_channels, cfg.middle_channels, cfg.num_stages, cfg.stem_channels,
                   cfg.middle_widths, cfg.bn_eps, cfg.bn_momentum)
    head = CPMHead(ch, ch, cfg.num_stages, final_layer=False)
    return _wrap(cfg, backbone, head, _codec(cfg, cfg.background), ch, preset)


def build_hourglass(cfg: HourglassConfig, preset: Optional[str] = None) -> StageTopDownModel:
    _check_stride(cfg, 4, "Hourglass")
    backbone = HourglassNet(cfg.downsample_times, cfg.num_stacks, cfg.stage_channels, cfg.stage_blocks,
                            cfg.feat_channel, cfg.stem_channels, cfg.down, cfg.bn_eps, cfg.bn_momentum)
    head = CPMHead(cfg.feat_channel, cfg.num_keypoints, cfg.num_stacks, final_layer=True)
    return _wrap(cfg, backbone, head, _codec(cfg), cfg.num_keypoints, preset)


def build_cpn(cfg: CPNConfig, preset: Optional[str] = None) -> StageTopDownModel:
    _check_stride(cfg, 4, "CPN")
    if not 1 <= cfg.topk <= cfg.num_keypoints:
        raise ValueError(f"CPN topk must be in 1..num_keypoints={cfg.num_keypoints}, got {cfg.topk}")
    if cfg.global_sigmas is not None and len(cfg.global_sigmas) != 4:
        raise ValueError(f"CPN global_sigmas needs one sigma per level (4), got {cfg.global_sigmas}")
    backbone = ResNet(cfg.depth, stem_channels=cfg.stem_channels, base_channels=cfg.base_channels,
                      out_indices=(0, 1, 2, 3), bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)
    head = CPNHead(backbone.out_channels, cfg.num_keypoints, tuple(cfg.heatmap_size), cfg.channels,
                   cfg.mid_channels, cfg.refine_blocks, cfg.bn_eps, cfg.bn_momentum)
    return _wrap(cfg, backbone, head, _codec(cfg), cfg.num_keypoints, preset)


def cpn_global_codecs(cfg: CPNConfig) -> List[HeatmapCodec]:
    """One MSRA codec per GlobalNet level (deepest first) with ``cfg.global_sigmas`` (or ``cfg.sigma``)."""
    sigmas = cfg.global_sigmas or (cfg.sigma,) * 4
    return [HeatmapCodec(tuple(cfg.input_size), tuple(cfg.heatmap_size), sigma=float(s)) for s in sigmas]


def build_stage_model(name_or_config: Union[str, StageConfig] = "cpm", **overrides: Any) -> StageTopDownModel:
    """A randomly initialised model from a preset name of :data:`STAGE_CONFIGS` or a config, with optional
    field overrides (``build_stage_model("cpm", num_stages=3)``)."""
    preset = None
    if isinstance(name_or_config, str):
        if name_or_config not in STAGE_CONFIGS:
            raise KeyError(f"unknown multi-stage preset {name_or_config!r}; available: {sorted(STAGE_CONFIGS)}")
        preset = name_or_config
        cfg = STAGE_CONFIGS[name_or_config]
    elif isinstance(name_or_config, (CPMConfig, HourglassConfig, CPNConfig)):
        cfg = name_or_config
    else:
        raise TypeError(f"build_stage_model expects a preset name or a CPM/Hourglass/CPN config, got "
                        f"{type(name_or_config).__name__}")
    if overrides:
        cfg = cfg.replace(**overrides)
    if isinstance(cfg, CPMConfig):
        return build_cpm(cfg, preset)
    if isinstance(cfg, HourglassConfig):
        return build_hourglass(cfg, preset)
    return build_cpn(cfg, preset)


def _builder(name: str) -> Callable[..., nn.Module]:
    def builder(**overrides: Any) -> nn.Module:
        return build_stage_model(name, **overrides)

    builder.__name__ = builder.__qualname__ = name.replace("-", "_")
    builder.__doc__ = (f"Multi-stage top-down preset {name!r} (overrides: any "
                       f"{type(STAGE_CONFIGS[name]).__name__} field).")
    return builder


#: preset name -> builder(**overrides) (part of :data:`posekit.models.topdown_presets.TOPDOWN_PRESETS`).
MULTI_STAGE_PRESETS: Dict[str, Callable[..., nn.Module]] = {name: _builder(name) for name in STAGE_CONFIGS}


# ----------------------------------------------------------------------------------------------------------
# MMPose interoperability
# ----------------------------------------------------------------------------------------------------------
def _need(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise KeyError(f"MMPose config {where} is missing field {key!r}")
    return d[key]


def stage_config_from_mmpose(model_cfg: Mapping[str, Any],
                             constructor_defaults: Optional[Mapping[str, Any]] = None
                             ) -> Union[CPMConfig, HourglassConfig]:
    """A CPM / Hourglass config from an MMPose ``TopdownPoseEstimator`` config dict (backbone ``CPM`` or
    ``HourglassNet``, or the width-parameterised ``CPMNarrow`` / ``HourglassNetNarrow`` of the parity
    references; head ``CPMHead``; codec ``MSRAHeatmap``). ``constructor_defaults`` optionally gives the
    constructor defaults left out of the config (``{"backbone": {"defaults": {...}}, "head": ...}``).
    Unsupported variants raise ValueError naming the field."""
    cd = constructor_defaults or {}
    bb = dict(((cd.get("backbone") or {}).get("defaults") or {}), **_need(model_cfg, "backbone", "model"))
    hh = dict(((cd.get("head") or {}).get("defaults") or {}), **_need(model_cfg, "head", "model"))
    if hh.get("type") != "CPMHead":
        raise ValueError(f"unsupported MMPose head.type={hh.get('type')!r} (expected 'CPMHead')")
    if hh.get("deconv_out_channels"):
        raise ValueError("unsupported MMPose head.deconv_out_channels (CPM/Hourglass configs have none)")
    codec_cfg = hh.get("decoder") or model_cfg.get("codec")
    if not codec_cfg:
        raise KeyError("MMPose config has no head.decoder (the heatmap codec)")
    codec = heatmap_codec_from_mmpose(codec_cfg)
    if codec.kind != "msra" or codec.unbiased:
        raise ValueError(f"unsupported codec {codec_cfg.get('type')!r} (unbiased={codec.unbiased}); CPM and "
                         f"Hourglass use MSRAHeatmap")
    test = model_cfg.get("test_cfg") or {}
    norm = bb.get("norm_cfg") or {}
    common = dict(input_size=codec.input_size, heatmap_size=codec.heatmap_size, sigma=codec.sigma,
                  shift_heatmap=bool(test.get("shift_heatmap", True)), bn_eps=float(norm.get("eps", 1e-5)),
                  bn_momentum=float(norm.get("momentum", 0.1)))
    btype = bb.get("type")
    K = int(_need(hh, "out_channels", "head"))
    if btype in ("CPM", "CPMNarrow"):
        if int(bb.get("in_channels", 3)) != 3:
            raise ValueError(f"unsupported MMPose backbone.in_channels={bb.get('in_channels')} (CPM needs 3)")
        if hh.get("final_layer", None) is not None:
            raise ValueError("unsupported MMPose CPM head.final_layer (the official CPM head has none)")
        if int(bb.get("out_channels", K)) != K or int(hh.get("in_channels", K)) != K:
            raise ValueError(f"CPM backbone.out_channels={bb.get('out_channels')} / head.in_channels="
                             f"{hh.get('in_channels')} must equal head.out_channels={K}")
        stages = int(bb.get("num_stages", 6))
        if int(hh.get("num_stages", stages)) != stages:
            raise ValueError(f"head.num_stages={hh.get('num_stages')} != backbone.num_stages={stages}")
        return CPMConfig(num_keypoints=K, schema="coco17" if K == 17 else None, num_stages=stages,
                         feat_channels=int(bb.get("feat_channels", 128)),
                         middle_channels=int(bb.get("middle_channels", 32)),
                         stem_channels=tuple(int(c) for c in bb.get("stem_channels", CPM_STEM_CHANNELS)),
                         middle_widths=tuple(int(c) for c in bb.get("middle_widths", CPM_MIDDLE_CHANNELS)),
                         **common)
    if btype in ("HourglassNet", "HourglassNetNarrow"):
        fl = hh.get("final_layer", {"kernel_size": 1})
        if fl is None or int(fl.get("kernel_size", 1)) != 1:
            raise ValueError(f"unsupported MMPose Hourglass head.final_layer={fl!r} (expected a 1x1 conv)")
        stacks = int(bb.get("num_stacks", 2))
        if int(hh.get("num_stages", stacks)) != stacks:
            raise ValueError(f"head.num_stages={hh.get('num_stages')} != backbone.num_stacks={stacks}")
        feat = int(bb.get("feat_channel", 256))
        if int(hh.get("in_channels", feat)) != feat:
            raise ValueError(f"head.in_channels={hh.get('in_channels')} != backbone.feat_channel={feat}")
        return HourglassConfig(num_keypoints=K, schema="coco17" if K == 17 else None,
                               downsample_times=int(bb.get("downsample_times", 5)), num_stacks=stacks,
                               stage_channels=tuple(int(c) for c in bb.get("stage_channels",
                                                                           (256, 256, 384, 384, 384, 512))),
                               stage_blocks=tuple(int(c) for c in bb.get("stage_blocks", (2, 2, 2, 2, 2, 4))),
                               feat_channel=feat, stem_channels=tuple(int(c) for c in bb.get("stem_channels",
                                                                                             (128, 256))),
                               **common)
    raise ValueError(f"unsupported MMPose backbone.type={btype!r} (expected CPM or HourglassNet)")
