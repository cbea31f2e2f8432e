"""Training losses.

OpenPose (the seed's masked stage L2): at the end of every stage ``t``

    f_L^t = sum_p sum_c W(p) * |L_c^t(p) - L*_c(p)|^2        f_S^t = sum_p sum_j W(p) * |S_j^t(p) - S*_j(p)|^2

and the total is ``f = sum_t f_L^t + sum_t f_S^t`` over all PAF stages and all confidence stages. ``W`` is the
binary mask of :class:`posekit.codecs.paf.PafCodec` (0 over crowd regions and unannotated people).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

__all__ = ["masked_l2", "openpose_loss", "OpenPoseLoss"]

_REDUCTIONS = ("batch", "sum", "mean")


def masked_l2(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
              reduction: str = "batch") -> torch.Tensor:
    """``sum_p sum_c W(p) * (pred_c(p) - target_c(p))^2``.

    Args:
        pred, target: ``(B, C, h, w)``.
        mask: ``W`` as ``(B, h, w)`` or ``(B, 1, h, w)`` (or anything broadcastable to ``pred``); None = all ones.
        reduction: ``"batch"`` -- the per-image sum averaged over the batch (default); ``"sum"`` -- summed over
            the batch too; ``"mean"`` -- divided by the number of elements ``B * C * h * w``.

    Returns:
        a scalar tensor.
    """
    if pred.shape != target.shape:
        raise ValueError(f"masked_l2: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"masked_l2: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    sq = (pred - target) ** 2
    if mask is not None:
        m = mask.to(sq.dtype)
        if m.dim() == pred.dim() - 1:
            m = m.unsqueeze(1)
        try:
            sq = sq * m
        except RuntimeError as e:
            raise ValueError(f"masked_l2: mask of shape {tuple(mask.shape)} does not broadcast to "
                             f"{tuple(pred.shape)}") from e
    total = sq.sum()
    if reduction == "batch":
        return total / pred.shape[0]
    if reduction == "mean":
        return total / pred.numel()
    return total


def openpose_loss(stage_pafs: Sequence[torch.Tensor], stage_heatmaps: Sequence[torch.Tensor],
                  paf_target: torch.Tensor, heatmap_target: torch.Tensor, mask: torch.Tensor | None = None,
                  reduction: str = "batch") -> dict:
    """The masked stage L2 of OpenPose, summed over every stage of both branches.

    Args:
        stage_pafs: per-stage PAF predictions ``(B, C, h, w)`` (``raw["stage_pafs"]`` of an OpenPose model).
        stage_heatmaps: per-stage confidence maps ``(B, J, h, w)``.
        paf_target, heatmap_target: ``L*`` ``(B, C, h, w)`` and ``S*`` ``(B, J, h, w)``.
        mask: ``W`` ``(B, h, w)``.
        reduction: see :func:`masked_l2`.

    Returns:
        ``{"loss": f, "loss_paf": sum_t f_L^t, "loss_heatmap": sum_t f_S^t, "loss_paf_stage{t}": f_L^t,
        "loss_heatmap_stage{t}": f_S^t}`` (stages numbered from 1 within each branch).
    """
    if len(stage_pafs) == 0 or len(stage_heatmaps) == 0:
        raise ValueError("openpose_loss: need at least one PAF stage and one confidence stage")
    out: dict = {}
    paf_terms = []
    for t, p in enumerate(stage_pafs, 1):
        out[f"loss_paf_stage{t}"] = masked_l2(p, paf_target, mask, reduction)
        paf_terms.append(out[f"loss_paf_stage{t}"])
    heat_terms = []
    for t, s in enumerate(stage_heatmaps, 1):
        out[f"loss_heatmap_stage{t}"] = masked_l2(s, heatmap_target, mask, reduction)
        heat_terms.append(out[f"loss_heatmap_stage{t}"])
    out["loss_paf"] = torch.stack(paf_terms).sum()
    out["loss_heatmap"] = torch.stack(heat_terms).sum()
    out["loss"] = out["loss_paf"] + out["loss_heatmap"]
    return out


class OpenPoseLoss(nn.Module):
    """:func:`openpose_loss` on a model's raw output and a batch of codec targets.

    ``forward(raw, targets)`` with ``raw`` from ``OpenPose.forward`` (``stage_pafs``, ``stage_heatmaps``) and
    ``targets`` = ``{"pafs": (B, C, h, w), "heatmaps": (B, J, h, w), "mask": (B, h, w)}`` (the batched output of
    :meth:`posekit.codecs.paf.PafCodec.encode`; ``mask`` optional). Returns the dict of :func:`openpose_loss`.
    """

    def __init__(self, reduction: str = "batch") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"OpenPoseLoss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, raw: dict, targets: dict) -> dict:
        for key in ("pafs", "heatmaps"):
            if key not in targets:
                raise KeyError(f"OpenPoseLoss: targets have no {key!r} (got {sorted(targets)})")
        return openpose_loss(raw["stage_pafs"], raw["stage_heatmaps"], targets["pafs"], targets["heatmaps"],
                             targets.get("mask"), self.reduction)
