"""Gaussian keypoint heatmaps for top-down (and CPM-style) models: encoding, decoding, flip test.

Frames: keypoints are in **model-input pixels** (pixel centres at integer coordinates, the cv2.warpAffine
convention); heatmaps are ``(K, H, W)`` float32 maps of ``heatmap_size = (W, H)`` cells. Two targets:

* ``"msra"`` (SimpleBaseline / MMPose ``MSRAHeatmap``): a point ``p`` maps to heatmap ``p / s`` with
  ``s = input_size / heatmap_size``; the Gaussian is centred on the rounded cell ``int(p/s + 0.5)`` and cut to
  ``3 sigma`` (``unbiased=False``), or centred exactly on ``p/s`` over the whole map (``unbiased=True``, DARK).
  Decoding: argmax, then the quarter-pixel shift towards the higher neighbour (``unbiased=False``) or the DARK
  Taylor refinement on the log of the blurred map (``unbiased=True``); then ``* s``.
* ``"udp"`` (Unbiased Data Processing, ViTPose / MMPose ``UDPHeatmap``): ``s = (input_size - 1) /
  (heatmap_size - 1)`` for encoding; the cut Gaussian is shifted by the sub-cell offset. Decoding: argmax,
  DARK-UDP refinement, then ``x * input_W / (W - 1)``, ``y * input_H / (H - 1)`` (MMPose's exact formula).

``background=True`` appends one channel ``1 - max_k(heatmap_k)`` (the P+1 belief maps of CPM); decoding
ignores it. Decoded locations whose maximum is ``<= 0`` are ``-1`` before scaling, as in MMPose.

All functions are numpy; :func:`flip_heatmaps_np` is the flip-test helper (a torch version lives in
:mod:`posekit.models.topdown`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "HeatmapCodec",
    "heatmap_codec_from_mmpose",
    "generate_gaussian_heatmaps",
    "generate_unbiased_gaussian_heatmaps",
    "generate_udp_gaussian_heatmaps",
    "add_background_channel",
    "get_heatmap_maximum",
    "refine_keypoints",
    "refine_keypoints_dark",
    "refine_keypoints_dark_udp",
    "gaussian_blur",
    "flip_heatmaps_np",
]


# ----------------------------------------------------------------------------------------------- helpers
def _size2(size, what: str) -> Tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except Exception as e:
        raise ValueError(f"{what} must be (W, H), got {size!r}") from e
    if w <= 1 or h <= 1:
        raise ValueError(f"{what} must be > 1 in both axes, got {size!r}")
    return w, h


def _check_kpts(keypoints: np.ndarray, visible: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.ndim == 2:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[-1] not in (2, 3):
        raise ValueError(f"keypoints must be (N, K, 2|3), got shape {np.shape(keypoints)}")
    if visible is None:
        # a COCO visibility column (0/1/2): labelled (v > 0) means a target of weight 1, as MMPose's loader does
        visible = (kp[..., 2] > 0).astype(np.float32) if kp.shape[-1] > 2 else np.ones(kp.shape[:2], np.float32)
    vis = np.asarray(visible, dtype=np.float32)
    if vis.ndim == 1:
        vis = vis[None]
    if vis.shape != kp.shape[:2]:
        raise ValueError(f"keypoints_visible must be (N, K) = {kp.shape[:2]}, got {vis.shape}")
    return kp[..., :2], vis


def _window_gaussian_1d(coord: np.ndarray, size: int, sigma: float, subpixel: bool) -> Tuple[np.ndarray, np.ndarray]:
    """1-D factors of the 3-sigma-cut Gaussian patch, evaluated on the whole axis.

    ``coord``: (M,) heatmap coordinates. Returns ``(values (M, size), (lo, hi) bounds (M, 2))`` where values are
    zero outside the patch. Mirrors the patch layout of MMPose (integer centre ``int(c + 0.5)``, radius ``3 sigma``,
    patch ``arange(2r + 1)``, offset by the sub-cell shift when ``subpixel``).
    """
    radius = sigma * 3
    gsize = 2 * radius + 1
    glen = len(np.arange(0, gsize, 1))
    mu = (coord + 0.5).astype(np.int64)
    lo = (mu - radius).astype(np.int64)
    hi = (mu + radius + 1).astype(np.int64)
    c0 = np.float32(gsize // 2) + ((coord - mu) if subpixel else 0.0)
    grid = np.arange(size)[None, :]
    g = (grid - lo[:, None]).astype(np.float32)
    valid = (grid >= lo[:, None]) & (grid < np.minimum(hi[:, None], size)) & (g < glen) & (g >= 0)
    d2 = (g - np.asarray(c0, np.float32).reshape(-1, 1)) ** 2
    return np.where(valid, d2, np.inf), np.stack([lo, hi], -1)


def _cut_gaussians(heatmap_size, keypoints, visible, sigma, subpixel: bool):
    W, H = heatmap_size
    N, K = keypoints.shape[:2]
    kp = keypoints.reshape(-1, 2)
    dx2, bx = _window_gaussian_1d(kp[:, 0], W, sigma, subpixel)
    dy2, by = _window_gaussian_1d(kp[:, 1], H, sigma, subpixel)
    # MMPose's in-bounds test: left >= W or top >= H or right < 0 or bottom < 0 -> no target
    inb = ~((bx[:, 0] >= W) | (by[:, 0] >= H) | (bx[:, 1] < 0) | (by[:, 1] < 0))
    use = (visible.reshape(-1) >= 0.5) & inb
    weights = visible.copy().reshape(-1)
    weights[(visible.reshape(-1) >= 0.5) & ~inb] = 0
    d2 = dy2[:, :, None] + dx2[:, None, :]  # (M, H, W), inf outside the patch
    g = np.exp(-d2 / np.float32(2 * sigma ** 2)).astype(np.float32)
    g[~use] = 0
    heatmaps = g.reshape(N, K, H, W).max(axis=0) if N else np.zeros((K, H, W), np.float32)
    return heatmaps.astype(np.float32), weights.reshape(N, K)


def generate_gaussian_heatmaps(heatmap_size, keypoints, keypoints_visible, sigma: float):
    """MSRA targets: ``(heatmaps (K, H, W), keypoint_weights (N, K))`` from heatmap-frame keypoints (N, K, 2).

    Each visible keypoint gets ``exp(-d^2 / 2 sigma^2)`` around its rounded cell, cut to a ``(2*3sigma+1)``
    square; instances are merged by maximum. Keypoints whose patch misses the map get weight 0.
    """
    W, H = _size2(heatmap_size, "heatmap_size")
    kp, vis = _check_kpts(keypoints, keypoints_visible)
    return _cut_gaussians((W, H), kp, vis, float(sigma), subpixel=False)


def generate_udp_gaussian_heatmaps(heatmap_size, keypoints, keypoints_visible, sigma: float):
    """UDP targets: as :func:`generate_gaussian_heatmaps` but the Gaussian centre keeps the sub-cell offset."""
    W, H = _size2(heatmap_size, "heatmap_size")
    kp, vis = _check_kpts(keypoints, keypoints_visible)
    return _cut_gaussians((W, H), kp, vis, float(sigma), subpixel=True)


def generate_unbiased_gaussian_heatmaps(heatmap_size, keypoints, keypoints_visible, sigma: float):
    """DARK targets: an uncut Gaussian centred exactly on each keypoint (heatmap frame), merged by maximum."""
    W, H = _size2(heatmap_size, "heatmap_size")
    kp, vis = _check_kpts(keypoints, keypoints_visible)
    N, K = kp.shape[:2]
    r = 3 * float(sigma)
    flat = kp.reshape(-1, 2)
    inb = ~((flat[:, 0] - r >= W) | (flat[:, 1] - r >= H) | (flat[:, 0] + r + 1 < 0) | (flat[:, 1] + r + 1 < 0))
    weights = vis.copy().reshape(-1)
    weights[(vis.reshape(-1) >= 0.5) & ~inb] = 0
    use = (vis.reshape(-1) >= 0.5) & inb
    x = np.arange(W, dtype=np.float32)
    y = np.arange(H, dtype=np.float32)
    d2 = (y[None, :, None] - flat[:, 1, None, None]) ** 2 + (x[None, None, :] - flat[:, 0, None, None]) ** 2
    g = np.exp(-d2 / np.float32(2 * sigma ** 2)).astype(np.float32)
    g[~use] = 0
    heatmaps = g.reshape(N, K, H, W).max(axis=0) if N else np.zeros((K, H, W), np.float32)
    return heatmaps, weights.reshape(N, K)


def add_background_channel(heatmaps: np.ndarray) -> np.ndarray:
    """Append the background map ``1 - max_k heatmaps[k]`` (clipped to [0, 1]): (K, H, W) -> (K+1, H, W)."""
    hm = np.asarray(heatmaps, np.float32)
    bg = np.clip(1.0 - hm.max(axis=0, initial=0.0), 0.0, 1.0)
    return np.concatenate([hm, bg[None]], axis=0)


# ----------------------------------------------------------------------------------------------- decoding
def get_heatmap_maximum(heatmaps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Argmax of each map. ``(..., H, W)`` -> ``(locs (..., 2) float32 x,y; vals (...))``.

    The first maximum in row-major order wins; locations with ``val <= 0`` are set to ``(-1, -1)``.
    """
    hm = np.asarray(heatmaps)
    if hm.ndim < 2:
        raise ValueError(f"heatmaps must be (..., H, W), got shape {hm.shape}")
    H, W = hm.shape[-2:]
    flat = hm.reshape(*hm.shape[:-2], H * W)
    idx = np.argmax(flat, axis=-1)
    vals = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    locs = np.stack([idx % W, idx // W], axis=-1).astype(np.float32)
    locs[vals <= 0.0] = -1
    return locs, vals


def _flat_index(K: int, N: int) -> np.ndarray:
    return np.broadcast_to(np.arange(K), (N, K))


def refine_keypoints(keypoints: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """MMPose's quarter-offset refinement (including its bounds quirk), vectorised.

    ``keypoints`` (N, K, 2) heatmap-frame argmax locations, ``heatmaps`` (K, H, W). For each keypoint at integer
    ``(x, y)``: ``x += 0.25 * sign(h[y, x+1] - h[y, x-1])`` only if ``1 < x < W-1 and 0 < y < H``;
    ``y += 0.25 * sign(h[y+1, x] - h[y-1, x])`` only if ``1 < y < H-1 and 0 < x < W``. Returns a new array.
    """
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    K, H, W = heatmaps.shape
    N = kp.shape[0]
    x = kp[..., 0].astype(np.int64)
    y = kp[..., 1].astype(np.int64)
    k = _flat_index(K, N)
    okx = (x > 1) & (x < W - 1) & (y > 0) & (y < H)
    oky = (y > 1) & (y < H - 1) & (x > 0) & (x < W)
    xc, yc = np.clip(x, 1, W - 2), np.clip(y, 1, H - 2)
    yr, xr = np.clip(y, 0, H - 1), np.clip(x, 0, W - 1)
    dx = np.where(okx, heatmaps[k, yr, xc + 1] - heatmaps[k, yr, xc - 1], 0.0)
    dy = np.where(oky, heatmaps[k, yc + 1, xr] - heatmaps[k, yc - 1, xr], 0.0)
    kp[..., 0] += np.sign(dx) * 0.25
    kp[..., 1] += np.sign(dy) * 0.25
    return kp


def gaussian_blur(heatmaps: np.ndarray, kernel: int = 11) -> np.ndarray:
    """Blur each (K, H, W) map with a ``kernel`` Gaussian (zero padding), keeping each map's maximum.

    Returns a new float32 array (MMPose modifies in place; this does not).
    """
    if kernel % 2 != 1 or kernel < 1:
        raise ValueError(f"blur kernel size must be odd and >= 1, got {kernel}")
    hm = np.asarray(heatmaps, np.float32)
    K, H, W = hm.shape
    b = (kernel - 1) // 2
    out = np.empty_like(hm)
    for i in range(K):  # one cv2 call per map
        m = hm[i].max()
        pad = np.zeros((H + 2 * b, W + 2 * b), np.float32)  # float32 as MMPose
        pad[b:b + H, b:b + W] = hm[i]
        blurred = cv2.GaussianBlur(pad, (kernel, kernel), 0)[b:b + H, b:b + W]
        out[i] = blurred
        out[i] *= m / out[i].max()
    return out


def refine_keypoints_dark(keypoints: np.ndarray, heatmaps: np.ndarray, blur_kernel_size: int = 11) -> np.ndarray:
    """DARK refinement: Newton step on the log of the blurred heatmap (N, K, 2) -> (N, K, 2).

    Keypoints whose integer location is not inside ``1 < x < W-2, 1 < y < H-2`` or whose Hessian is singular
    are left unchanged (MMPose's rule).
    """
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    K, H, W = heatmaps.shape
    N = kp.shape[0]
    lh = np.log(np.maximum(gaussian_blur(heatmaps, blur_kernel_size), 1e-10))
    x = kp[..., 0].astype(np.int64)
    y = kp[..., 1].astype(np.int64)
    ok = (x > 1) & (x < W - 2) & (y > 1) & (y < H - 2)
    xs, ys = np.clip(x, 2, W - 3), np.clip(y, 2, H - 3)
    k = _flat_index(K, N)

    def at(dy, dx):
        return lh[k, ys + dy, xs + dx].astype(np.float64)

    c = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    det = dxx * dyy - dxy ** 2
    ok &= det != 0
    safe = np.where(ok, det, 1.0)
    ox = -(dyy * dx - dxy * dy) / safe
    oy = -(-dxy * dx + dxx * dy) / safe
    kp[..., 0] += np.where(ok, ox, 0.0).astype(np.float32)
    kp[..., 1] += np.where(ok, oy, 0.0).astype(np.float32)
    return kp


def refine_keypoints_dark_udp(keypoints: np.ndarray, heatmaps: np.ndarray, blur_kernel_size: int = 3) -> np.ndarray:
    """DARK-UDP refinement (N, K, 2) -> (N, K, 2) on edge-padded log heatmaps, as MMPose computes it.

    The log map is ``log(clip(blur(h), 1e-3, 50))`` padded by one edge cell; derivatives use flat indexing into
    the padded stack exactly like MMPose (so a ``(-1, -1)`` location reads neighbouring memory the same way).
    The Newton step uses ``inv(Hessian + eps * I)``.
    """
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    K, H, W = heatmaps.shape
    N = kp.shape[0]
    if N == 0:
        return kp
    lh = np.log(np.clip(gaussian_blur(heatmaps, blur_kernel_size), 1e-3, 50.0)).astype(np.float32)
    pad = np.pad(lh, ((0, 0), (1, 1), (1, 1)), mode="edge").reshape(-1)
    Wp = W + 2
    base = kp[..., 0] + 1 + (kp[..., 1] + 1) * Wp + (Wp * (H + 2)) * np.arange(K)[None]
    idx = base.astype(np.int64)  # (N, K)
    i_ = pad[idx]
    ix1, ix1_ = pad[idx + 1], pad[idx - 1]
    iy1, iy1_ = pad[idx + Wp], pad[idx - Wp]
    ix1y1, ix1_y1_ = pad[idx + Wp + 1], pad[idx - Wp - 1]
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    dxx = ix1 - 2 * i_ + ix1_
    dyy = iy1 - 2 * i_ + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    hess = np.stack([np.stack([dxx, dxy], -1), np.stack([dxy, dyy], -1)], -2)  # (N, K, 2, 2)
    hess = hess + np.finfo(np.float32).eps * np.eye(2)  # float64, as MMPose
    inv = np.linalg.inv(hess)
    deriv = np.stack([dx, dy], -1)[..., None]
    kp -= (inv @ deriv)[..., 0]
    return kp


def flip_heatmaps_np(heatmaps: np.ndarray, flip_index: Sequence[int], shift: bool = False) -> np.ndarray:
    """Heatmaps of a horizontally flipped input mapped back to the original frame: (..., K, H, W).

    Mirror along W, swap left/right channels with ``flip_index``, and (``shift=True``, MSRA heatmaps) move the
    result one column to the right (``out[..., 1:] = out[..., :-1]``) as MMPose's ``shift_heatmap``.
    """
    hm = np.asarray(heatmaps)
    fi = np.asarray(flip_index, dtype=np.int64)
    if fi.shape[0] != hm.shape[-3]:
        raise ValueError(f"flip_index has {fi.shape[0]} entries, heatmaps have {hm.shape[-3]} channels")
    out = hm[..., fi, :, ::-1].copy()
    if shift:
        out[..., 1:] = out[..., :-1].copy()
    return out


# ----------------------------------------------------------------------------------------------- the codec
@dataclass(frozen=True)
class HeatmapCodec:
    """Gaussian heatmap codec (see the module docstring).

    Args:
        input_size: model input ``(W, H)`` in pixels.
        heatmap_size: output map ``(W, H)`` in cells.
        sigma: Gaussian sigma in heatmap cells.
        kind: ``"msra"`` or ``"udp"``.
        unbiased: MSRA only: DARK encoding (uncut Gaussian at the exact position) and DARK decoding.
        blur_kernel_size: Gaussian blur kernel used by DARK / DARK-UDP decoding (MMPose default 11).
        background: append a background channel ``1 - max`` when encoding (CPM); decoding then drops the last
            channel.
    """

    input_size: Tuple[int, int]
    heatmap_size: Tuple[int, int]
    sigma: float = 2.0
    kind: str = "msra"
    unbiased: bool = False
    blur_kernel_size: int = 11
    background: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", _size2(self.input_size, "input_size"))
        object.__setattr__(self, "heatmap_size", _size2(self.heatmap_size, "heatmap_size"))
        if self.kind not in ("msra", "udp"):
            raise ValueError(f"HeatmapCodec kind must be 'msra' or 'udp', got {self.kind!r}")
        if self.unbiased and self.kind != "msra":
            raise ValueError("HeatmapCodec unbiased=True is only meaningful for kind='msra'")
        if not self.sigma > 0:
            raise ValueError(f"HeatmapCodec sigma must be > 0, got {self.sigma}")

    @property
    def scale(self) -> np.ndarray:
        """Input pixels per heatmap cell used by encoding, ``(sx, sy)``."""
        i = np.asarray(self.input_size, np.float32)
        h = np.asarray(self.heatmap_size, np.float32)
        return i / h if self.kind == "msra" else (i - 1) / (h - 1)

    def encode(self, keypoints: np.ndarray, keypoints_visible: Optional[np.ndarray] = None) -> dict:
        """Targets for one image's instances.

        Args:
            keypoints: (N, K, 2|3) in model-input pixels (a third column is used as visibility when
                ``keypoints_visible`` is None).
            keypoints_visible: (N, K); entries < 0.5 produce no target.
        Returns:
            ``{"heatmaps": (K[+1], H, W) float32, "keypoint_weights": (N, K) float32}``.
        """
        kp, vis = _check_kpts(keypoints, keypoints_visible)
        kp = kp / self.scale
        if self.kind == "udp":
            hm, w = generate_udp_gaussian_heatmaps(self.heatmap_size, kp, vis, self.sigma)
        elif self.unbiased:
            hm, w = generate_unbiased_gaussian_heatmaps(self.heatmap_size, kp, vis, self.sigma)
        else:
            hm, w = generate_gaussian_heatmaps(self.heatmap_size, kp, vis, self.sigma)
        if self.background:
            hm = add_background_channel(hm)
        return {"heatmaps": hm, "keypoint_weights": w.astype(np.float32)}

    def decode(self, heatmaps) -> Tuple[np.ndarray, np.ndarray]:
        """``(K[+1], H, W)`` or ``(B, K[+1], H, W)`` maps -> ``(keypoints (B, K, 2) input pixels, scores (B, K))``.

        Accepts numpy arrays or torch tensors. Scores are the raw map maxima.
        """
        if hasattr(heatmaps, "detach"):
            heatmaps = heatmaps.detach().cpu().numpy()
        hm = np.asarray(heatmaps, dtype=np.float32)
        if hm.ndim == 3:
            hm = hm[None]
        if hm.ndim != 4:
            raise ValueError(f"heatmaps must be (K, H, W) or (B, K, H, W), got shape {hm.shape}")
        W, H = self.heatmap_size
        if hm.shape[-2:] != (H, W):
            raise ValueError(f"heatmaps are {hm.shape[-2]}x{hm.shape[-1]} (HxW), codec expects {H}x{W}")
        if self.background:
            hm = hm[:, :-1]
        kps, scs = [], []
        for one in hm:  # one instance at a time: the refinements work on (K, H, W)
            locs, vals = get_heatmap_maximum(one)
            locs = locs[None]
            if self.kind == "udp":
                locs = refine_keypoints_dark_udp(locs, one, self.blur_kernel_size)
                locs = locs / np.array([W - 1, H - 1], np.float32) * np.asarray(self.input_size, np.float32)
            else:
                if self.unbiased:
                    locs = refine_keypoints_dark(locs, one, self.blur_kernel_size)
                else:
                    locs = refine_keypoints(locs, one)
                locs = locs * self.scale
            kps.append(locs[0])
            scs.append(vals)
        return np.stack(kps).astype(np.float32), np.stack(scs).astype(np.float32)


def heatmap_codec_from_mmpose(cfg: Mapping[str, Any], background: bool = False) -> HeatmapCodec:
    """A :class:`HeatmapCodec` from an MMPose codec config dict (``type`` MSRAHeatmap or UDPHeatmap)."""
    kind = {"MSRAHeatmap": "msra", "UDPHeatmap": "udp"}.get(cfg.get("type"))
    if kind is None:
        raise ValueError(f"codec type {cfg.get('type')!r} is not a heatmap codec (MSRAHeatmap, UDPHeatmap)")
    if kind == "udp" and cfg.get("heatmap_type", "gaussian") != "gaussian":
        raise ValueError(f"UDPHeatmap heatmap_type {cfg.get('heatmap_type')!r} is not supported (only 'gaussian')")
    return HeatmapCodec(
        input_size=tuple(cfg["input_size"]),
        heatmap_size=tuple(cfg["heatmap_size"]),
        sigma=float(cfg.get("sigma", 2.0)),
        kind=kind,
        unbiased=bool(cfg.get("unbiased", False)),
        blur_kernel_size=int(cfg.get("blur_kernel_size", 11)),
        background=background,
    )
