"""Small statistics for ``posekit compare``: robust line fits, percentiles, crowd-level bins, box recall."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["LineFit", "robust_line_fit", "percentiles", "CROWD_BINS", "crowd_bin", "box_recall", "pareto_front"]

#: images binned by their number of annotated (non-crowd) people: (label, min, max inclusive).
CROWD_BINS = (("1", 1, 1), ("2-3", 2, 3), ("4-7", 4, 7), ("8+", 8, 10 ** 9))


@dataclass
class LineFit:
    """``y = intercept + slope * x``; ``r2`` is ``1 - SS_res / SS_tot`` of this line on the data (NaN when ``y``
    does not vary); ``method`` is ``theil-sen`` or ``ols``; ``n`` points."""

    slope: float
    intercept: float
    r2: float
    n: int
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def _r2(x: np.ndarray, y: np.ndarray, slope: float, intercept: float) -> float:
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot <= 0:
        return float("nan")
    return 1.0 - float(((y - intercept - slope * x) ** 2).sum()) / ss_tot


def robust_line_fit(x, y, method: str = "theil-sen") -> LineFit:
    """A straight line through ``(x, y)``.

    ``theil-sen``: the slope is the median of the slopes of every pair of points with different ``x`` and the
    intercept the median of ``y - slope * x`` (robust to the odd slow image of a busy machine); ``ols``: least
    squares. With fewer than two distinct ``x`` the slope is 0 and the intercept the median of ``y``.
    """
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.shape} and {y.shape}")
    if method not in ("theil-sen", "ols"):
        raise ValueError(f"method must be 'theil-sen' or 'ols', got {method!r}")
    n = len(x)
    if n == 0 or len(np.unique(x)) < 2:
        c = float(np.median(y)) if n else float("nan")
        return LineFit(0.0, c, float("nan"), n, method)
    if method == "ols":
        slope, intercept = np.polyfit(x, y, 1)
    else:
        i, j = np.triu_indices(n, 1)
        dx = x[j] - x[i]
        ok = dx != 0
        slope = float(np.median((y[j] - y[i])[ok] / dx[ok]))
        intercept = float(np.median(y - slope * x))
    return LineFit(float(slope), float(intercept), _r2(x, y, float(slope), float(intercept)), n, method)


def percentiles(values) -> dict:
    """``{"median", "p90", "mean", "n"}`` of ``values`` (NaN when empty)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return {"median": float("nan"), "p90": float("nan"), "mean": float("nan"), "n": 0}
    return {"median": float(np.median(v)), "p90": float(np.percentile(v, 90)), "mean": float(v.mean()),
            "n": int(v.size)}


def crowd_bin(num_people: int) -> str | None:
    """The :data:`CROWD_BINS` label of an image with ``num_people`` annotated people (None for 0)."""
    for label, lo, hi in CROWD_BINS:
        if lo <= num_people <= hi:
            return label
    return None


def box_recall(gt_boxes: np.ndarray, pred_boxes: np.ndarray, iou_thr: float = 0.5) -> tuple[int, int]:
    """``(matched, total)``: ground-truth boxes (``xyxy``) matched one-to-one by a predicted box with IoU >=
    ``iou_thr`` (greedy, highest IoU first)."""
    from posekit.boxes import box_iou

    gt = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    pr = np.asarray(pred_boxes, np.float32).reshape(-1, 4)
    if len(gt) == 0 or len(pr) == 0:
        return 0, len(gt)
    iou = np.asarray(box_iou(gt, pr), np.float64)
    matched = 0
    used_g, used_p = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        g, p = np.unravel_index(flat, iou.shape)
        if iou[g, p] < iou_thr:
            break
        if g in used_g or p in used_p:
            continue
        used_g.add(g)
        used_p.add(p)
        matched += 1
    return matched, len(gt)


def pareto_front(cost, value) -> list[int]:
    """Indices of the points no other point beats (lower or equal cost and higher or equal value, one strictly),
    sorted by cost."""
    c = np.asarray(cost, np.float64)
    v = np.asarray(value, np.float64)
    keep = []
    for i in range(len(c)):
        if not (np.isfinite(c[i]) and np.isfinite(v[i])):
            continue
        dominated = any(
            j != i and np.isfinite(c[j]) and np.isfinite(v[j]) and c[j] <= c[i] and v[j] >= v[i]
            and (c[j] < c[i] or v[j] > v[i]) for j in range(len(c)))
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: c[i])
