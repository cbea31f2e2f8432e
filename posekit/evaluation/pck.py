"""PCK (percentage of correct keypoints) with a per-instance normaliser: PCKh (MPII) and bbox-normalised PCK.

A keypoint is correct when ``|pred - gt| / norm <= thr``, counted only where the ground truth is visible.
All inputs are matched instances (prediction ``i`` belongs to ground truth ``i``) in image pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["PCKResult", "pck", "pckh", "pck_bbox", "head_sizes_from_boxes", "head_sizes_from_segment"]

#: MPII's ``SC_BIAS``: the head size is 0.6 times the diagonal of the annotated head box.
MPII_HEAD_BIAS = 0.6


class PCKResult(NamedTuple):
    """Per-joint and overall PCK.

    Attributes:
        per_joint: ``(K,)`` fraction of visible joints within the threshold; NaN for a joint never visible.
        mean: correct visible joints / visible joints over all K (MPII weights joints by their counts).
        counts: ``(K,)`` int number of visible ground-truth joints per keypoint.
    """

    per_joint: np.ndarray
    mean: float
    counts: np.ndarray


def _inputs(pred, gt, visible):
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.ndim != 3 or p.shape[2] < 2:
        raise ValueError(f"pred must have shape (N, K, 2), got {p.shape}")
    if g.ndim != 3 or g.shape[2] < 2 or g.shape[:2] != p.shape[:2]:
        raise ValueError(f"gt must have shape {p.shape[:2] + (2,)} to match pred, got {g.shape}")
    if visible is None:
        if g.shape[2] < 3:
            raise ValueError("visible is required when gt has no third (visibility) column")
        visible = g[..., 2] > 0
    v = np.asarray(visible).astype(bool)
    if v.shape != p.shape[:2]:
        raise ValueError(f"visible must have shape {p.shape[:2]}, got {v.shape}")
    return p[..., :2], g[..., :2], v


def pck(pred, gt, visible, norm, thr: float) -> PCKResult:
    """PCK with one normalising length per instance.

    Args:
        pred: ``(N, K, 2)`` predicted keypoints (extra columns ignored).
        gt: ``(N, K, 2 or 3)`` ground truth.
        visible: ``(N, K)`` bool, which ground-truth joints count (None: ``gt[..., 2] > 0``).
        norm: ``(N,)`` normalising length in pixels (> 0 where any joint is visible).
        thr: threshold on the normalised distance.
    """
    p, g, v = _inputs(pred, gt, visible)
    n = np.asarray(norm, dtype=np.float64).reshape(-1)
    if n.shape[0] != p.shape[0]:
        raise ValueError(f"norm has {n.shape[0]} entries for {p.shape[0]} instances")
    bad = v.any(axis=1) & ~(n > 0)
    if bad.any():
        raise ValueError(f"normaliser must be > 0 for instances with visible joints; bad at {np.flatnonzero(bad)[:10].tolist()}")
    dist = np.linalg.norm(p - g, axis=2) / np.where(n > 0, n, 1.0)[:, None]
    correct = (dist <= thr) & v
    counts = v.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = np.where(counts > 0, correct.sum(axis=0) / counts, np.nan)
    total = counts.sum()
    mean = float(correct.sum() / total) if total else float("nan")
    return PCKResult(per_joint, mean, counts.astype(np.int64))


def head_sizes_from_boxes(head_boxes, bias: float = MPII_HEAD_BIAS) -> np.ndarray:
    """MPII head size: ``bias * |(x2, y2) - (x1, y1)|`` of each head box.

    Args:
        head_boxes: ``(N, 4)`` ``x1, y1, x2, y2`` or ``(N, 2, 2)`` corners, image pixels.
    """
    b = np.asarray(head_boxes, dtype=np.float64).reshape(-1, 4)
    return bias * np.hypot(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])


def head_sizes_from_segment(gt, a: int, b: int, scale: float = 1.0) -> np.ndarray:
    """Head size as ``scale`` times the length of the segment between keypoints ``a`` and ``b`` (for MPII16:
    ``head_top`` = 9 and ``upper_neck`` = 8), for sets that have no head box. ``gt``: ``(N, K, 2 or 3)``."""
    g = np.asarray(gt, dtype=np.float64)
    return scale * np.linalg.norm(g[:, a, :2] - g[:, b, :2], axis=1)


def pckh(pred, gt, visible, head_sizes, thr: float = 0.5) -> PCKResult:
    """PCKh@thr (MPII): distances normalised by the head size (see :func:`head_sizes_from_boxes`).

    Args:
        pred: ``(N, K, 2)``; gt: ``(N, K, 2 or 3)``; visible: ``(N, K)`` bool (None: ``gt[..., 2] > 0``);
        head_sizes: ``(N,)`` pixels.
    """
    return pck(pred, gt, visible, head_sizes, thr)


def pck_bbox(pred, gt, visible, boxes, thr: float = 0.05) -> PCKResult:
    """PCK normalised by the longer side of each instance's box (MMPose's ``PCKAccuracy`` with
    ``norm_item='bbox'``). ``boxes``: ``(N, 4)`` ``x1, y1, x2, y2`` image pixels."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return pck(pred, gt, visible, np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), thr)
