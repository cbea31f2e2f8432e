"""Ideal OpenPose maps for tests and benchmarks: Gaussian confidence peaks and unit-vector PAF rectangles.

Everything is in map cells (pixel centres at integer coordinates).
"""

from __future__ import annotations

import numpy as np

from posekit.association.paf import OPENPOSE18_LIMBS, TFPOSE_PAF_CHANNELS

__all__ = ["OPENPOSE18_TEMPLATE", "make_people", "render_maps"]

#: A standing person facing the camera, OpenPose-18 part order, ``x, y`` in units of the person's height
#: (``y`` down, the top of the head near 0). The head is drawn larger than life so that its five parts stay
#: separate peaks on coarse grids.
OPENPOSE18_TEMPLATE = np.array([
    [0.00, 0.10],                                   # 0 nose
    [0.00, 0.22],                                   # 1 neck
    [-0.13, 0.23], [-0.18, 0.39], [-0.20, 0.54],    # 2-4 right shoulder, elbow, wrist (image left)
    [0.13, 0.23], [0.18, 0.39], [0.20, 0.54],       # 5-7 left shoulder, elbow, wrist
    [-0.08, 0.55], [-0.09, 0.76], [-0.10, 0.97],    # 8-10 right hip, knee, ankle
    [0.08, 0.55], [0.09, 0.76], [0.10, 0.97],       # 11-13 left hip, knee, ankle
    [-0.05, 0.04], [0.05, 0.04],                    # 14, 15 right, left eye
    [-0.10, 0.08], [0.10, 0.08],                    # 16, 17 right, left ear
])


def make_people(centres, heights, angles=None) -> np.ndarray:
    """``(N, 18, 2)`` OpenPose-18 keypoints (map cells): the template scaled to each height, rotated by each angle
    (degrees, about the person's centre) and centred on each ``(x, y)``."""
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    heights = np.broadcast_to(np.asarray(heights, dtype=np.float64), (len(centres),))
    angles = np.zeros(len(centres)) if angles is None else np.broadcast_to(np.radians(angles), (len(centres),))
    t = OPENPOSE18_TEMPLATE - np.array([0.0, 0.5])
    c, s = np.cos(angles), np.sin(angles)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (N, 2, 2)
    return np.einsum("nij,kj->nki", rot, t) * heights[:, None, None] + centres[:, None, :]


def render_maps(
    people: np.ndarray,
    grid: tuple[int, int],
    sigma: float = 1.0,
    paf_width: float = 1.0,
    limbs=OPENPOSE18_LIMBS,
    paf_channels=TFPOSE_PAF_CHANNELS,
    num_paf_channels: int = 38,
    visible: np.ndarray | None = None,
) -> np.ndarray:
    """Network-like maps ``(h, w, J + 1 + num_paf_channels)``: ``J`` confidence maps (max over people of
    ``exp(-d^2 / 2 sigma^2)``), a background channel (1 - max), then the PAFs: for each limb and person, the unit
    vector from ``j1`` to ``j2`` on cells within ``paf_width`` of the segment, averaged over the people that
    overlap there.

    Args:
        people: ``(N, J, 2)`` keypoints in map cells.
        grid: ``(h, w)``.
        visible: optional ``(N, J)`` bool; invisible parts get no peak and their limbs no PAF.
    """
    people = np.asarray(people, dtype=np.float64)
    N, J, _ = people.shape
    h, w = grid
    vis = np.ones((N, J), bool) if visible is None else np.asarray(visible, bool)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((h, w, J + 1 + num_paf_channels), np.float32)
    for j in range(J):
        pts = people[vis[:, j], j]
        if len(pts):
            d2 = (xs[None] - pts[:, 0, None, None]) ** 2 + (ys[None] - pts[:, 1, None, None]) ** 2
            out[..., j] = np.exp(-d2 / (2 * sigma * sigma)).max(0)
    out[..., J] = 1 - out[..., :J].max(-1)
    for (j1, j2), (cx, cy) in zip(limbs, paf_channels):
        ok = vis[:, j1] & vis[:, j2]
        if not ok.any():
            continue
        a, b = people[ok, j1], people[ok, j2]
        d = b - a
        length = np.linalg.norm(d, axis=1)
        u = d / np.maximum(length, 1e-9)[:, None]
        px = xs[None] - a[:, 0, None, None]
        py = ys[None] - a[:, 1, None, None]
        along = px * u[:, 0, None, None] + py * u[:, 1, None, None]
        across = np.abs(px * u[:, 1, None, None] - py * u[:, 0, None, None])
        on = (along >= 0) & (along <= length[:, None, None]) & (across <= paf_width)
        n = on.sum(0)
        vx = (on * u[:, 0, None, None]).sum(0)
        vy = (on * u[:, 1, None, None]).sum(0)
        nz = n > 0
        out[..., J + 1 + cx][nz] = vx[nz] / n[nz]
        out[..., J + 1 + cy][nz] = vy[nz] / n[nz]
    return out
