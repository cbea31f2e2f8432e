"""Object keypoint similarity (OKS) and OKS-based non-maximum suppression.

All functions are vectorised over instances and keypoints. Coordinates are image pixels.

OKS between a prediction ``d`` and a ground truth ``g`` with K keypoints (COCO's definition)::

    e_k   = |d_k - g_k|^2 / (2 * s^2 * (2 sigma_k)^2),   s^2 = area + eps
    OKS   = mean over the labelled keypoints of exp(-e_k)

where "labelled" means ground-truth visibility ``v > 0``. When a ground truth has no labelled keypoint, COCO
measures, for every keypoint, the distance from the prediction to the ground-truth box enlarged by its own size on
each side (``[x - w, x + 2w] x [y - h, y + 2h]``) and averages over all K keypoints.
"""

from __future__ import annotations

import numpy as np

__all__ = ["compute_oks", "pairwise_oks", "oks_nms", "soft_oks_nms", "keypoint_areas"]

_EPS = np.spacing(1)  # what pycocotools adds to the area


def _sigmas(sigmas, k: int) -> np.ndarray:
    if hasattr(sigmas, "sigmas_array"):  # a KeypointSchema
        sigmas = sigmas.sigmas_array
    s = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if s.shape[0] != k:
        raise ValueError(f"sigmas has {s.shape[0]} entries but the keypoints have K={k}")
    if not np.all(s > 0):
        raise ValueError(f"sigmas must all be > 0, got {s.tolist()}")
    return s


def _as_instances(a, name: str, min_cols: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2 and a.shape[0] == 0:
        a = a.reshape(0, 0, max(min_cols, 2))
    if a.ndim != 3 or a.shape[2] < min_cols or a.shape[2] > 3:
        raise ValueError(f"{name} must have shape (N, K, {'2 or 3' if min_cols == 2 else 3}), got {a.shape}")
    return a


def keypoint_areas(keypoints: np.ndarray, min_score: float | None = None) -> np.ndarray:
    """``(N,)`` area ``w * h`` of the box around each instance's keypoints (what COCO's ``loadRes`` uses).

    Args:
        keypoints: ``(N, K, 2 or 3)`` image pixels.
        min_score: when given (and the array has scores), only keypoints with score > ``min_score`` count;
            an instance with none gets area 0.
    """
    kp = _as_instances(keypoints, "keypoints", 2)
    if kp.shape[0] == 0:
        return np.zeros(0)
    xy = kp[..., :2]
    if min_score is None or kp.shape[2] < 3:
        wh = xy.max(axis=1) - xy.min(axis=1)
    else:
        ok = kp[..., 2] > min_score
        lo = np.where(ok[..., None], xy, np.inf).min(axis=1)
        hi = np.where(ok[..., None], xy, -np.inf).max(axis=1)
        wh = np.where(ok.any(axis=1)[:, None], hi - lo, 0.0)
    return wh[:, 0] * wh[:, 1]


def compute_oks(pred, gt, gt_areas, sigmas, gt_boxes=None) -> np.ndarray:
    """OKS of every prediction against every ground truth, exactly as pycocotools' ``computeOks``.

    Args:
        pred: ``(N, K, 2 or 3)`` predicted keypoints, image pixels (a third column is ignored).
        gt: ``(M, K, 3)`` ground-truth keypoints ``x, y, v``; only keypoints with ``v > 0`` count.
        gt_areas: ``(M,)`` the ground truths' areas (COCO: the segmentation area), the OKS scale ``s^2``.
        sigmas: ``(K,)`` per-keypoint sigmas (COCO's ``kpt_oks_sigmas``) or a :class:`~posekit.schema.KeypointSchema`.
        gt_boxes: optional ``(M, 4)`` ``x1, y1, x2, y2`` ground-truth boxes, used only for ground truths with no
            labelled keypoint (COCO's box distance). Without boxes such a ground truth gets OKS 0.

    Returns:
        ``(N, M)`` float64 OKS in [0, 1].
    """
    p = _as_instances(pred, "pred", 2)
    g = _as_instances(gt, "gt", 3)
    n, m = p.shape[0], g.shape[0]
    if n == 0 or m == 0:
        return np.zeros((n, m))
    k = g.shape[1]
    if p.shape[1] != k:
        raise ValueError(f"pred has K={p.shape[1]} keypoints but gt has K={k}")
    var = (2.0 * _sigmas(sigmas, k)) ** 2  # (K,)
    areas = np.asarray(gt_areas, dtype=np.float64).reshape(-1)
    if areas.shape[0] != m:
        raise ValueError(f"gt_areas has {areas.shape[0]} entries for {m} ground truths")

    vis = g[..., 2] > 0  # (M, K)
    dx = p[:, None, :, 0] - g[None, :, :, 0]  # (N, M, K)
    dy = p[:, None, :, 1] - g[None, :, :, 1]
    no_label = ~vis.any(axis=1)  # (M,)
    if no_label.any():
        if gt_boxes is not None:
            b = np.asarray(gt_boxes, dtype=np.float64).reshape(m, 4)
            w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
            x0, x1 = b[:, 0] - w, b[:, 0] + 2 * w
            y0, y1 = b[:, 1] - h, b[:, 1] + 2 * h
            px, py = p[:, None, :, 0], p[:, None, :, 1]
            bdx = np.maximum(0, x0[None, :, None] - px) + np.maximum(0, px - x1[None, :, None])
            bdy = np.maximum(0, y0[None, :, None] - py) + np.maximum(0, py - y1[None, :, None])
            dx = np.where(no_label[None, :, None], bdx, dx)
            dy = np.where(no_label[None, :, None], bdy, dy)
    e = (dx**2 + dy**2) / var / (areas[None, :, None] + _EPS) / 2.0
    # Labelled keypoints only; all K when the gt has none (box distance).
    w = np.where(no_label[:, None], True, vis).astype(np.float64)  # (M, K)
    oks = (np.exp(-e) * w[None]).sum(axis=2) / w.sum(axis=1)[None]
    if no_label.any() and gt_boxes is None:
        oks[:, no_label] = 0.0
    return oks


def pairwise_oks(keypoints, areas, sigmas, vis_thr: float | None = None) -> np.ndarray:
    """``(N, N)`` OKS between predictions, as MMPose's/HRNet's ``oks_iou``.

    The scale of a pair is the mean of the two instances' areas; with ``vis_thr`` only keypoints whose score is
    above ``vis_thr`` in *both* instances count (a pair with none gets 0), otherwise all K count.

    Args:
        keypoints: ``(N, K, 3)`` ``x, y, score`` image pixels.
        areas: ``(N,)`` instance areas (e.g. box ``w * h``).
        sigmas: ``(K,)`` or a KeypointSchema.
    """
    kp = _as_instances(keypoints, "keypoints", 2 if vis_thr is None else 3)
    n, k = kp.shape[:2]
    if n == 0:
        return np.zeros((0, 0))
    var = (2.0 * _sigmas(sigmas, k)) ** 2
    a = np.asarray(areas, dtype=np.float64).reshape(-1)
    if a.shape[0] != n:
        raise ValueError(f"areas has {a.shape[0]} entries for {n} instances")
    d2 = ((kp[:, None, :, :2] - kp[None, :, :, :2]) ** 2).sum(-1)  # (N, N, K)
    scale = (a[:, None] + a[None, :]) / 2.0 + _EPS
    e = d2 / var / scale[..., None] / 2.0
    if vis_thr is None:
        return np.exp(-e).mean(axis=2)
    ok = kp[..., 2] > vis_thr
    w = (ok[:, None, :] & ok[None, :, :]).astype(np.float64)
    cnt = w.sum(axis=2)
    return np.where(cnt > 0, (np.exp(-e) * w).sum(axis=2) / np.maximum(cnt, 1), 0.0)


def _check_nms_inputs(keypoints, scores, areas):
    kp = _as_instances(keypoints, "keypoints", 2)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.shape[0] != kp.shape[0]:
        raise ValueError(f"scores has {s.shape[0]} entries for {kp.shape[0]} instances")
    if areas is None:
        areas = keypoint_areas(kp)
    return kp, s, areas


def oks_nms(keypoints, scores, areas, thr: float, sigmas, vis_thr: float | None = None) -> np.ndarray:
    """Greedy OKS-NMS (MMPose / HRNet ``oks_nms``): keep the best instance, drop every remaining one whose OKS
    with it is > ``thr``, repeat.

    Args:
        keypoints: ``(N, K, 3)`` ``x, y, score`` image pixels.
        scores: ``(N,)`` instance scores.
        areas: ``(N,)`` instance areas (None: the keypoint box ``w * h``).
        thr: OKS above which a lower-scored instance is a duplicate (0.9 in MMPose's top-down configs).
        sigmas: ``(K,)`` or a KeypointSchema.
        vis_thr: see :func:`pairwise_oks`.

    Returns:
        ``(n_keep,)`` int64 indices into the input, highest score first (ties: lower index first).
    """
    kp, s, areas = _check_nms_inputs(keypoints, scores, areas)
    if kp.shape[0] == 0:
        return np.zeros(0, np.int64)
    ovr = pairwise_oks(kp, areas, sigmas, vis_thr)
    order = np.argsort(-s, kind="stable")
    alive = np.ones(len(s), bool)
    keep = []
    for i in order:
        if not alive[i]:
            continue
        keep.append(i)
        alive &= ~(ovr[i] > thr)
    return np.asarray(keep, np.int64)


def soft_oks_nms(
    keypoints, scores, areas, thr: float, sigmas, max_dets: int = 20, vis_thr: float | None = None,
    method: str = "gaussian",
) -> tuple[np.ndarray, np.ndarray]:
    """Soft OKS-NMS (MMPose ``soft_oks_nms``): instead of dropping overlapping instances, decay their scores.

    Repeatedly take the instance with the highest current score, then rescore every remaining instance ``j`` by
    its OKS ``o`` with the one taken:

    * ``"gaussian"`` (MMPose's default): ``score_j *= exp(-o^2 / thr)``;
    * ``"linear"``: ``score_j *= (1 - o)`` where ``o >= thr`` (unchanged otherwise).

    Stops after ``max_dets`` instances.

    Returns:
        ``keep`` ``(n,)`` int64 indices in selection order, and ``rescored`` ``(n,)`` the score each kept instance
        had when it was taken (MMPose returns only ``keep``; the rescored scores are what a caller ranks by).
    """
    if method not in ("gaussian", "linear"):
        raise ValueError(f"soft_oks_nms method must be 'gaussian' or 'linear', got {method!r}")
    kp, s, areas = _check_nms_inputs(keypoints, scores, areas)
    n = kp.shape[0]
    if n == 0 or max_dets <= 0:
        return np.zeros(0, np.int64), np.zeros(0)
    ovr = pairwise_oks(kp, areas, sigmas, vis_thr)
    cur = s.copy()
    alive = np.ones(n, bool)
    keep, kept_scores = [], []
    while alive.any() and len(keep) < max_dets:
        cand = np.flatnonzero(alive)
        i = cand[np.argmax(cur[cand])]  # first maximum: ties go to the lower index
        keep.append(i)
        kept_scores.append(cur[i])
        alive[i] = False
        o = ovr[i]
        if method == "gaussian":
            cur = np.where(alive, cur * np.exp(-(o**2) / thr), cur)
        else:
            cur = np.where(alive & (o >= thr), cur * (1.0 - o), cur)
    return np.asarray(keep, np.int64), np.asarray(kept_scores, np.float64)
