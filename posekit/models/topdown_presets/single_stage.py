"""Single-stage top-down presets: SimpleBaseline, ViTPose and RTMPose, with their official configurations.

:data:`SINGLE_STAGE_PRESETS`: preset name -> builder (``builder(**overrides) -> TopDownModel``). Every preset is the
COCO-17, 256x192 (H x W) configuration of MMPose 1.x; ``model.url`` is the official checkpoint (``None`` where
MMPose publishes none). :data:`TOPDOWN_CPU_PRESETS` holds reduced configurations for CPU training runs.

:func:`topdown_from_mmpose_config` builds a :class:`TopDownModel` from an MMPose ``TopdownPoseEstimator`` config
dict (ResNet / mmpretrain VisionTransformer / CSPNeXt backbones, FeatureMapProcessor neck, HeatmapHead / RTMCCHead
heads, MSRAHeatmap / UDPHeatmap / SimCCLabel codecs).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from posekit.codecs.heatmap import HeatmapCodec, heatmap_codec_from_mmpose
from posekit.codecs.simcc import RTMPOSE_SIMCC_SIGMA, SimCCCodec, simcc_codec_from_mmpose
from posekit.models.backbones.cspnext import CSPNeXt, cspnext_out_channels
from posekit.models.backbones.resnet import ResNet
from posekit.models.backbones.vit import VisionTransformer
from posekit.models.heads.heatmap import FeatureMapProcessor, HeatmapHead
from posekit.models.heads.simcc import RTMCCHead
from posekit.models.topdown import TopDownModel
from posekit.schema import get_schema

__all__ = [
    "SINGLE_STAGE_PRESETS", "TOPDOWN_URLS", "TOPDOWN_CPU_PRESETS", "build_simplebaseline", "build_vitpose",
    "build_rtmpose", "build_rtmpose_nano", "topdown_from_mmpose_config",
]

_MM = "https://download.openmmlab.com/mmpose/v1/"
_HM = _MM + "body_2d_keypoint/topdown_heatmap/coco/"
_RTM = _MM + "projects/rtmpose/"

#: preset -> official checkpoint URL (MMPose model zoo, COCO train2017, 256x192).
TOPDOWN_URLS: Dict[str, Optional[str]] = {
    "simplebaseline-r50": _HM + "td-hm_res50_8xb64-210e_coco-256x192-04af38ce_20220923.pth",
    # MMPose publishes no COCO SimpleBaseline ResNet-18 checkpoint; the architecture is the same family.
    "simplebaseline-r18": None,
    "vitpose-s": _HM + "td-hm_ViTPose-small_8xb64-210e_coco-256x192-62d7a712_20230314.pth",
    "vitpose-b": _HM + "td-hm_ViTPose-base_8xb64-210e_coco-256x192-216eae50_20230314.pth",
    "vitpose-l": _HM + "td-hm_ViTPose-large_8xb64-210e_coco-256x192-53609f55_20230314.pth",
    "vitpose-h": _HM + "td-hm_ViTPose-huge_8xb64-210e_coco-256x192-e32adcd4_20230314.pth",
    "vitpose-s-simple": _HM + "td-hm_ViTPose-small-simple_8xb64-210e_coco-256x192-4c101a76_20230314.pth",
    "vitpose-b-simple": _HM + "td-hm_ViTPose-base-simple_8xb64-210e_coco-256x192-0b8234ea_20230407.pth",
    "vitpose-l-simple": _HM + "td-hm_ViTPose-large-simple_8xb64-210e_coco-256x192-3a7ee9e1_20230314.pth",
    "vitpose-h-simple": _HM + "td-hm_ViTPose-huge-simple_8xb64-210e_coco-256x192-ffd48c05_20230314.pth",
    "rtmpose-t": _RTM + "rtmpose-tiny_simcc-coco_pt-aic-coco_420e-256x192-e613ba3f_20230127.pth",
    "rtmpose-s": _RTM + "rtmpose-s_simcc-coco_pt-aic-coco_420e-256x192-8edcf0d7_20230127.pth",
    "rtmpose-m": _RTM + "rtmpose-m_simcc-coco_pt-aic-coco_420e-256x192-d8dd5ca4_20230127.pth",
    "rtmpose-l": _RTM + "rtmpose-l_simcc-coco_pt-aic-coco_420e-256x192-1352a4d2_20230127.pth",
}

#: ViTPose drop-path rate per size (training only).
_VIT_DROP_PATH = {"s": 0.1, "b": 0.3, "l": 0.5, "h": 0.55}
#: RTMPose (deepen, widen, head in_channels) per size.
_RTMPOSE_SIZES = {"t": (0.167, 0.375, 384), "s": (0.33, 0.5, 512), "m": (0.67, 0.75, 768), "l": (1.0, 1.0, 1024)}


def _flip_index(schema) -> list:
    return [int(i) for i in get_schema(schema).flip_index]


def build_simplebaseline(depth: int = 50, schema: str = "coco17", input_size=(192, 256), heatmap_size=(48, 64),
                         sigma: float = 2.0, stem_channels: int = 64, base_channels: int = 64,
                         deconv_out_channels: Sequence[int] = (256, 256, 256), preset: Optional[str] = None,
                         url: Optional[str] = None) -> TopDownModel:
    """SimpleBaseline: ResNet-``depth`` (stride 32) + 3 deconvs + 1x1 conv, MSRA heatmaps, flip test with shift.

    ``input_size`` / ``heatmap_size`` are ``(W, H)``.
    """
    k = get_schema(schema).num_keypoints
    backbone = ResNet(depth, stem_channels=stem_channels, base_channels=base_channels)
    head = HeatmapHead(backbone.out_channels[-1], k, tuple(deconv_out_channels), (4,) * len(deconv_out_channels))
    codec = HeatmapCodec(tuple(input_size), tuple(heatmap_size), sigma, kind="msra")
    return TopDownModel(backbone, head, codec, flip_index=_flip_index(schema), shift_heatmap=True, preset=preset,
                        url=url)


def build_vitpose(arch="b", decoder: str = "classic", schema: str = "coco17", input_size=(192, 256),
                  heatmap_size=(48, 64), sigma: float = 2.0, drop_path_rate: Optional[float] = None,
                  deconv_out_channels: Sequence[int] = (256, 256), preset: Optional[str] = None,
                  url: Optional[str] = None) -> TopDownModel:
    """ViTPose: plain ViT (``arch`` s/b/l/h or a dict) + classic (2 deconvs + 1x1) or simple (ReLU, bilinear x4,
    3x3 conv) decoder, UDP heatmaps, flip test without shift. ``input_size`` / ``heatmap_size`` are ``(W, H)``."""
    if decoder not in ("classic", "simple"):
        raise ValueError(f"ViTPose decoder must be 'classic' or 'simple', got {decoder!r}")
    k = get_schema(schema).num_keypoints
    if drop_path_rate is None:
        drop_path_rate = _VIT_DROP_PATH.get(arch, 0.1) if isinstance(arch, str) else 0.1
    W, H = input_size
    backbone = VisionTransformer(arch, img_size=(H, W), drop_path_rate=drop_path_rate)
    C = backbone.embed_dims
    if decoder == "classic":
        neck = None
        head = HeatmapHead(C, k, tuple(deconv_out_channels), (4,) * len(deconv_out_channels), final_layer_kernel=1)
    else:
        neck = FeatureMapProcessor(4.0, apply_relu=True)
        head = HeatmapHead(C, k, (), (), final_layer_kernel=3)
    codec = HeatmapCodec(tuple(input_size), tuple(heatmap_size), sigma, kind="udp")
    return TopDownModel(backbone, head, codec, neck=neck, flip_index=_flip_index(schema), shift_heatmap=False,
                        preset=preset, url=url)


def build_rtmpose(size: str = "m", schema: str = "coco17", input_size=(192, 256), preset: Optional[str] = None,
                  url: Optional[str] = None) -> TopDownModel:
    """RTMPose-t/s/m/l: CSPNeXt (P5, stride 32, BN eps 1e-5) + RTMCC head (GAU hidden 256, s 128), SimCC labels
    with split ratio 2 and RTMPose's sigma for the input size. ``input_size`` is ``(W, H)``."""
    if size not in _RTMPOSE_SIZES:
        raise ValueError(f"RTMPose size must be one of {sorted(_RTMPOSE_SIZES)}, got {size!r}")
    deepen, widen, cin = _RTMPOSE_SIZES[size]
    k = get_schema(schema).num_keypoints
    W, H = (int(v) for v in input_size)
    if (W, H) not in RTMPOSE_SIMCC_SIGMA:
        raise ValueError(f"RTMPose input_size must be one of {sorted(RTMPOSE_SIMCC_SIGMA)} (W, H), got {input_size}")
    backbone = CSPNeXt("P5", deepen, widen, 0.5, out_indices=(4,), channel_attention=True, bn_eps=1e-5,
                       bn_momentum=0.1)
    head = RTMCCHead(cin, k, (W, H), (W // 32, H // 32), 2.0, 7, hidden_dims=256, s=128, expansion_factor=2,
                     dropout_rate=0.0, act="silu", use_rel_bias=False, pos_enc=False)
    codec = SimCCCodec((W, H), RTMPOSE_SIMCC_SIGMA[(W, H)], 2.0, normalize=False)
    return TopDownModel(backbone, head, codec, flip_index=_flip_index(schema), preset=preset, url=url)


def build_rtmpose_nano(schema: str = "coco17", input_size=(96, 128), deepen_factor: float = 0.167,
                       widen_factor: float = 0.25, hidden_dims: int = 64, s: int = 64, final_layer_kernel: int = 7,
                       sigma=None, out_stride: int = 32, preset: Optional[str] = None,
                       url: Optional[str] = None) -> TopDownModel:
    """A reduced RTMPose for CPU training (no official weights): CSPNeXt P5 (``deepen_factor``, ``widen_factor``)
    + RTMCC head (GAU ``hidden_dims``, ``s``), SimCC split ratio 2, any ``input_size = (W, H)``.

    ``out_stride`` (32, 16 or 8) picks the CSPNeXt stage the head reads (32: the last, as RTMPose does); the head
    flattens a ``ceil(W / stride) x ceil(H / stride)`` map per keypoint, so small inputs need a smaller stride
    (RTMPose's 192x256 gives 6x8 = 48 values; 64x64 at stride 32 would give only 2x2). ``sigma`` (bins,
    ``(sx, sy)`` or a float) defaults to RTMPose's (4.9, 5.66) at 192x256 scaled linearly with the input size."""
    k = get_schema(schema).num_keypoints
    W, H = (int(v) for v in input_size)
    if W < 32 or H < 32:
        raise ValueError(f"rtmpose-nano input_size must be at least 32x32 (W, H), got {tuple(input_size)}")
    if sigma is None:
        sigma = RTMPOSE_SIMCC_SIGMA.get((W, H), (4.9 * W / 192.0, 5.66 * H / 256.0))
    index = {32: 4, 16: 3, 8: 2}.get(int(out_stride))
    if index is None:
        raise ValueError(f"rtmpose-nano out_stride must be 32, 16 or 8, got {out_stride!r}")
    backbone = CSPNeXt("P5", deepen_factor, widen_factor, 0.5, out_indices=(index,), channel_attention=True,
                       bn_eps=1e-5, bn_momentum=0.1)
    cin = cspnext_out_channels(widen_factor)[index]
    st = int(out_stride)
    head = RTMCCHead(cin, k, (W, H), (-(-W // st), -(-H // st)), 2.0, final_layer_kernel, hidden_dims=hidden_dims,
                     s=s, expansion_factor=2, dropout_rate=0.0, act="silu", use_rel_bias=False, pos_enc=False)
    codec = SimCCCodec((W, H), sigma, 2.0, normalize=False)
    return TopDownModel(backbone, head, codec, flip_index=_flip_index(schema), preset=preset, url=url)


def _preset(builder: Callable, name: str, **kw) -> Callable[..., TopDownModel]:
    def make(**overrides) -> TopDownModel:
        args = dict(kw)
        args.update(overrides)
        args.setdefault("preset", name)
        args.setdefault("url", TOPDOWN_URLS[name])
        return builder(**args)

    make.__name__ = f"build_{name.replace('-', '_')}"
    make.__doc__ = f"The {name!r} preset ({builder.__name__} with {kw}); keyword overrides are passed through."
    return make


SINGLE_STAGE_PRESETS: Dict[str, Callable[..., TopDownModel]] = {
    "simplebaseline-r50": _preset(build_simplebaseline, "simplebaseline-r50", depth=50),
    "simplebaseline-r18": _preset(build_simplebaseline, "simplebaseline-r18", depth=18),
}
for _s in "sblh":
    SINGLE_STAGE_PRESETS[f"vitpose-{_s}"] = _preset(build_vitpose, f"vitpose-{_s}", arch=_s, decoder="classic")
    SINGLE_STAGE_PRESETS[f"vitpose-{_s}-simple"] = _preset(build_vitpose, f"vitpose-{_s}-simple", arch=_s,
                                                      decoder="simple")
for _s in "tsml":
    SINGLE_STAGE_PRESETS[f"rtmpose-{_s}"] = _preset(build_rtmpose, f"rtmpose-{_s}", size=_s)

#: reduced configurations without official weights, for CPU training runs (not in :data:`SINGLE_STAGE_PRESETS`,
#: which lists the official MMPose configurations): ``rtmpose-nano`` (not MMPose's "rtmpose-tiny" = rtmpose-t).
TOPDOWN_CPU_PRESETS: Dict[str, Callable[..., TopDownModel]] = {
    "rtmpose-nano": lambda **kw: build_rtmpose_nano(**{"preset": "rtmpose-nano", **kw}),
}


# ------------------------------------------------------------------------------------------ MMPose configs
def _bn_settings(norm_cfg: Optional[Mapping], default_eps: float, default_momentum: float):
    if not norm_cfg:
        return default_eps, default_momentum
    t = norm_cfg.get("type", "BN")
    if t not in ("BN", "SyncBN", "BN2d"):
        raise ValueError(f"norm_cfg type {t!r} is not supported (BN / SyncBN)")
    return float(norm_cfg.get("eps", 1e-5)), float(norm_cfg.get("momentum", 0.1))


def _build_backbone(cfg: Mapping[str, Any]):
    t = cfg.get("type", "")
    if t.endswith("ResNet"):
        for key, ok in (("style", "pytorch"), ("deep_stem", False), ("avg_down", False)):
            if cfg.get(key, ok) != ok:
                raise ValueError(f"backbone.{key}={cfg[key]!r} is not supported (only {ok!r})")
        eps, mom = _bn_settings(cfg.get("norm_cfg"), 1e-5, 0.1)
        return ResNet(int(cfg["depth"]), int(cfg.get("in_channels", 3)), int(cfg.get("stem_channels", 64)),
                      int(cfg.get("base_channels", 64)), tuple(cfg.get("strides", (1, 2, 2, 2))),
                      tuple(cfg.get("dilations", (1, 1, 1, 1))), tuple(cfg.get("out_indices", (3,))), eps, mom)
    if t.endswith("VisionTransformer"):
        if cfg.get("with_cls_token", True) or cfg.get("out_type", "cls_token") != "featmap":
            raise ValueError("VisionTransformer: only with_cls_token=False, out_type='featmap' (ViTPose) is supported")
        arch = cfg.get("arch", "b")
        if isinstance(arch, str):
            a = arch.lower()
            arch = {"small": "s", "base": "b", "large": "l", "huge": "h"}.get(a, a)
        img = cfg.get("img_size", 224)
        img = (img, img) if isinstance(img, int) else tuple(img)
        return VisionTransformer(arch, img, int(cfg.get("patch_size", 16)),
                                 int(cfg.get("patch_cfg", {}).get("padding", 0)), qkv_bias=bool(cfg.get("qkv_bias", True)),
                                 drop_path_rate=float(cfg.get("drop_path_rate", 0.0)))
    if t.endswith("CSPNeXt"):
        if cfg.get("use_depthwise", False):
            raise ValueError("CSPNeXt use_depthwise=True is not supported")
        act = cfg.get("act_cfg", {"type": "SiLU"}).get("type", "SiLU").lower()
        eps, mom = _bn_settings(cfg.get("norm_cfg"), 1e-3, 0.03)
        return CSPNeXt(cfg.get("arch", "P5"), float(cfg.get("deepen_factor", 1.0)), float(cfg.get("widen_factor", 1.0)),
                       float(cfg.get("expand_ratio", 0.5)), tuple(cfg.get("out_indices", (2, 3, 4))),
                       bool(cfg.get("channel_attention", True)), tuple(cfg.get("spp_kernel_sizes", (5, 9, 13))),
                       act, eps, mom)
    raise ValueError(f"backbone type {t!r} is not supported (ResNet, VisionTransformer, CSPNeXt)")


def topdown_from_mmpose_config(model_cfg: Mapping[str, Any], schema: str = "coco17") -> TopDownModel:
    """A :class:`TopDownModel` from an MMPose ``TopdownPoseEstimator`` config dict (see the module docstring)."""
    if model_cfg.get("type") != "TopdownPoseEstimator":
        raise ValueError(f"model type {model_cfg.get('type')!r} is not 'TopdownPoseEstimator'")
    backbone = _build_backbone(model_cfg["backbone"])
    neck_cfg = model_cfg.get("neck")
    neck = None
    if neck_cfg:
        if neck_cfg.get("type") != "FeatureMapProcessor" or neck_cfg.get("select_index") is not None \
                or neck_cfg.get("concat", False):
            raise ValueError(f"neck {neck_cfg!r} is not supported (FeatureMapProcessor without select/concat)")
        neck = FeatureMapProcessor(float(neck_cfg.get("scale_factor", 1.0)), bool(neck_cfg.get("apply_relu", False)))
    h = model_cfg["head"]
    codec_cfg = h["decoder"]
    if h.get("type") == "HeatmapHead":
        final = h.get("final_layer", {"kernel_size": 1})
        head = HeatmapHead(int(h["in_channels"]), int(h["out_channels"]),
                           tuple(h.get("deconv_out_channels", (256, 256, 256)) or ()),
                           tuple(h.get("deconv_kernel_sizes", (4, 4, 4)) or ()),
                           h.get("conv_out_channels"), h.get("conv_kernel_sizes"),
                           None if final is None else int(final.get("kernel_size", 1)))
        codec = heatmap_codec_from_mmpose(codec_cfg)
    elif h.get("type") == "RTMCCHead":
        g = h.get("gau_cfg", {})
        head = RTMCCHead(int(h["in_channels"]), int(h["out_channels"]), tuple(h["input_size"]),
                         tuple(h["in_featuremap_size"]), float(h.get("simcc_split_ratio", 2.0)),
                         int(h.get("final_layer_kernel_size", 1)), int(g.get("hidden_dims", 256)), int(g.get("s", 128)),
                         float(g.get("expansion_factor", 2)), float(g.get("dropout_rate", 0.0)),
                         str(g.get("act_fn", "SiLU")).lower(), bool(g.get("use_rel_bias", True)),
                         bool(g.get("pos_enc", False)))
        codec = simcc_codec_from_mmpose(codec_cfg)
    else:
        raise ValueError(f"head type {h.get('type')!r} is not supported (HeatmapHead, RTMCCHead)")
    pre = model_cfg.get("data_preprocessor", {})
    test = model_cfg.get("test_cfg", {})
    fi = _flip_index(schema) if int(h["out_channels"]) == get_schema(schema).num_keypoints else None
    return TopDownModel(backbone, head, codec, neck=neck, flip_index=fi,
                        shift_heatmap=bool(test.get("shift_heatmap", False)),
                        mean=tuple(pre.get("mean", (123.675, 116.28, 103.53))),
                        std=tuple(pre.get("std", (58.395, 57.12, 57.375))),
                        bgr_to_rgb=bool(pre.get("bgr_to_rgb", True)))
