"""RTMO's losses: SimOTA dynamic-k assignment with the OKS cost, and the RTMO loss terms, in plain PyTorch.

Frames: every coordinate is in **model-input pixels** (the network input, pixel centres at integer
coordinates), like :mod:`posekit.models.heads.rtmo`. Ground truth per image is a dict of tensors:

* ``boxes (G, 4)`` xyxy, ``keypoints (G, K, 2)``, ``visible (G, K)`` (1 for labelled keypoints, COCO ``v > 0``,
  else 0) and ``areas (G,)`` (the instance area used as the OKS scale ``s^2``, e.g. COCO's segmentation area).

:class:`RTMOCriterion` follows MMPose's ``RTMOHead.loss`` (mmpose 1.3):

1. every prior is decoded (box, proxy keypoints from the ``kpt_offsets`` branch, visibility); the score used for
   assignment is ``sqrt(sigmoid(cls))``;
2. :class:`SimOTAAssigner` picks the positives of each ground-truth person: candidates are priors inside the box
   or within ``center_radius`` strides of the person centre (the mean of its labelled keypoints); the cost is
   ``cls_weight * BCE(score, 1) + iou_weight * -log(IoU) + oks_weight * -log(OKS(proxy keypoints))`` (+ a large
   constant unless the prior is both inside the box and near the centre); each person takes the ``k`` cheapest
   priors with ``k = max(1, int(sum of its top-10 OKS))`` and a prior claimed by two people goes to the cheaper;
3. losses over the positives, normalised as MMPose does: ``N`` = the number of positives averaged over the
   processes under DDP (at least 1), ``n`` = this process' positives:

   * ``cls``: VariFocal loss on every prior, target ``OKS^overlaps_power`` on positives, 0 elsewhere; sum / N;
   * ``bbox``: IoU loss ``1 - IoU^2`` of the decoded box; sum / N;
   * ``bbox_aux`` (only with a weight > 0): L1 of the raw box deltas against the deltas of the ground-truth box
     (:func:`bbox_aux_targets`); sum / N;
   * ``oks``: ``1 - OKS`` of the proxy (regression) keypoints, each keypoint weighted ``visible / K``; mean over n;
   * ``vis``: binary cross-entropy of the visibility logits against ``visible``; mean over n and K;
   * ``mle``: the DCC's maximum-likelihood loss (:func:`mle_cc_loss`), visibility-weighted; mean over n and K;

   and ``loss = sum_i weight_i * loss_i`` with the weights of :class:`RTMOLossWeights`. With
   ``proxy_target_cc`` (the official second phase) the regression branch is trained towards the DCC keypoints
   where those are closer to the ground truth, and the classification target becomes the OKS of the DCC
   keypoints.

The official schedule (``configs/body_2d_keypoint/rtmo/*/rtmo-*_600e_*.py``, :func:`mmpose_loss_schedule`): weights
cls 1, bbox 5, oks 30, vis 1, mle 1; from epoch 280 ``proxy_target_cc=True``, mle 5, oks 10 (MMPose's
``RTMOModeSwitchHook``); from epoch ``max_epochs - 21`` = 579 the auxiliary box loss with weight 1
(``YOLOXPoseModeSwitchHook``); here :class:`RTMOLossSchedule`, explicit config values. docs/training-parity.md
shows the assignment, every loss term of the three phases and the gradients against MMPose's own training dump.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from posekit.models.heads.rtmo import bbox_xyxy_to_cs

__all__ = [
    "RTMOLossWeights",
    "RTMOLossSchedule",
    "mmpose_loss_schedule",
    "mmpose_aux_epoch",
    "SimOTAAssigner",
    "RTMOCriterion",
    "box_iou_torch",
    "pose_oks",
    "varifocal_loss",
    "iou_loss",
    "oks_loss",
    "mle_target_heatmaps",
    "mle_cc_loss",
    "bbox_aux_targets",
]

_INF = 100000.0
_EPS = 1e-7


# ------------------------------------------------------------------------------------------------ weights
@dataclass(frozen=True)
class RTMOLossWeights:
    """Loss weights and the switches of the official schedule (defaults: the first phase)."""

    cls: float = 1.0
    bbox: float = 5.0
    oks: float = 30.0
    vis: float = 1.0
    mle: float = 1.0
    proxy_target_cc: bool = False
    overlaps_power: float = 0.5
    #: L1 loss on the raw box deltas of the positives (MMPose's ``loss_bbox_aux``, switched on by
    #: ``YOLOXPoseModeSwitchHook`` for the last 21 epochs of the official recipe); 0 = off
    bbox_aux: float = 0.0

    def replace(self, **kw: Any) -> "RTMOLossWeights":
        names = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(kw) - names)
        if bad:
            raise ValueError(f"unknown RTMO loss weight(s) {bad}; valid: {sorted(names)}")
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]], where: str = "loss") -> "RTMOLossWeights":
        d = dict(d or {})
        try:
            out = cls().replace(**d)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        for f in dataclasses.fields(out):
            v = getattr(out, f.name)
            if f.name == "proxy_target_cc":
                if not isinstance(v, bool):
                    raise ValueError(f"{where}.proxy_target_cc must be true/false, got {v!r}")
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{where}.{f.name} must be a number >= 0, got {v!r}")
        return out


@dataclass(frozen=True)
class RTMOLossSchedule:
    """``base`` weights, updated by ``switch`` from epoch ``switch_epoch`` on and by ``aux`` from ``aux_epoch`` on
    (0-based epochs; None: never; the two changes accumulate).

    MMPose's official RTMO recipe (600 epochs) is :func:`mmpose_loss_schedule`: ``RTMOModeSwitchHook`` sets
    ``proxy_target_cc``, mle 5 and oks 10 before epoch 280, and ``YOLOXPoseModeSwitchHook(num_last_epochs=20)``
    switches the auxiliary L1 box loss on before epoch ``max_epochs - 21`` = 579 (it fires when
    ``epoch + 1 == max_epochs - num_last_epochs``) and keeps it on to the end.
    """

    base: RTMOLossWeights = field(default_factory=RTMOLossWeights)
    switch_epoch: Optional[int] = None
    switch: Mapping[str, Any] = field(default_factory=dict)
    aux_epoch: Optional[int] = None
    aux: Mapping[str, Any] = field(default_factory=lambda: {"bbox_aux": 1.0})

    def at(self, epoch: int) -> RTMOLossWeights:
        w = self.base
        if self.switch_epoch is not None and epoch >= self.switch_epoch:
            w = w.replace(**dict(self.switch))
        if self.aux_epoch is not None and epoch >= self.aux_epoch:
            w = w.replace(**dict(self.aux))
        return w


#: the fields MMPose's ``RTMOModeSwitchHook`` changes at epoch 280 of the official configs
MMPOSE_SWITCH = {"proxy_target_cc": True, "mle": 5.0, "oks": 10.0}
MMPOSE_SWITCH_EPOCH = 280


def mmpose_aux_epoch(max_epochs: int, num_last_epochs: int = 20) -> Optional[int]:
    """The first epoch (0-based) with the auxiliary box loss under ``YOLOXPoseModeSwitchHook``: the hook fires
    before epoch ``max_epochs - num_last_epochs - 1`` (None when that is before epoch 0)."""
    e = int(max_epochs) - int(num_last_epochs) - 1
    return e if e >= 0 else None


def mmpose_loss_schedule(max_epochs: int = 600) -> RTMOLossSchedule:
    """MMPose's official RTMO loss schedule for a run of ``max_epochs`` epochs (the configs use 600)."""
    return RTMOLossSchedule(switch_epoch=MMPOSE_SWITCH_EPOCH, switch=dict(MMPOSE_SWITCH),
                            aux_epoch=mmpose_aux_epoch(max_epochs))


OFFICIAL_SCHEDULE = mmpose_loss_schedule(600)


# ------------------------------------------------------------------------------------------------ metrics
def box_iou_torch(a: torch.Tensor, b: torch.Tensor, aligned: bool = False, eps: float = 1e-6) -> torch.Tensor:
    """IoU of xyxy boxes: ``(N, M)`` pairwise, or ``(N,)`` for ``aligned`` pairs; union clamped to ``eps``."""
    if aligned:
        lt = torch.maximum(a[..., :2], b[..., :2])
        rb = torch.minimum(a[..., 2:], b[..., 2:])
        area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
        area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    else:
        lt = torch.maximum(a[:, None, :2], b[None, :, :2])
        rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
        area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
        area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a + area_b - inter).clamp(min=eps)


def pose_oks(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, areas: torch.Tensor,
             sigmas: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """OKS ``sum_k w_k exp(-d_k^2 / (2 s^2 (2 sigma_k)^2)) / sum_k w_k`` with ``s^2 = area``.

    Broadcasting shapes: ``pred``/``target (..., K, 2)``, ``weights (..., K)``, ``areas (...)``, ``sigmas (K,)``.
    """
    d = torch.linalg.norm(pred - target, dim=-1)
    d = d / areas.sqrt().clamp(min=eps).unsqueeze(-1) / (sigmas * 2.0)
    w = weights / weights.sum(dim=-1, keepdim=True).clamp(min=eps)
    return (torch.exp(-d.pow(2) / 2) * w).sum(dim=-1)


# ------------------------------------------------------------------------------------------------ assigner
@dataclass
class SimOTAAssigner:
    """SimOTA with dynamic k (MMPose ``SimOTAAssigner`` with ``dynamic_k_indicator='oks'``,
    ``use_keypoints_for_center=True``, the settings of every official RTMO config)."""

    center_radius: float = 2.5
    candidate_topk: int = 10
    iou_weight: float = 3.0
    cls_weight: float = 1.0
    oks_weight: float = 3.0
    vis_weight: float = 0.0
    dynamic_k_indicator: str = "oks"
    use_keypoints_for_center: bool = True

    def __post_init__(self) -> None:
        if self.dynamic_k_indicator not in ("oks", "iou"):
            raise ValueError(f"assigner.dynamic_k_indicator must be 'oks' or 'iou', got {self.dynamic_k_indicator!r}")
        if self.candidate_topk < 1 or self.center_radius <= 0:
            raise ValueError(f"assigner: candidate_topk must be >= 1 and center_radius > 0, got "
                             f"{self.candidate_topk}, {self.center_radius}")

    def candidates(self, priors: torch.Tensor, strides: torch.Tensor, gt_boxes: torch.Tensor,
                   gt_kpts: torch.Tensor, gt_vis: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``valid (P,)``: the prior is inside some box or near some centre; ``in_both (V, G)`` for the valid ones:
        inside that person's box AND within ``center_radius * stride`` of its centre (strict inequalities, the
        centre window's edges computed as ``centre -+ radius * stride`` as MMPose does, so boundary cases round
        the same way)."""
        x, y = priors[:, 0:1], priors[:, 1:2]
        in_box = (x > gt_boxes[:, 0]) & (y > gt_boxes[:, 1]) & (x < gt_boxes[:, 2]) & (y < gt_boxes[:, 3])
        ctr = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2.0
        if self.use_keypoints_for_center:
            n = gt_vis.sum(-1, keepdim=True)
            kc = (gt_kpts * gt_vis.unsqueeze(-1)).sum(-2) / n.clamp(min=1e-12)
            ctr = torch.where(n > 0, kc.to(ctr.dtype), ctr)
        r = self.center_radius * strides[:, None]
        in_ctr = ((x > ctr[:, 0] - r) & (y > ctr[:, 1] - r) & (x < ctr[:, 0] + r) & (y < ctr[:, 1] + r))
        valid = in_box.any(1) | in_ctr.any(1)
        return valid, (in_box & in_ctr)[valid]

    @torch.no_grad()
    def assign(self, priors: torch.Tensor, strides: torch.Tensor, scores: torch.Tensor, boxes: torch.Tensor,
               kpts: torch.Tensor, kpt_vis: torch.Tensor, gt_boxes: torch.Tensor, gt_kpts: torch.Tensor,
               gt_vis: torch.Tensor, gt_areas: torch.Tensor, sigmas: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Match the ``P`` priors of one image to its ``G`` people.

        Args:
            priors ``(P, 2)``, strides ``(P,)``; predictions per prior: scores ``(P,)`` in [0, 1], boxes ``(P, 4)``,
            kpts ``(P, K, 2)``, kpt_vis ``(P, K)`` probabilities; ground truth: gt_boxes ``(G, 4)``,
            gt_kpts ``(G, K, 2)``, gt_vis ``(G, K)``, gt_areas ``(G,)``; sigmas ``(K,)``.

        Returns:
            ``gt_inds (P,)`` int64: the matched person (``-1``: background) and ``overlaps (P,)``: the matched pair's
            OKS (or IoU with ``dynamic_k_indicator='iou'``), 0 for background. When some prior is a candidate, also
            the intermediate values (MMPose's names): ``valid (P,)`` (inside a box or a centre window),
            ``in_both (V, G)``, ``cost (V, G)``, ``oks`` / ``ious (V, G)`` (pairwise), ``quality`` (the one of
            the two that sets k) and ``dynamic_ks (G,)``.
        """
        P, G = priors.shape[0], gt_boxes.shape[0]
        gt_inds = torch.full((P,), -1, dtype=torch.long, device=priors.device)
        overlaps = priors.new_zeros(P)
        if G == 0 or P == 0:
            return {"gt_inds": gt_inds, "overlaps": overlaps}
        valid, in_both = self.candidates(priors, strides, gt_boxes, gt_kpts, gt_vis)
        V = int(valid.sum())
        if V == 0:
            return {"gt_inds": gt_inds, "overlaps": overlaps}
        cost = (~in_both).to(priors.dtype) * _INF
        ious = box_iou_torch(boxes[valid], gt_boxes)
        if self.iou_weight > 0:
            cost = cost + -torch.log(ious + _EPS) * self.iou_weight
        oks = pose_oks(kpts[valid][:, None], gt_kpts[None], gt_vis[None], gt_areas[None], sigmas)
        if self.oks_weight > 0:
            cost = cost + -torch.log(oks + _EPS) * self.oks_weight
        if self.cls_weight > 0:
            # BCE(score, 1) as torch computes it (log clamped at -100)
            cost = cost + -torch.log(scores[valid].float()).clamp(min=-100.0)[:, None] * self.cls_weight
        if self.vis_weight > 0:
            bce = F.binary_cross_entropy(kpt_vis[valid][:, None].expand(-1, G, -1).float(),
                                         gt_vis[None].expand(V, -1, -1).float(), reduction="none").sum(-1)
            cost = cost + bce * self.vis_weight
        quality = oks if self.dynamic_k_indicator == "oks" else ious
        topk = min(self.candidate_topk, V)
        ks = quality.topk(topk, dim=0).values.sum(0).int().clamp(min=1)  # (G,)
        # each person's k cheapest priors; torch.topk breaks exact ties (e.g. the 1e5 of priors outside the box
        # and centre window) in the same order as MMPose's
        match = torch.zeros((V, G), dtype=torch.bool, device=cost.device)
        for g in range(G):
            match[cost[:, g].topk(int(ks[g]), largest=False).indices, g] = True
        multi = match.sum(1) > 1
        if bool(multi.any()):
            best = cost[multi].argmin(1)
            match[multi] = False
            match[multi.nonzero().squeeze(1), best] = True
        fg = match.any(1)
        matched = match.float().argmax(1)
        vidx = valid.nonzero().squeeze(1)
        gt_inds[vidx[fg]] = matched[fg]
        overlaps[vidx[fg]] = quality[fg, matched[fg]].to(overlaps.dtype)
        return {"gt_inds": gt_inds, "overlaps": overlaps, "valid": valid, "in_both": in_both, "cost": cost,
                "oks": oks, "ious": ious, "quality": quality, "dynamic_ks": ks}


# ------------------------------------------------------------------------------------------------ losses
def varifocal_loss(logits: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None,
                   alpha: float = 0.75, gamma: float = 2.0) -> torch.Tensor:
    """Element-wise VariFocal loss (MMPose's): ``BCE(clip(x, -10, 10), t) * (t + alpha sigmoid(x)^gamma [t <= 1e-4])``.

    Positives (``t > 1e-4``) are weighted by their soft target, negatives are down-weighted by the predicted
    probability. Returns the unreduced loss (same shape as ``logits``), ``weight``-ed; inf/nan entries are 0.
    """
    label = (target > 1e-4).to(target.dtype)
    w = alpha * logits.sigmoid().pow(gamma) * (1.0 - label) + target
    loss = F.binary_cross_entropy_with_logits(logits.clamp(-10.0, 10.0), target, reduction="none") * w
    if weight is not None:
        loss = loss * weight
    return torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0)


def iou_loss(pred: torch.Tensor, target: torch.Tensor, mode: str = "square", eps: float = 1e-16) -> torch.Tensor:
    """Per-pair IoU loss of aligned xyxy boxes ``(N, 4)``: ``1 - IoU`` (linear), ``1 - IoU^2`` (square, the RTMO
    setting) or ``-log IoU`` (log), IoU clamped to ``eps``."""
    iou = box_iou_torch(pred, target, aligned=True).clamp(min=eps)
    if mode == "linear":
        return 1.0 - iou
    if mode == "square":
        return 1.0 - iou.pow(2)
    if mode == "log":
        return -iou.log()
    raise ValueError(f"iou_loss mode must be 'linear', 'square' or 'log', got {mode!r}")


def oks_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, areas: torch.Tensor,
             sigmas: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-instance ``1 - OKS`` with each keypoint weighted ``weights / K`` (MMPose ``OKSLoss``, linear mode,
    ``norm_target_weight=False``). ``pred``/``target (N, K, 2)``, ``weights (N, K)``, ``areas (N,)``."""
    d = torch.linalg.norm(pred - target, dim=-1)
    d = d / areas.sqrt().clamp(min=eps).unsqueeze(-1) / (sigmas * 2.0)
    oks = (torch.exp(-d.pow(2) / 2) * (weights / weights.shape[-1])).sum(-1)
    return 1.0 - oks


def mle_target_heatmaps(dcc, kpt_targets: torch.Tensor, bbox_cs: torch.Tensor, sigmas: torch.Tensor,
                        areas: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The Laplace likelihood of the annotated coordinate at every bin:
    ``(1/sigma) exp(-|b_i - mu| / (2 sigma s))`` with ``s = sqrt(area)`` (clamped >= 1), ``sigma`` clamped >= 1e-3.

    ``kpt_targets (N, K, 2)``, ``bbox_cs (N, 4)``, ``sigmas (N, K)``, ``areas (N,)`` -> ``(N, K, B_x)``,
    ``(N, K, B_y)``. Gradients flow into ``sigmas`` and ``bbox_cs`` (the bins follow the predicted box).
    """
    xb, yb = dcc.bin_positions(bbox_cs)  # (N, B_x), (N, B_y)
    s = areas.clamp(min=0).sqrt().clamp(min=1.0).reshape(-1, 1, 1)
    sig = sigmas.clamp(min=1e-3).unsqueeze(-1)
    dx = (kpt_targets[..., 0:1] - xb.unsqueeze(1)).abs() / s / sig
    dy = (kpt_targets[..., 1:2] - yb.unsqueeze(1)).abs() / s / sig
    return torch.exp(-dx / 2.0) / sig, torch.exp(-dy / 2.0) / sig


def mle_cc_loss(probs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-keypoint MLE loss of the coordinate classifier (MMPose ``MLECCLoss``, log mode):
    ``-log(prod_axis sum_i p_axis(b_i) t_axis(b_i) + 1e-4)`` = the sum over x and y of ``-log`` of each axis'
    likelihood (up to the 1e-4). ``probs``/``targets``: ``((N, K, B_x), (N, K, B_y))``; returns ``(N, K)``
    (times ``weights (N, K)``), nan entries 0."""
    prob = 1.0
    for p, t in zip(probs, targets):
        prob = prob * (p * t).sum(-1)
    loss = -torch.log(prob + 1e-4)
    loss = torch.nan_to_num(loss, nan=0.0)
    return loss if weights is None else loss * weights


def _global_mean(x: float, device) -> float:
    """Mean of ``x`` over the processes of a torch.distributed run (x itself otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([float(x)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item()) / dist.get_world_size()
    return float(x)


# ------------------------------------------------------------------------------------------------ criterion
class RTMOCriterion:
    """The RTMO training loss for a :class:`~posekit.models.rtmo.RTMO` (see the module docstring).

    Args:
        head: the model's :class:`~posekit.models.heads.rtmo.RTMOHead` (priors, decoding, the DCC, the sigmas).
        assigner: a :class:`SimOTAAssigner` (default: the official settings).
    """

    def __init__(self, head, assigner: Optional[SimOTAAssigner] = None,
                 easy_keypoints: Optional[Sequence[int]] = None) -> None:
        self.head = head
        self.assigner = assigner or SimOTAAssigner()
        k = head.num_keypoints
        easy = tuple(int(i) for i in (easy_keypoints or ()))
        bad = [i for i in easy if not 0 <= i < k]
        if bad:
            raise ValueError(f"RTMOCriterion easy_keypoints {bad} out of range 0..{k - 1}")
        self.easy_keypoints = easy

    @torch.no_grad()
    def targets(self, raw: Mapping[str, List[torch.Tensor]], gts: Sequence[Mapping[str, torch.Tensor]]) -> dict:
        """Assignment for a batch: positive indices into the flattened ``(B * P)`` priors (image 0 first, ascending
        prior index), their targets and, under ``assign``, each image's :meth:`SimOTAAssigner.assign` result plus
        the assignment score ``sqrt(sigmoid(cls))`` of every prior (``scores_sqrt``)."""
        head = self.head
        priors, strides = head.priors_for(raw)
        P = priors.shape[0]
        scores = head.flatten_levels(raw["cls_scores"]).float().clamp(-1e4, 1e4).sigmoid().max(-1).values
        scores = torch.nan_to_num(scores, nan=0.0).sqrt()
        boxes = head.decode_boxes(head.flatten_levels(raw["bbox_preds"]).float(), priors, strides)
        kpts = head.decode_kpt_offsets(head.flatten_levels(raw["kpt_offsets"]).float(), priors, strides)
        vis = head.flatten_levels(raw["kpt_vis"]).float().clamp(-1e4, 1e4).sigmoid()
        sigmas = head.loss_oks.sigmas
        pos, gt_idx, ovl, img_of, per_image = [], [], [], [], []
        for b, gt in enumerate(gts):
            a = self.assigner.assign(priors, strides, scores[b], boxes[b], kpts[b], vis[b], gt["boxes"],
                                     gt["keypoints"], gt["visible"], gt["areas"], sigmas)
            per_image.append({**a, "scores_sqrt": scores[b]})
            p = (a["gt_inds"] >= 0).nonzero().squeeze(1)
            pos.append(p + b * P)
            gt_idx.append(a["gt_inds"][p])
            ovl.append(a["overlaps"][p])
            img_of.append(torch.full_like(p, b))
        cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0, dtype=torch.long, device=priors.device)  # noqa: E731
        pos, gt_idx, img_of = cat(pos), cat(gt_idx), cat(img_of)
        ovl = torch.cat(ovl) if len(gts) else priors.new_zeros(0)
        out = {"pos": pos, "overlaps": ovl, "priors": priors, "strides": strides, "assign": per_image,
               "num_pos_per_img": [int((a["gt_inds"] >= 0).sum()) for a in per_image]}
        if pos.numel():
            pick = lambda key: torch.cat([gts[int(b)][key][int(g)][None] for b, g in zip(img_of, gt_idx)])  # noqa: E731
            out.update(boxes=pick("boxes"), keypoints=pick("keypoints"), visible=pick("visible"),
                       areas=pick("areas"), prior_xy=priors[pos % P], prior_stride=strides[pos % P])
        return out

    def __call__(self, raw: Mapping[str, List[torch.Tensor]], gts: Sequence[Mapping[str, torch.Tensor]],
                 weights: Optional[RTMOLossWeights] = None, details: Optional[dict] = None) -> Dict[str, torch.Tensor]:
        """Losses of a batch. ``raw``: the model's training-mode output (with ``kpt_offsets``); ``gts``: one
        ground-truth dict per image (see the module docstring).

        Returns a dict of scalar tensors: ``loss`` (weighted total), ``loss_cls``, ``loss_bbox``, ``loss_oks``,
        ``loss_vis``, ``loss_mle`` and, with ``weights.bbox_aux > 0``, ``loss_bbox_aux`` (unweighted), ``num_pos``
        and, when there are positives, the diagnostics (no gradient): ``overlaps`` (mean classification target of
        the positives before the power, MMPose's logged ``overlaps``), ``sigma`` (mean predicted DCC sigma over the
        labelled keypoints of the positives), ``sigma_easy`` (the same over ``easy_keypoints``, when given),
        ``oks_dcc`` / ``oks_reg`` (mean OKS of the DCC / regression keypoints), ``iou`` (mean IoU of the positives'
        boxes) and ``score_pos`` (mean classification probability of the positives).

        Normalisation (MMPose's): ``cls``, ``bbox`` and ``bbox_aux`` are sums divided by the number of positives
        averaged over the processes (at least 1); ``oks`` is the mean over this process' positives, ``vis`` and
        ``mle`` the mean over its positives and keypoints (on one process the two coincide).

        ``details``: a dict filled with the intermediate values (the ``targets`` result under ``targets``, the DCC
        outputs, the per-positive OKS and MLE losses, the classification targets), for parity checks.
        """
        w = weights or RTMOLossWeights()
        head = self.head
        if "kpt_offsets" not in raw:
            raise ValueError("RTMO training needs the kpt_offsets branch: run the model in training mode "
                             "(or forward(x, with_kpt_offsets=True))")
        if len(gts) != raw["cls_scores"][0].shape[0]:
            raise ValueError(f"{len(gts)} ground-truth dicts for a batch of {raw['cls_scores'][0].shape[0]} images")
        t = self.targets(raw, gts)
        priors, strides = t["priors"], t["strides"]
        cls = head.flatten_levels(raw["cls_scores"]).reshape(-1)
        dev = cls.device
        pos = t["pos"]
        n_pos = int(pos.numel())
        norm = max(_global_mean(n_pos, dev), 1.0)
        K = head.num_keypoints
        zero = cls.sum() * 0.0
        out: Dict[str, torch.Tensor] = {}
        cls_target = cls.new_zeros(cls.shape)
        if details is not None:
            details["targets"] = t
        if n_pos:
            B = raw["cls_scores"][0].shape[0]
            P = priors.shape[0]
            bbox_raw = head.flatten_levels(raw["bbox_preds"])
            bbox_all = head.decode_boxes(bbox_raw, priors, strides).reshape(B * P, 4)
            kreg_all = head.decode_kpt_offsets(head.flatten_levels(raw["kpt_offsets"]), priors, strides)
            kreg = kreg_all.reshape(B * P, K, 2)[pos]
            vis_logit = head.flatten_levels(raw["kpt_vis"]).reshape(B * P, K)[pos]
            pose = head.flatten_levels(raw["pose_feats"])
            pose = pose.reshape(B * P, pose.shape[-1])[pos]
            box = bbox_all[pos]
            gt_vis = t["visible"].to(cls.dtype)
            gt_kpts, areas = t["keypoints"], t["areas"]
            sig_oks = head.loss_oks.sigmas

            out["loss_bbox"] = iou_loss(box, t["boxes"], "square").sum() / norm
            if w.bbox_aux > 0:
                aux_t = bbox_aux_targets(t["boxes"], t["prior_xy"], t["prior_stride"])
                out["loss_bbox_aux"] = (bbox_raw.reshape(B * P, 4)[pos] - aux_t).abs().sum() / norm
                if details is not None:
                    details["bbox_aux_targets"] = aux_t
                    details["kpt_aux_targets"] = (gt_kpts - t["prior_xy"][:, None]) / t["prior_stride"][:, None, None]
            out["loss_vis"] = F.binary_cross_entropy_with_logits(vis_logit, gt_vis, reduction="none").mean()
            cs = bbox_xyxy_to_cs(box, head.bbox_padding)
            if n_pos == 1 and head.dcc.training:  # BatchNorm1d needs 2 rows in training mode
                kcc, (px, py), sig = head.dcc.forward_train(pose.repeat(2, 1), cs.repeat(2, 1),
                                                            t["prior_xy"].repeat(2, 1))
                kcc, px, py, sig = kcc[:1], px[:1], py[:1], sig[:1]
            else:
                kcc, (px, py), sig = head.dcc.forward_train(pose, cs, t["prior_xy"])
            tx, ty = mle_target_heatmaps(head.dcc, gt_kpts, cs, sig, areas)
            mle = mle_cc_loss((px, py), (tx, ty), gt_vis).mean(dim=1)
            out["loss_mle"] = mle.mean()
            if w.proxy_target_cc:
                with torch.no_grad():
                    closer = (torch.linalg.norm(kreg - gt_kpts, dim=-1) > torch.linalg.norm(kcc - gt_kpts, dim=-1))
                    cls_pos = pose_oks(kcc, gt_kpts, gt_vis, areas, sig_oks)
                oks_target, oks_weight = kcc.detach(), gt_vis * closer.to(gt_vis.dtype)
            else:
                cls_pos = t["overlaps"]
                oks_target, oks_weight = gt_kpts, gt_vis
            oks = oks_loss(kreg, oks_target, oks_weight, areas, sig_oks)
            out["loss_oks"] = oks.mean()
            cls_target[pos] = cls_pos.detach().clamp(min=0).pow(w.overlaps_power).to(cls_target.dtype)
            if details is not None:
                details.update(bbox_cs=cs, kpt_cc_preds=kcc, pred_hm_x=px, pred_hm_y=py, sigmas=sig,
                               target_hm_x=tx, target_hm_y=ty, mle_per_positive=mle, oks_per_positive=oks,
                               oks_pred=kreg, oks_target=oks_target, oks_target_weight=oks_weight,
                               cls_targets=cls_pos, kpt_reg_preds=kreg)
            with torch.no_grad():
                out["overlaps"] = cls_pos.detach().float().mean()
                sd = sig.detach()
                out["sigma"] = (sd * gt_vis).sum() / gt_vis.sum().clamp(min=1)
                if self.easy_keypoints:
                    ez = list(self.easy_keypoints)
                    ve = gt_vis[:, ez]
                    out["sigma_easy"] = (sd[:, ez] * ve).sum() / ve.sum().clamp(min=1)
                out["oks_dcc"] = pose_oks(kcc.detach(), gt_kpts, gt_vis, areas, sig_oks).mean()
                out["oks_reg"] = pose_oks(kreg.detach(), gt_kpts, gt_vis, areas, sig_oks).mean()
                out["iou"] = box_iou_torch(box.detach(), t["boxes"], aligned=True).mean()
                out["score_pos"] = cls.detach()[pos].sigmoid().mean()
        else:
            for k in ("loss_bbox", "loss_vis", "loss_mle", "loss_oks") + (("loss_bbox_aux",) if w.bbox_aux > 0 else ()):
                out[k] = zero
        out["loss_cls"] = varifocal_loss(cls, cls_target).sum() / norm
        if details is not None:
            details["obj_targets"] = cls_target
        out["loss"] = (w.cls * out["loss_cls"] + w.bbox * out["loss_bbox"] + w.oks * out["loss_oks"]
                       + w.vis * out["loss_vis"] + w.mle * out["loss_mle"])
        if w.bbox_aux > 0:
            out["loss"] = out["loss"] + w.bbox_aux * out["loss_bbox_aux"]
        if n_pos == 0:
            # keep every parameter in the graph (DDP) with a zero contribution
            out["loss"] = out["loss"] + sum(v.sum() * 0.0 for v in raw["pose_feats"] + raw["kpt_vis"]
                                            + raw["bbox_preds"] + raw["kpt_offsets"])
        out["num_pos"] = torch.tensor(float(n_pos))
        return out


def bbox_aux_targets(boxes: torch.Tensor, prior_xy: torch.Tensor, prior_stride: torch.Tensor) -> torch.Tensor:
    """The raw box deltas that decode to ``boxes (N, 4)`` xyxy at priors ``(N, 2)`` of stride ``(N,)``:
    ``((centre - prior) / stride, log(size / stride + 1e-8))`` (MMPose's ``bbox_aux_targets``)."""
    s = prior_stride[:, None]
    cxcy = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    wh = boxes[:, 2:] - boxes[:, :2]
    return torch.cat([(cxcy - prior_xy) / s, torch.log(wh / s + 1e-8)], dim=-1)
