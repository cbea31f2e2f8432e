"""Losses of the multi-stage top-down models: CPM / Stacked Hourglass stage L2 and CPN's GlobalNet L2 plus
RefineNet online hard keypoint mining (OHKM).

Shapes: heatmaps ``(B, K, h, w)``; keypoint weights ``(B, K)`` (the codec's ``keypoint_weights``: 1 for a
keypoint with a target, 0 otherwise; None = all ones).

* :func:`keypoint_mse` -- MMPose's ``KeypointMSELoss``: ``mean((w * (pred - target))**2)`` over every element
  (computed with :func:`posekit.losses.masked_l2`, mask ``w**2``).
* :func:`stage_l2_loss` -- CPM's objective ``F = sum_t f_t``: the same L2 at the end of every stage (or every
  hourglass stack: intermediate supervision), summed.
* :func:`keypoint_ohkm_losses` / :func:`ohkm_loss` -- per keypoint ``l_k = mean_pixels((w_k (p_k - t_k))**2)``;
  for each sample only its ``topk`` largest ``l_k`` count: ``mean_b (sum of the top-k l_k of b) / topk``
  (MMPose ``KeypointOHKMMSELoss``, CPN's RefineNet loss with ``topk = 8`` of 17).
* :func:`cpn_loss` -- ``sum_levels keypoint_mse(global_l)`` + ``ohkm_loss(refine)``.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from posekit.losses.openpose import masked_l2

__all__ = ["keypoint_mse", "stage_l2_loss", "keypoint_ohkm_losses", "ohkm_loss", "cpn_loss", "StageL2Loss",
           "CPNLoss"]


def _weights(pred: torch.Tensor, target_weight: Optional[torch.Tensor], where: str) -> Optional[torch.Tensor]:
    if target_weight is None:
        return None
    w = torch.as_tensor(target_weight, dtype=pred.dtype, device=pred.device)
    if w.shape != pred.shape[:2]:
        raise ValueError(f"{where}: target_weight must be (B, K) = {tuple(pred.shape[:2])}, got {tuple(w.shape)}")
    return w[:, :, None, None]


def _check(pred: torch.Tensor, target: torch.Tensor, where: str) -> None:
    if pred.ndim != 4:
        raise ValueError(f"{where}: heatmaps must be (B, K, h, w), got {tuple(pred.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"{where}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")


def keypoint_mse(pred: torch.Tensor, target: torch.Tensor,
                 target_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``mean((w * (pred - target))**2)`` over ``B * K * h * w`` elements (MMPose ``KeypointMSELoss``)."""
    _check(pred, target, "keypoint_mse")
    w = _weights(pred, target_weight, "keypoint_mse")
    return masked_l2(pred, target, None if w is None else w * w, reduction="mean")


def stage_l2_loss(stage_heatmaps: Sequence[torch.Tensor], target: torch.Tensor,
                  target_weight: Optional[torch.Tensor] = None) -> dict:
    """CPM / Hourglass intermediate supervision: ``F = sum_t f_t`` with ``f_t = keypoint_mse(b_t, target)``.

    Args:
        stage_heatmaps: per-stage (per-stack) predictions ``(B, C, h, w)``, stage 1 first (``C = K`` or ``K + 1``
            with CPM's background map; the target then has the background channel too).
        target: ``(B, C, h, w)``.
        target_weight: ``(B, K)`` or ``(B, C)``; with ``C = K + 1`` a ``(B, K)`` weight is extended with 1 for
            the background map.

    Returns:
        ``{"loss": F, "loss_stage1": f_1, ...}``.
    """
    if len(stage_heatmaps) == 0:
        raise ValueError("stage_l2_loss: no stage predictions")
    if target_weight is not None and target_weight.shape[1] == target.shape[1] - 1:
        ones = torch.ones_like(target_weight[:, :1])
        target_weight = torch.cat([target_weight, ones], dim=1)
    out = {}
    for t, pred in enumerate(stage_heatmaps, 1):
        out[f"loss_stage{t}"] = keypoint_mse(pred, target, target_weight)
    out["loss"] = torch.stack([out[f"loss_stage{t}"] for t in range(1, len(stage_heatmaps) + 1)]).sum()
    return out


def keypoint_ohkm_losses(pred: torch.Tensor, target: torch.Tensor,
                         target_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-keypoint losses ``(B, K)``: ``l[b, k] = mean_pixels((w[b, k] * (pred - target)[b, k])**2)``."""
    _check(pred, target, "keypoint_ohkm_losses")
    w = _weights(pred, target_weight, "keypoint_ohkm_losses")
    d = pred - target
    if w is not None:
        d = d * w
    return (d * d).mean(dim=(2, 3))


def ohkm_loss(pred: torch.Tensor, target: torch.Tensor, target_weight: Optional[torch.Tensor] = None,
              topk: int = 8) -> torch.Tensor:
    """Online hard keypoint mining: the mean over the batch of ``(sum of the topk largest l[b, k]) / topk``.

    Only the ``topk`` hardest keypoints of each sample get a gradient. ``topk`` must be in ``1..K``.
    """
    losses = keypoint_ohkm_losses(pred, target, target_weight)
    K = losses.shape[1]
    if not 1 <= int(topk) <= K:
        raise ValueError(f"ohkm_loss: topk must be in 1..K={K}, got {topk}")
    top = torch.topk(losses, k=int(topk), dim=1, sorted=False).values
    return (top.sum(dim=1) / int(topk)).mean()


def cpn_loss(global_heatmaps: Sequence[torch.Tensor], refine_heatmaps: torch.Tensor,
             global_targets: Union[torch.Tensor, Sequence[torch.Tensor]], refine_target: torch.Tensor,
             target_weight: Optional[torch.Tensor] = None, topk: int = 8) -> dict:
    """CPN: GlobalNet L2 at every pyramid level (summed) + RefineNet OHKM.

    Args:
        global_heatmaps: GlobalNet predictions, one ``(B, K, h, w)`` per level (deepest level first).
        refine_heatmaps: RefineNet prediction ``(B, K, h, w)``.
        global_targets: one target for every level, or a list with one per level (the CPN paper uses wider
            Gaussians for the coarser levels).
        refine_target: ``(B, K, h, w)``.
        target_weight: ``(B, K)``.
        topk: hard keypoints kept per sample by the refine loss.

    Returns:
        ``{"loss", "loss_global", "loss_refine", "loss_global_level{i}"}`` (levels numbered from 1).
    """
    if len(global_heatmaps) == 0:
        raise ValueError("cpn_loss: no GlobalNet predictions")
    if isinstance(global_targets, torch.Tensor):
        global_targets = [global_targets] * len(global_heatmaps)
    if len(global_targets) != len(global_heatmaps):
        raise ValueError(f"cpn_loss: {len(global_targets)} global targets for {len(global_heatmaps)} levels")
    out = {}
    for i, (p, t) in enumerate(zip(global_heatmaps, global_targets), 1):
        out[f"loss_global_level{i}"] = keypoint_mse(p, t, target_weight)
    out["loss_global"] = torch.stack([out[f"loss_global_level{i}"] for i in range(1, len(global_heatmaps) + 1)]).sum()
    out["loss_refine"] = ohkm_loss(refine_heatmaps, refine_target, target_weight, topk)
    out["loss"] = out["loss_global"] + out["loss_refine"]
    return out


class StageL2Loss(nn.Module):
    """:func:`stage_l2_loss` on a model's raw output: ``forward(raw, targets)`` with ``raw["stage_heatmaps"]``
    and ``targets = {"heatmaps": (B, C, h, w), "keypoint_weights": (B, K) (optional)}``."""

    def forward(self, raw: dict, targets: dict) -> dict:
        if "heatmaps" not in targets:
            raise KeyError(f"StageL2Loss: targets have no 'heatmaps' (got {sorted(targets)})")
        if "stage_heatmaps" not in raw:
            raise KeyError(f"StageL2Loss: model output has no 'stage_heatmaps' (got {sorted(raw)})")
        return stage_l2_loss(raw["stage_heatmaps"], targets["heatmaps"], targets.get("keypoint_weights"))


class CPNLoss(nn.Module):
    """:func:`cpn_loss` on a CPN's raw output (``global_heatmaps``, ``heatmaps``) and targets
    ``{"heatmaps", "keypoint_weights" (optional), "global_heatmaps" (optional list per level)}``."""

    def __init__(self, topk: int = 8) -> None:
        super().__init__()
        self.topk = int(topk)

    def forward(self, raw: dict, targets: dict) -> dict:
        if "heatmaps" not in targets:
            raise KeyError(f"CPNLoss: targets have no 'heatmaps' (got {sorted(targets)})")
        for key in ("global_heatmaps", "heatmaps"):
            if key not in raw:
                raise KeyError(f"CPNLoss: model output has no {key!r} (got {sorted(raw)})")
        g_t = targets.get("global_heatmaps", targets["heatmaps"])
        return cpn_loss(raw["global_heatmaps"], raw["heatmaps"], g_t, targets["heatmaps"],
                        targets.get("keypoint_weights"), self.topk)
