"""Losses of the top-down family, with MMPose 1.x's definitions and defaults.

* :func:`keypoint_mse_loss` / :class:`KeypointMSELoss` (heatmaps): ``mean((pred - target)^2 * w)`` over
  ``(B, K, H, W)``, ``w`` the per-keypoint target weight broadcast over the map (``use_target_weight``), times
  ``loss_weight``.
* :func:`kl_discret_loss` / :class:`KLDiscretLoss` (SimCC, RTMPose's settings ``beta=10``,
  ``label_softmax=True``, ``label_beta=10``, ``use_target_weight=True``): for each axis,
  ``KL(softmax(label * label_beta) || softmax(pred * beta))`` averaged over the bins, weighted per keypoint,
  summed over keypoints and instances and divided by K; x and y losses are added.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["keypoint_mse_loss", "KeypointMSELoss", "kl_discret_loss", "KLDiscretLoss"]


def keypoint_mse_loss(pred: torch.Tensor, target: torch.Tensor, target_weight: Optional[torch.Tensor] = None,
                      loss_weight: float = 1.0) -> torch.Tensor:
    """MSE between heatmaps ``(B, K, H, W)``; ``target_weight`` ``(B, K)`` multiplies each keypoint's squared
    error (None: unweighted)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} heatmaps differ in shape")
    err = (pred - target) ** 2
    if target_weight is not None:
        if target_weight.shape != pred.shape[:2]:
            raise ValueError(f"target_weight must be (B, K) = {tuple(pred.shape[:2])}, got {tuple(target_weight.shape)}")
        err = err * target_weight[..., None, None].to(err.dtype)
    return err.mean() * loss_weight


class KeypointMSELoss(nn.Module):
    """Module form of :func:`keypoint_mse_loss` (``use_target_weight``, ``loss_weight``)."""

    def __init__(self, use_target_weight: bool = True, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.use_target_weight = use_target_weight
        self.loss_weight = loss_weight

    def forward(self, pred, target, target_weight=None):
        return keypoint_mse_loss(pred, target, target_weight if self.use_target_weight else None, self.loss_weight)


def kl_discret_loss(preds: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                    target_weight: Optional[torch.Tensor] = None, beta: float = 10.0, label_softmax: bool = True,
                    label_beta: float = 10.0, loss_weight: float = 1.0) -> torch.Tensor:
    """SimCC KL loss. ``preds`` / ``targets``: per-axis ``(B, K, W_axis)`` logits / labels (e.g.
    ``(pred_x, pred_y)``); ``target_weight`` ``(B, K)`` or None."""
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    K = preds[0].shape[1]
    weight = target_weight.reshape(-1) if target_weight is not None else 1.0
    total = preds[0].new_zeros(())
    for p, t in zip(preds, targets):
        if p.shape != t.shape:
            raise ValueError(f"SimCC pred {tuple(p.shape)} and label {tuple(t.shape)} differ in shape")
        p = p.reshape(-1, p.shape[-1])
        t = t.reshape(-1, t.shape[-1])
        log_pt = F.log_softmax(p * beta, dim=1)
        if label_softmax:
            t = F.softmax(t * label_beta, dim=1)
        kl = F.kl_div(log_pt, t, reduction="none").mean(dim=1)
        total = total + (kl * weight).sum()
    return total / K * loss_weight


class KLDiscretLoss(nn.Module):
    """Module form of :func:`kl_discret_loss` (RTMPose defaults)."""

    def __init__(self, beta: float = 10.0, label_softmax: bool = True, label_beta: float = 10.0,
                 use_target_weight: bool = True, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.beta, self.label_softmax, self.label_beta = beta, label_softmax, label_beta
        self.use_target_weight, self.loss_weight = use_target_weight, loss_weight

    def forward(self, preds, targets, target_weight=None):
        return kl_discret_loss(preds, targets, target_weight if self.use_target_weight else None, self.beta,
                               self.label_softmax, self.label_beta, self.loss_weight)
