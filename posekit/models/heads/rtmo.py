"""The RTMO head: per-level classification / box / keypoint-visibility / pose-feature branches and the
Dynamic Coordinate Classifier (DCC), in plain PyTorch.

Frames: every coordinate produced here is in **model-input pixels** (the letterboxed network input),
pixel centres at integer coordinates. A prior (grid cell) ``(col, row)`` of a level with stride ``s``
sits at ``(col * s + (s - 1) / 2, row * s + (s - 1) / 2)``.

Module and parameter names follow MMPose's ``RTMOHead`` (``head_module.*``, ``dcc.*``, ``loss_oks.sigmas``)
so the ``head.*`` keys of an official checkpoint load strictly.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from posekit.boxes import box_iou, nms

from ..layers import GAU, ConvModule, Scale, SinePositionalEncoding

__all__ = [
    "RTMOHeadModule",
    "DCC",
    "RTMOHead",
    "OKSSigmas",
    "bbox_xyxy_to_cs",
    "box_iou_matrix",
    "nms_xyxy",
    "mlvl_priors",
]

_SOFTMAX_EPS = 1e-8
_COCO17_SIGMAS = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
                  0.087, 0.087, 0.089, 0.089]


# ----------------------------------------------------------------------------------------------------------
# geometry helpers
# ----------------------------------------------------------------------------------------------------------
def mlvl_priors(featmap_sizes: Sequence[Tuple[int, int]], strides: Sequence[int],
                device=None, dtype=torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    """Grid-cell centres of every level, flattened level by level, row-major (y, x) inside a level.

    Returns ``priors (P, 2)`` as ``(x, y)`` model-input pixels and ``strides (P,)``.
    """
    pri, strd = [], []
    for (h, w), s in zip(featmap_sizes, strides):
        ys = torch.arange(h, device=device, dtype=dtype) * s + (s - 1) / 2.0
        xs = torch.arange(w, device=device, dtype=dtype) * s + (s - 1) / 2.0
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        pri.append(torch.stack((xx.reshape(-1), yy.reshape(-1)), dim=-1))
        strd.append(torch.full((h * w,), float(s), device=device, dtype=dtype))
    return torch.cat(pri), torch.cat(strd)


def bbox_xyxy_to_cs(boxes: torch.Tensor, padding: float = 1.0) -> torch.Tensor:
    """``(..., 4)`` xyxy boxes -> ``(..., 4)`` = centre x, y and scale ``(w, h) * padding``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) * 0.5, (y1 + y2) * 0.5, (x2 - x1) * padding, (y2 - y1) * padding), dim=-1)


def box_iou_matrix(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """IoU between xyxy boxes ``a (N, 4)`` and ``b (M, 4)`` -> ``(N, M)``; union clamped to ``eps`` (MMPose's)."""
    return box_iou(a, b, eps=eps)


def nms_xyxy(boxes: torch.Tensor, scores: torch.Tensor, iou_thr: float) -> torch.Tensor:
    """Greedy NMS: visit boxes by descending score, drop any later box with IoU > ``iou_thr`` to a kept one.

    ``boxes (N, 4)`` xyxy, ``scores (N,)``. Returns the kept indices (int64, descending score).
    """
    if int(boxes.shape[0]) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    keep = nms(boxes.detach().float().cpu().numpy(), scores.detach().float().cpu().numpy(), iou_thr)
    return torch.as_tensor(keep, dtype=torch.long, device=boxes.device)


# ----------------------------------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------------------------------
class OKSSigmas(nn.Module):
    """Holds the per-keypoint OKS sigmas as the buffer ``sigmas`` (MMPose keeps it at ``head.loss_oks``)."""

    def __init__(self, sigmas: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("sigmas", torch.as_tensor(list(sigmas), dtype=torch.float32))


class RTMOHeadModule(nn.Module):
    """Per-level convolutional branches (no weight sharing between levels).

    Each level's ``(B, C, H, W)`` neck map is split in two channel halves: the first feeds the classification
    branch (``stacked_convs`` 3x3 conv blocks -> 1x1 ``out_cls``), the second the pose branch
    (``2 * stacked_convs`` 3x3 conv blocks, the first dense, the rest grouped) -> 1x1 ``out_bbox`` (4),
    ``out_kpt_reg`` (2K, training proxy), ``out_kpt_vis`` (K), ``out_pose`` (pose-vector channels).

    Channel arithmetic (as MMPose): branch input ``int(in_channels * widen_factor)``, classification width
    ``int(cls_feat_channels * widen_factor)``, pose width ``num_groups * int(channels_per_group * widen_factor)``.
    """

    def __init__(
        self,
        num_keypoints: int = 17,
        in_channels: int = 256,
        num_classes: int = 1,
        widen_factor: float = 1.0,
        cls_feat_channels: int = 256,
        stacked_convs: int = 2,
        num_groups: int = 8,
        channels_per_group: int = 36,
        pose_vec_channels: int = 256,
        num_levels: int = 2,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.03,
        act: str = "silu",
    ) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.num_classes = num_classes
        self.in_channels = int(in_channels * widen_factor)
        self.cls_feat_channels = int(cls_feat_channels * widen_factor)
        self.num_groups = num_groups
        self.channels_per_group = int(channels_per_group * widen_factor)
        self.pose_vec_channels = pose_vec_channels
        if pose_vec_channels <= 0:
            raise ValueError(f"RTMOHeadModule pose_vec_channels must be > 0, got {pose_vec_channels}")
        kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, act=act)
        pose_chn = num_groups * self.channels_per_group

        self.conv_cls = nn.ModuleList()
        self.conv_pose = nn.ModuleList()
        for _ in range(num_levels):
            self.conv_cls.append(nn.Sequential(*[
                ConvModule(self.in_channels if i == 0 else self.cls_feat_channels, self.cls_feat_channels, 3, **kw)
                for i in range(stacked_convs)
            ]))
            self.conv_pose.append(nn.Sequential(*[
                ConvModule(self.in_channels if i == 0 else pose_chn, pose_chn, 3, groups=1 if i == 0 else num_groups,
                           **kw)
                for i in range(2 * stacked_convs)
            ]))
        self.out_cls = nn.ModuleList(nn.Conv2d(self.cls_feat_channels, num_classes, 1) for _ in range(num_levels))
        self.out_bbox = nn.ModuleList(nn.Conv2d(pose_chn, 4, 1) for _ in range(num_levels))
        self.out_kpt_reg = nn.ModuleList(nn.Conv2d(pose_chn, 2 * num_keypoints, 1) for _ in range(num_levels))
        self.out_kpt_vis = nn.ModuleList(nn.Conv2d(pose_chn, num_keypoints, 1) for _ in range(num_levels))
        self.out_pose = nn.ModuleList(nn.Conv2d(pose_chn, pose_vec_channels, 1) for _ in range(num_levels))

    def forward(self, feats: Sequence[torch.Tensor], with_kpt_offsets: bool = True) -> Dict[str, List[torch.Tensor]]:
        """Per-level raw maps: ``cls_scores (B, num_classes, H, W)``, ``bbox_preds (B, 4, H, W)``,
        ``kpt_vis (B, K, H, W)`` (logits), ``pose_feats (B, C_pose, H, W)`` and, when ``with_kpt_offsets``,
        ``kpt_offsets (B, 2K, H, W)`` (in stride units, training proxy branch)."""
        if len(feats) != len(self.conv_cls):
            raise ValueError(f"RTMO head expects {len(self.conv_cls)} feature levels, got {len(feats)}")
        out: Dict[str, List[torch.Tensor]] = {"cls_scores": [], "bbox_preds": [], "kpt_vis": [], "pose_feats": []}
        if with_kpt_offsets:
            out["kpt_offsets"] = []
        for i, x in enumerate(feats):
            if x.shape[1] != 2 * self.in_channels:
                raise ValueError(f"RTMO head level {i} expects {2 * self.in_channels} channels, got {x.shape[1]}")
            cls_feat, reg_feat = x.split(self.in_channels, dim=1)
            cls_feat = self.conv_cls[i](cls_feat)
            reg_feat = self.conv_pose[i](reg_feat)
            out["cls_scores"].append(self.out_cls[i](cls_feat))
            out["bbox_preds"].append(self.out_bbox[i](reg_feat))
            out["kpt_vis"].append(self.out_kpt_vis[i](reg_feat))
            out["pose_feats"].append(self.out_pose[i](reg_feat))
            if with_kpt_offsets:
                out["kpt_offsets"].append(self.out_kpt_reg[i](reg_feat))
        return out


class DCC(nn.Module):
    """Dynamic Coordinate Classifier.

    For an instance with pose vector ``f (C,)``, expanded box centre ``c`` and size ``S`` (the predicted box
    scaled by ``bbox_padding``) and prior (grid cell) ``g``:

    * bins ``b_i = c + t_i * S`` with ``t_i = linspace(-0.5, 0.5, B)`` (B_x bins along x, B_y along y);
    * bin encodings ``phi(PE(b_i - g))``: a sine-cosine encoding (``spe``, temperature ``spe_temperature``) of
      the bin coordinate relative to the prior, followed by a learnable linear map (``x_fc`` / ``y_fc``);
    * keypoint features ``f_k``: ``pose_to_kpts`` (Linear + BatchNorm1d) reshaped to ``(K, feat)``, refined
      by a GAU (with a learnable additive keypoint position encoding ``pos_enc``);
    * ``p_k(b_i) = softmax_i(f_k . phi(PE(b_i - g)))`` and the coordinate ``sum_i p_k(b_i) b_i``;
    * ``sigma_fc`` predicts the per-keypoint sigma used by the MLE loss (training only).
    """

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int = 17,
        feat_channels: int = 128,
        num_bins: Tuple[int, int] = (192, 256),
        spe_channels: int = 128,
        spe_temperature: float = 300.0,
        gau_s: int = 128,
        gau_expansion_factor: float = 2,
        gau_act: str = "silu",
        use_gau: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_keypoints = num_keypoints
        self.feat_channels = feat_channels
        self.num_bins = (int(num_bins[0]), int(num_bins[1]))
        self.spe = SinePositionalEncoding(spe_channels, temperature=spe_temperature)
        if use_gau:
            self.gau = GAU(feat_channels, feat_channels, expansion_factor=gau_expansion_factor, s=gau_s, act=gau_act)
            self.pos_enc = nn.Parameter(torch.randn(num_keypoints, gau_s))
        else:
            self.gau = None
            self.pos_enc = None
        self.pose_to_kpts = nn.Sequential(
            nn.Linear(in_channels, feat_channels * num_keypoints), nn.BatchNorm1d(feat_channels * num_keypoints)
        )
        self.x_fc = nn.Linear(spe_channels, feat_channels)
        self.y_fc = nn.Linear(spe_channels, feat_channels)
        self.sigma_fc = nn.Sequential(nn.Linear(in_channels, num_keypoints), nn.Sigmoid(), Scale(0.1))
        self.register_buffer("y_bins", torch.linspace(-0.5, 0.5, self.num_bins[1]))
        self.register_buffer("x_bins", torch.linspace(-0.5, 0.5, self.num_bins[0]))

    # -- pieces ---------------------------------------------------------------------------------------------
    def bin_positions(self, bbox_cs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(N, 4)`` centre-scale -> absolute bin coordinates ``(N, B_x)`` and ``(N, B_y)``."""
        return (self.x_bins * bbox_cs[:, 2:3] + bbox_cs[:, 0:1],
                self.y_bins * bbox_cs[:, 3:4] + bbox_cs[:, 1:2])

    def bin_encodings(self, bbox_cs: torch.Tensor, grids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encodings ``(N, B_x, feat)`` / ``(N, B_y, feat)`` of the bins relative to the priors ``grids (N, 2)``."""
        cx = bbox_cs[:, 0:1] - grids[:, 0:1]
        cy = bbox_cs[:, 1:2] - grids[:, 1:2]
        xb = self.x_bins * bbox_cs[:, 2:3] + cx
        yb = self.y_bins * bbox_cs[:, 3:4] + cy
        return self.x_fc(self.spe.encode_1d(xb)), self.y_fc(self.spe.encode_1d(yb))

    def keypoint_features(self, pose_vecs: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` pose vectors -> ``(N, K, feat)`` keypoint features (after the GAU)."""
        kf = self.pose_to_kpts(pose_vecs).reshape(pose_vecs.shape[0], self.num_keypoints, self.feat_channels)
        if self.gau is not None:
            kf = self.gau(kf, pos_enc=self.pos_enc)
        return kf

    @staticmethod
    def softmax(logits: torch.Tensor) -> torch.Tensor:
        """Softmax over the last axis as MMPose computes it (clamp +-5e4, max-subtraction, +1e-8)."""
        logits = logits.clamp(min=-5e4, max=5e4)
        e = (logits - logits.max(dim=-1, keepdim=True).values.detach()).exp()
        return e / (e.sum(dim=-1, keepdim=True) + _SOFTMAX_EPS)

    def probabilities(self, pose_vecs: torch.Tensor, bbox_cs: torch.Tensor, grids: torch.Tensor):
        """1-D bin probabilities ``(N, K, B_x)`` and ``(N, K, B_y)``."""
        x_enc, y_enc = self.bin_encodings(bbox_cs, grids)
        kf = self.keypoint_features(pose_vecs)
        x_logits = torch.matmul(kf, x_enc.transpose(-1, -2))
        y_logits = torch.matmul(kf, y_enc.transpose(-1, -2))
        return self.softmax(x_logits), self.softmax(y_logits)

    def decode(self, px: torch.Tensor, py: torch.Tensor, bbox_cs: torch.Tensor) -> torch.Tensor:
        """Expectation over the absolute bins -> ``(N, K, 2)`` keypoints."""
        xb, yb = self.bin_positions(bbox_cs)
        x = (px * xb.unsqueeze(1)).sum(dim=-1)
        y = (py * yb.unsqueeze(1)).sum(dim=-1)
        return torch.stack((x, y), dim=-1)

    # -- entry points ---------------------------------------------------------------------------------------
    def forward(self, pose_vecs: torch.Tensor, bbox_cs: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
        """Keypoints ``(N, K, 2)`` in model-input pixels from ``pose_vecs (N, C)``, ``bbox_cs (N, 4)``
        (expanded box centre and size) and ``grids (N, 2)`` (prior coordinates)."""
        if pose_vecs.shape[0] == 0:
            return pose_vecs.new_zeros((0, self.num_keypoints, 2))
        px, py = self.probabilities(pose_vecs, bbox_cs, grids)
        return self.decode(px, py, bbox_cs)

    def forward_train(self, pose_vecs: torch.Tensor, bbox_cs: torch.Tensor, grids: torch.Tensor):
        """Training outputs: keypoints ``(N, K, 2)``, probabilities ``((N, K, B_x), (N, K, B_y))`` and
        sigmas ``(N, K)``."""
        sigmas = self.sigma_fc(pose_vecs)
        px, py = self.probabilities(pose_vecs, bbox_cs, grids)
        return self.decode(px, py, bbox_cs), (px, py), sigmas


class RTMOHead(nn.Module):
    """RTMO head = ``head_module`` (conv branches) + ``dcc`` + decoding.

    Args:
        num_keypoints: K.
        featmap_strides: strides of the input levels (official: (16, 32)).
        bbox_padding: the box expansion for the DCC bins (official: 1.25).
        head_module_kw: keyword arguments of :class:`RTMOHeadModule` (without num_keypoints / num_levels).
        dcc_kw: keyword arguments of :class:`DCC` (without num_keypoints).
        sigmas: per-keypoint OKS sigmas stored as ``loss_oks.sigmas`` (default: COCO-17's when K == 17).
    """

    def __init__(
        self,
        num_keypoints: int = 17,
        featmap_strides: Sequence[int] = (16, 32),
        bbox_padding: float = 1.25,
        head_module_kw: Optional[dict] = None,
        dcc_kw: Optional[dict] = None,
        sigmas: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.featmap_strides = tuple(int(s) for s in featmap_strides)
        self.bbox_padding = float(bbox_padding)
        self.head_module = RTMOHeadModule(num_keypoints=num_keypoints, num_levels=len(self.featmap_strides),
                                          **(head_module_kw or {}))
        self.dcc = DCC(num_keypoints=num_keypoints, **(dcc_kw or {}))
        if self.dcc.in_channels != self.head_module.pose_vec_channels:
            raise ValueError(f"DCC in_channels ({self.dcc.in_channels}) must equal the head's pose_vec_channels "
                             f"({self.head_module.pose_vec_channels})")
        if sigmas is None:
            sigmas = _COCO17_SIGMAS if num_keypoints == 17 else [0.05] * num_keypoints
        if len(sigmas) != num_keypoints:
            raise ValueError(f"RTMOHead sigmas has {len(sigmas)} entries, expected num_keypoints={num_keypoints}")
        self.loss_oks = OKSSigmas(sigmas)

    def forward(self, feats: Sequence[torch.Tensor], with_kpt_offsets: bool = True) -> Dict[str, List[torch.Tensor]]:
        return self.head_module(feats, with_kpt_offsets=with_kpt_offsets)

    # -- decoding -------------------------------------------------------------------------------------------
    @staticmethod
    def flatten_levels(maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-level ``(B, C, H, W)`` -> ``(B, sum H*W, C)`` (levels in order, row-major inside a level)."""
        return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)

    def priors_for(self, raw: Dict[str, List[torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
        maps = raw["cls_scores"]
        sizes = [tuple(m.shape[2:]) for m in maps]
        return mlvl_priors(sizes, self.featmap_strides, device=maps[0].device, dtype=maps[0].dtype)

    @staticmethod
    def decode_boxes(bbox_preds: torch.Tensor, priors: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
        """``(..., P, 4)`` raw (dx, dy, log w, log h) -> xyxy: centre = d * s + prior, size = exp(d) * s."""
        s = strides.unsqueeze(-1)
        xy = bbox_preds[..., :2] * s + priors
        wh = bbox_preds[..., 2:].exp() * s
        return torch.cat((xy - wh / 2, xy + wh / 2), dim=-1)

    def decode_kpt_offsets(self, kpt_offsets: torch.Tensor, priors: torch.Tensor,
                           strides: torch.Tensor) -> torch.Tensor:
        """``(..., P, 2K)`` proxy offsets -> ``(..., P, K, 2)`` keypoints = offset * s + prior."""
        k = kpt_offsets.reshape(*kpt_offsets.shape[:-1], self.num_keypoints, 2)
        return k * strides[:, None, None] + priors[:, None, :]

    @torch.no_grad()
    def dense(self, raw: Dict[str, List[torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """Decode every prior without filtering: ``priors (P, 2)``, ``prior_strides (P,)``, ``scores (B, P)``,
        ``bboxes (B, P, 4)`` (unclamped), ``keypoint_scores (B, P, K)``, ``keypoints (B, P, K, 2)`` (DCC) and,
        when present, ``kpt_reg_decoded (B, P, K, 2)`` (proxy branch)."""
        priors, strides = self.priors_for(raw)
        scores = self.flatten_levels(raw["cls_scores"]).sigmoid().max(dim=-1).values
        bboxes = self.decode_boxes(self.flatten_levels(raw["bbox_preds"]), priors, strides)
        vis = self.flatten_levels(raw["kpt_vis"]).sigmoid()
        pose = self.flatten_levels(raw["pose_feats"])
        b, p = scores.shape
        cs = bbox_xyxy_to_cs(bboxes, self.bbox_padding)
        kpts = self.dcc(pose.reshape(b * p, -1), cs.reshape(b * p, 4), priors.repeat(b, 1))
        out = dict(priors=priors, prior_strides=strides, scores=scores, bboxes=bboxes, keypoint_scores=vis,
                   keypoints=kpts.reshape(b, p, self.num_keypoints, 2))
        if "kpt_offsets" in raw:
            out["kpt_reg_decoded"] = self.decode_kpt_offsets(self.flatten_levels(raw["kpt_offsets"]), priors, strides)
        return out

    @torch.no_grad()
    def predict(self, raw: Dict[str, List[torch.Tensor]], score_thr: float = 0.1, nms_thr: float = 0.65,
                input_size: Optional[Tuple[int, int]] = None) -> List[Dict[str, torch.Tensor]]:
        """Per image: keep priors with score > ``score_thr`` (sorted by descending score), greedy NMS on the
        unclamped boxes (IoU > ``nms_thr`` suppressed; ``nms_thr >= 1`` disables it), DCC keypoints for the
        survivors, then boxes clamped to ``input_size = (W, H)`` (default: the first level's size x stride).

        Returns a list (one per image) of dicts with ``boxes (N, 4)``, ``scores (N,)``,
        ``keypoints (N, K, 2)``, ``keypoint_scores (N, K)``, all in model-input pixels, descending score.
        """
        priors, strides = self.priors_for(raw)
        if input_size is None:
            h0, w0 = raw["cls_scores"][0].shape[2:]
            input_size = (w0 * self.featmap_strides[0], h0 * self.featmap_strides[0])
        scores_all = self.flatten_levels(raw["cls_scores"]).sigmoid().max(dim=-1).values
        bboxes_all = self.decode_boxes(self.flatten_levels(raw["bbox_preds"]), priors, strides)
        vis_all = self.flatten_levels(raw["kpt_vis"]).sigmoid()
        pose_all = self.flatten_levels(raw["pose_feats"])
        results = []
        for b in range(scores_all.shape[0]):
            sc = scores_all[b]
            idx = torch.nonzero(sc > score_thr).squeeze(1)
            idx = idx[torch.argsort(sc[idx], descending=True, stable=True)]
            if idx.numel() and nms_thr < 1.0:
                idx = idx[nms_xyxy(bboxes_all[b, idx], sc[idx], nms_thr)]
            boxes = bboxes_all[b, idx]
            cs = bbox_xyxy_to_cs(boxes, self.bbox_padding)
            kpts = self.dcc(pose_all[b, idx], cs, priors[idx])
            boxes = boxes.clone()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, input_size[0])
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, input_size[1])
            results.append(dict(boxes=boxes, scores=sc[idx], keypoints=kpts, keypoint_scores=vis_all[b, idx]))
        return results
