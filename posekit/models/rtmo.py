"""RTMO (one-stage real-time multi-person pose estimation) in plain PyTorch.

``RTMO(config)``: CSPDarknet backbone -> HybridEncoder neck -> RTMO head (with the Dynamic Coordinate
Classifier). The module tree mirrors MMPose's ``BottomupPoseEstimator`` (``backbone.*``, ``neck.*``,
``head.*``), so official MMPose RTMO checkpoints load strictly (:func:`load_mmpose_rtmo_checkpoint`).

Input: ``(B, 3, H, W)`` float, **BGR, raw 0..255, no mean/std**, H and W divisible by 32 (the official
preprocessing letterboxes the image, aspect preserved, top-left, pad value 114, to ``input_size``).
Outputs of :meth:`RTMO.decode` are in model-input pixels (pixel centres at integer coordinates).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from .backbones.cspdarknet import CSPDarknet
from .heads.rtmo import RTMOHead
from .necks.hybrid_encoder import HybridEncoder

__all__ = [
    "RTMOConfig",
    "RTMO",
    "RTMO_PRESETS",
    "build_rtmo",
    "rtmo_config_from_mmpose",
    "build_rtmo_from_mmpose_meta",
    "extract_state_dict",
    "load_mmpose_rtmo_checkpoint",
]

_URL = "https://download.openmmlab.com/mmpose/v1/projects/rtmo/"


@dataclass(frozen=True)
class RTMOConfig:
    """Every size and setting of an RTMO network (field names follow the MMPose config).

    Backbone (CSPDarknet): ``deepen_factor``, ``widen_factor``, ``spp_kernel_sizes``, ``backbone_bn_eps``,
    ``backbone_bn_momentum``, ``backbone_use_depthwise`` (YOLOX-nano's depthwise-separable 3x3 convs). Neck
    (HybridEncoder): ``neck_deepen_factor``, ``neck_widen_factor``,
    ``hidden_dim``, ``num_heads``, ``feedforward_channels``, ``num_encoder_layers``, ``pe_temperature``,
    ``neck_out_channels`` (ChannelMapper width), ``neck_bn_eps``, ``neck_bn_momentum``. Head:
    ``head_in_channels`` and ``head_widen_factor`` (each branch gets ``int(head_in_channels * head_widen_factor)``
    channels = half of ``neck_out_channels``), ``cls_feat_channels``, ``channels_per_group``, ``num_groups``,
    ``stacked_convs``, ``pose_vec_channels``, ``head_bn_eps``, ``head_bn_momentum``. DCC: ``dcc_feat_channels``,
    ``num_bins = (B_x, B_y)``, ``spe_channels``, ``spe_temperature``, ``gau_s``, ``gau_expansion_factor``,
    ``bbox_padding``. Test: ``input_size = (W, H)``, ``score_thr``, ``nms_thr``. Weights: ``url`` (official
    checkpoint), ``alt_urls`` (other official checkpoints of the same architecture).
    """

    num_keypoints: int = 17
    # backbone
    deepen_factor: float = 0.33
    widen_factor: float = 0.5
    spp_kernel_sizes: Tuple[int, ...] = (5, 9, 13)
    backbone_bn_eps: float = 1e-3
    backbone_bn_momentum: float = 0.03
    backbone_use_depthwise: bool = False
    # neck
    neck_deepen_factor: float = 0.33
    neck_widen_factor: float = 0.5
    hidden_dim: int = 256
    num_heads: int = 8
    feedforward_channels: int = 1024
    num_encoder_layers: int = 1
    pe_temperature: float = 10000.0
    neck_out_channels: int = 256
    neck_bn_eps: float = 1e-5
    neck_bn_momentum: float = 0.1
    # head
    featmap_strides: Tuple[int, ...] = (16, 32)
    head_in_channels: int = 256
    head_widen_factor: float = 0.5
    cls_feat_channels: int = 256
    channels_per_group: int = 36
    num_groups: int = 8
    stacked_convs: int = 2
    pose_vec_channels: int = 256
    head_bn_eps: float = 1e-3
    head_bn_momentum: float = 0.03
    # DCC
    dcc_feat_channels: int = 128
    num_bins: Tuple[int, int] = (192, 256)
    spe_channels: int = 128
    spe_temperature: float = 300.0
    gau_s: int = 128
    gau_expansion_factor: float = 2.0
    bbox_padding: float = 1.25
    # test
    input_size: Tuple[int, int] = (640, 640)
    score_thr: float = 0.1
    nms_thr: float = 0.65
    # weights
    url: Optional[str] = None
    alt_urls: Tuple[str, ...] = field(default_factory=tuple)

    def replace(self, **overrides: Any) -> "RTMOConfig":
        """A copy with some fields changed; unknown names raise ValueError."""
        names = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(overrides) - names)
        if bad:
            raise ValueError(f"unknown RTMO config field(s) {bad}; valid fields: {sorted(names)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _preset(widen: float, deepen: float, neck_out: int, input_size: int, url: str, alt=()) -> RTMOConfig:
    return RTMOConfig(
        deepen_factor=deepen, widen_factor=widen, neck_deepen_factor=deepen, neck_widen_factor=widen,
        neck_out_channels=neck_out, head_widen_factor=widen, pose_vec_channels=neck_out,
        input_size=(input_size, input_size), url=_URL + url, alt_urls=tuple(_URL + a for a in alt),
    )


# Official sizes (MMPose configs/body_2d_keypoint/rtmo/{body7,coco}/rtmo-*.py). `url` is the body7-trained
# checkpoint (the only one published for rtmo-t); `alt_urls` lists the COCO-only ones.
RTMO_PRESETS: Dict[str, RTMOConfig] = {
    "rtmo-t": _preset(0.375, 0.33, 192, 416, "rtmo-t_8xb32-600e_body7-416x416-f48f75cb_20231219.pth"),
    "rtmo-s": _preset(0.5, 0.33, 256, 640, "rtmo-s_8xb32-600e_body7-640x640-dac2bf74_20231211.pth",
                      ("rtmo-s_8xb32-600e_coco-640x640-8db55a59_20231211.pth",)),
    "rtmo-m": _preset(0.75, 0.67, 384, 640, "rtmo-m_16xb16-600e_body7-640x640-39e78cc4_20231211.pth",
                      ("rtmo-m_16xb16-600e_coco-640x640-6f4e0306_20231211.pth",)),
    "rtmo-l": _preset(1.0, 1.0, 512, 640, "rtmo-l_16xb16-600e_body7-640x640-b37118ce_20231211.pth",
                      ("rtmo-l_16xb16-600e_coco-640x640-516a421f_20231211.pth",)),
}


class RTMO(nn.Module):
    """The RTMO network. ``forward(x)`` returns raw per-level tensors; ``decode(raw)`` returns people."""

    def __init__(self, config: RTMOConfig) -> None:
        super().__init__()
        if not isinstance(config, RTMOConfig):
            raise TypeError(f"RTMO expects an RTMOConfig, got {type(config).__name__}")
        c = config
        branch = int(c.head_in_channels * c.head_widen_factor)
        if 2 * branch != c.neck_out_channels:
            raise ValueError(
                f"RTMO config mismatch: the head splits its input into two halves of "
                f"int(head_in_channels * head_widen_factor) = {branch} channels, but neck_out_channels = "
                f"{c.neck_out_channels} (must be {2 * branch})")
        if len(c.featmap_strides) != 2:
            raise ValueError(f"RTMO featmap_strides must have 2 entries (neck outputs 1, 2), got {c.featmap_strides}")
        self.config = c
        self.backbone = CSPDarknet(c.deepen_factor, c.widen_factor, out_indices=(2, 3, 4),
                                   spp_kernel_sizes=c.spp_kernel_sizes, bn_eps=c.backbone_bn_eps,
                                   bn_momentum=c.backbone_bn_momentum, use_depthwise=c.backbone_use_depthwise)
        self.neck = HybridEncoder(
            in_channels=self.backbone.out_channels, hidden_dim=c.hidden_dim, use_encoder_idx=(2,),
            num_encoder_layers=c.num_encoder_layers, num_heads=c.num_heads,
            feedforward_channels=c.feedforward_channels, pe_temperature=c.pe_temperature,
            widen_factor=c.neck_widen_factor, deepen_factor=c.neck_deepen_factor, output_indices=(1, 2),
            projector_out_channels=c.neck_out_channels, bn_eps=c.neck_bn_eps, bn_momentum=c.neck_bn_momentum)
        self.head = RTMOHead(
            num_keypoints=c.num_keypoints, featmap_strides=c.featmap_strides, bbox_padding=c.bbox_padding,
            head_module_kw=dict(in_channels=c.head_in_channels, widen_factor=c.head_widen_factor,
                                cls_feat_channels=c.cls_feat_channels, stacked_convs=c.stacked_convs,
                                num_groups=c.num_groups, channels_per_group=c.channels_per_group,
                                pose_vec_channels=c.pose_vec_channels, bn_eps=c.head_bn_eps,
                                bn_momentum=c.head_bn_momentum),
            dcc_kw=dict(in_channels=c.pose_vec_channels, feat_channels=c.dcc_feat_channels,
                        num_bins=tuple(c.num_bins), spe_channels=c.spe_channels,
                        spe_temperature=c.spe_temperature, gau_s=c.gau_s,
                        gau_expansion_factor=c.gau_expansion_factor),
        )

    def forward(self, x: torch.Tensor, return_features: bool = False,
                with_kpt_offsets: Optional[bool] = None) -> Dict[str, Any]:
        """``x (B, 3, H, W)`` raw BGR 0..255 -> dict of per-level lists (one tensor per stride in
        ``featmap_strides``): ``cls_scores (B, 1, h, w)``, ``bbox_preds (B, 4, h, w)``, ``kpt_vis (B, K, h, w)``
        (logits), ``pose_feats (B, C, h, w)`` and ``kpt_offsets (B, 2K, h, w)`` (training proxy branch; by
        default only in training mode). ``return_features`` adds ``backbone`` and ``neck`` tuples."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"RTMO input must be (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[2] % 32 or x.shape[3] % 32:
            raise ValueError(f"RTMO input height and width must be multiples of 32, got {tuple(x.shape[2:])}")
        if with_kpt_offsets is None:
            with_kpt_offsets = self.training
        feats = self.backbone(x)
        neck = self.neck(feats)
        raw: Dict[str, Any] = dict(self.head(neck, with_kpt_offsets=with_kpt_offsets))
        if return_features:
            raw["backbone"] = feats
            raw["neck"] = neck
        return raw

    @torch.no_grad()
    def decode(self, raw: Mapping[str, Any], score_thr: Optional[float] = None, nms_thr: Optional[float] = None,
               input_size: Optional[Tuple[int, int]] = None) -> List[Dict[str, np.ndarray]]:
        """People per image from :meth:`forward`'s output.

        Score threshold (default ``config.score_thr``), greedy box NMS (``config.nms_thr``), DCC soft-argmax
        keypoints, boxes clamped to ``input_size = (W, H)`` (default: the network input size). Returns one dict
        per image of float32 numpy arrays in model-input pixels, by descending score: ``keypoints (N, K, 2)``,
        ``keypoint_scores (N, K)``, ``boxes (N, 4)`` xyxy and ``scores (N,)``.
        """
        st = self.config.score_thr if score_thr is None else score_thr
        nt = self.config.nms_thr if nms_thr is None else nms_thr
        res = self.head.predict(raw, score_thr=st, nms_thr=nt, input_size=input_size)
        return [{k: v.detach().cpu().float().numpy() for k, v in r.items()} for r in res]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, **kw) -> List[Dict[str, np.ndarray]]:
        """``decode(forward(x))`` in eval mode (the module's mode is restored afterwards)."""
        was = self.training
        self.eval()
        try:
            return self.decode(self.forward(x, with_kpt_offsets=False), **kw)
        finally:
            self.train(was)

    def init_weights(self, prior_prob: float = 0.01) -> "RTMO":
        """MMPose's head initialisation for training: the classification biases start at ``-log((1 - p) / p)``
        (p = 0.01), so every prior begins as background. (Conv weights keep PyTorch's default Kaiming-uniform,
        ``a = sqrt(5)``, which is the official ``init_cfg``.)"""
        b = -math.log((1.0 - prior_prob) / prior_prob)
        with torch.no_grad():
            for conv in self.head.head_module.out_cls:
                conv.bias.fill_(b)
        return self

    def load_mmpose_checkpoint(self, ckpt: Union[str, Mapping[str, Any]], strict: bool = True):
        return load_mmpose_rtmo_checkpoint(self, ckpt, strict=strict)


def build_rtmo(name_or_config: Union[str, RTMOConfig, Mapping[str, Any]] = "rtmo-s", **overrides: Any) -> RTMO:
    """An :class:`RTMO` from a preset name (``rtmo-t/s/m/l``), an :class:`RTMOConfig` or a dict of fields,
    with optional field overrides (``build_rtmo("rtmo-s", num_keypoints=14)``). Random weights."""
    if isinstance(name_or_config, str):
        key = name_or_config.lower()
        if key not in RTMO_PRESETS:
            raise KeyError(f"unknown RTMO preset {name_or_config!r}; available: {sorted(RTMO_PRESETS)}")
        cfg = RTMO_PRESETS[key]
    elif isinstance(name_or_config, RTMOConfig):
        cfg = name_or_config
    elif isinstance(name_or_config, Mapping):
        cfg = RTMOConfig().replace(**dict(name_or_config))
    else:
        raise TypeError(f"build_rtmo expects a preset name, RTMOConfig or dict, got {type(name_or_config).__name__}")
    if overrides:
        cfg = cfg.replace(**overrides)
    return RTMO(cfg)


# ----------------------------------------------------------------------------------------------------------
# MMPose interoperability
# ----------------------------------------------------------------------------------------------------------
def _get(d: Mapping[str, Any], path: str, default: Any = ...) -> Any:
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            if default is ...:
                raise KeyError(f"MMPose RTMO config is missing field {path!r}")
            return default
        cur = cur[part]
    return cur


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(f"unsupported MMPose RTMO config: {msg}")


def rtmo_config_from_mmpose(model_cfg: Mapping[str, Any],
                            constructor_defaults: Optional[Mapping[str, Any]] = None) -> RTMOConfig:
    """An :class:`RTMOConfig` from an MMPose ``model`` config dict (``BottomupPoseEstimator`` with
    ``CSPDarknet`` / ``HybridEncoder`` / ``RTMOHead``). ``constructor_defaults`` optionally gives the
    constructor defaults that the config leaves out (``{"neck": {"defaults": {...}}, "head": {...}}``);
    MMPose's own defaults are assumed otherwise. Unsupported variants raise ValueError naming the field."""
    cd = constructor_defaults or {}
    nd = _get(cd, "neck.defaults", {})
    hd = _get(cd, "head.defaults", {})
    bb, nk, hh = _get(model_cfg, "backbone"), _get(model_cfg, "neck"), _get(model_cfg, "head")
    _check(bb.get("type") == "CSPDarknet", f"backbone.type={bb.get('type')!r}")
    _check(nk.get("type") == "HybridEncoder", f"neck.type={nk.get('type')!r}")
    _check(hh.get("type") == "RTMOHead", f"head.type={hh.get('type')!r}")
    _check(tuple(bb.get("out_indices", (2, 3, 4))) == (2, 3, 4), f"backbone.out_indices={bb.get('out_indices')}")
    _check(bb.get("arch", "P5") == "P5", f"backbone.arch={bb.get('arch')!r}")
    for path in ("backbone.act_cfg.type", "head.head_module_cfg.act_cfg.type"):
        act = _get(model_cfg, path, "Swish")
        _check(act in ("Swish", "SiLU"), f"{path}={act!r}")
    _check(tuple(nk.get("output_indices", ())) == (1, 2), f"neck.output_indices={nk.get('output_indices')}")
    _check(tuple(nd.get("use_encoder_idx", nk.get("use_encoder_idx", [2]))) == (2,), "neck.use_encoder_idx != [2]")
    proj = nk.get("projector")
    _check(proj is not None and proj.get("type") == "ChannelMapper", "neck.projector must be a ChannelMapper")
    _check(_get(nk, "encoder_cfg.ffn_cfg.act_cfg.type", "GELU") == "GELU", "neck encoder FFN act must be GELU")
    hm = hh["head_module_cfg"]
    dcc = hh["dcc_cfg"]
    gau = dcc.get("gau_cfg") or {}
    _check(bool(gau), "head.dcc_cfg.gau_cfg=None (the GAU-less DCC is not supported)")
    _check(gau.get("pos_enc", "none") == "add", f"head.dcc_cfg.gau_cfg.pos_enc={gau.get('pos_enc')!r}")
    _check(hm.get("num_classes", 1) == 1, f"head.head_module_cfg.num_classes={hm.get('num_classes')}")
    strides = tuple(hh.get("featmap_strides", (16, 32)))
    backbone_w = float(bb["widen_factor"])
    expected_in = [int(c * backbone_w) for c in (256, 512, 1024)]
    _check(list(nk["in_channels"]) == expected_in,
           f"neck.in_channels={list(nk['in_channels'])} but the backbone gives {expected_in}")
    test = model_cfg.get("test_cfg", {}) or {}
    ins = test.get("input_size", (640, 640))
    bn_bb = bb.get("norm_cfg", {}) or {}
    bn_hd = hm.get("norm_cfg", {}) or {}
    return RTMOConfig(
        num_keypoints=int(hh.get("num_keypoints", 17)),
        deepen_factor=float(bb["deepen_factor"]), widen_factor=backbone_w,
        backbone_use_depthwise=bool(bb.get("use_depthwise", False)),
        spp_kernel_sizes=tuple(bb.get("spp_kernal_sizes", (5, 9, 13))),
        backbone_bn_eps=float(bn_bb.get("eps", 1e-5)), backbone_bn_momentum=float(bn_bb.get("momentum", 0.1)),
        neck_deepen_factor=float(nk.get("deepen_factor", 1.0)), neck_widen_factor=float(nk.get("widen_factor", 1.0)),
        hidden_dim=int(nk.get("hidden_dim", 256)),
        num_heads=int(_get(nk, "encoder_cfg.self_attn_cfg.num_heads", 8)),
        feedforward_channels=int(_get(nk, "encoder_cfg.ffn_cfg.feedforward_channels", 1024)),
        num_encoder_layers=int(nk.get("num_encoder_layers", nd.get("num_encoder_layers", 1))),
        pe_temperature=float(nk.get("pe_temperature", nd.get("pe_temperature", 10000))),
        neck_out_channels=int(proj["out_channels"]),
        featmap_strides=strides,
        head_in_channels=int(hm["in_channels"]), head_widen_factor=float(hm.get("widen_factor", 1.0)),
        cls_feat_channels=int(hm.get("cls_feat_channels", 256)),
        channels_per_group=int(hm.get("channels_per_group", 36)), num_groups=int(hm.get("num_groups", 8)),
        stacked_convs=int(hm.get("stacked_convs", 2)), pose_vec_channels=int(hm["pose_vec_channels"]),
        head_bn_eps=float(bn_hd.get("eps", 1e-3)), head_bn_momentum=float(bn_hd.get("momentum", 0.03)),
        dcc_feat_channels=int(dcc["feat_channels"]), num_bins=tuple(int(b) for b in dcc["num_bins"]),
        spe_channels=int(dcc.get("spe_channels", 128)), spe_temperature=float(dcc.get("spe_temperature", 300.0)),
        gau_s=int(gau.get("s", 128)), gau_expansion_factor=float(gau.get("expansion_factor", 2)),
        bbox_padding=float(hh.get("bbox_padding", hd.get("bbox_padding", 1.25))),
        input_size=(int(ins[0]), int(ins[1])),
        score_thr=float(test.get("score_thr", 0.1)), nms_thr=float(test.get("nms_thr", 0.65)),
    )


def build_rtmo_from_mmpose_meta(meta: Mapping[str, Any]) -> RTMO:
    """An :class:`RTMO` from a posekit parity ``meta.json`` dict (``model_cfg`` + ``constructor_defaults_not_in_cfg``)."""
    if "model_cfg" not in meta:
        raise KeyError("meta has no 'model_cfg' field")
    cfg = rtmo_config_from_mmpose(meta["model_cfg"], meta.get("constructor_defaults_not_in_cfg"))
    return RTMO(cfg)


def extract_state_dict(ckpt: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """The model weights inside an MMPose/MMEngine checkpoint dict.

    Accepts a plain state_dict, ``{"state_dict": ...}`` (released checkpoints; EMA weights already swapped
    in) or an MMEngine training checkpoint with ``ema_state_dict`` (keys ``module.<name>`` plus ``steps``),
    which is preferred when present. A ``data_preprocessor.*`` prefix (no tensors in RTMO) is dropped.
    """
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"checkpoint must be a dict, got {type(ckpt).__name__}")
    if "ema_state_dict" in ckpt:
        sd = {k[len("module."):]: v for k, v in ckpt["ema_state_dict"].items() if k.startswith("module.")}
    elif "state_dict" in ckpt:
        sd = dict(ckpt["state_dict"])
    else:
        sd = dict(ckpt)
    sd = {k: v for k, v in sd.items() if not k.startswith("data_preprocessor.")}
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError("checkpoint does not hold a state_dict of tensors (looked at ema_state_dict, state_dict, "
                         "then the top level)")
    return sd


def load_mmpose_rtmo_checkpoint(model: RTMO, ckpt: Union[str, Mapping[str, Any]], strict: bool = True):
    """Load official MMPose RTMO weights (a ``.pth`` path or an already loaded dict) into ``model``.

    Keys must equal the model's state_dict exactly when ``strict`` (the module tree mirrors MMPose's);
    a mismatch raises RuntimeError listing missing / unexpected keys and shape mismatches.
    """
    if isinstance(ckpt, (str, bytes)) or hasattr(ckpt, "__fspath__"):
        import os

        if not os.path.exists(ckpt):
            raise FileNotFoundError(f"RTMO checkpoint not found: {ckpt}")
        ckpt = torch.load(ckpt, map_location="cpu", weights_only=True)
    sd = extract_state_dict(ckpt)
    own = model.state_dict()
    shape_bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                 for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if shape_bad:
        raise RuntimeError("RTMO checkpoint shape mismatch (wrong preset?):\n  " + "\n  ".join(shape_bad[:20]))
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if strict and (missing or unexpected):
        raise RuntimeError(f"RTMO checkpoint keys do not match the model: missing {missing[:20]} "
                           f"({len(missing)}), unexpected {unexpected[:20]} ({len(unexpected)})")
    return model.load_state_dict(sd, strict=strict)
