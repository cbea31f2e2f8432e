"""SimCC coordinate-classification labels (RTMPose; MMPose ``SimCCLabel``).

Each keypoint axis becomes a 1-D distribution over ``round(input_size * split_ratio)`` bins; bin ``i`` is the
input-pixel coordinate ``i / split_ratio`` (pixel centres at integer coordinates, so bin 0 is pixel 0's centre).

Encoding (``smoothing="gaussian"``): centre ``mu = round(p * split_ratio)`` (integer bin),
``label[i] = exp(-(i - mu)^2 / (2 sigma^2))`` with ``sigma = (sigma_x, sigma_y)`` in bins (RTMPose uses
(4.9, 5.66) at 192x256 and (6.93, 7.99) at 288x384), divided by ``sigma * sqrt(2 pi)`` when ``normalize``.
``smoothing="standard"``: one-hot, with optional label smoothing weight. A keypoint with visibility < 0.5 gets
an all-zero label; one whose ``3 sigma`` window misses the axis gets weight 0.

Decoding: ``x = argmax(simcc_x) / split_ratio``, ``y = argmax(simcc_y) / split_ratio``, score =
``min(max(simcc_x), max(simcc_y))`` on the raw logits; locations with score ``<= 0`` are ``-1 / split_ratio``
(MMPose sets -1 before the division).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["SimCCCodec", "simcc_codec_from_mmpose", "get_simcc_maximum", "flip_simcc_np", "RTMPOSE_SIMCC_SIGMA"]

#: RTMPose's SimCC sigma (x, y) per input size (W, H), from the official configs.
RTMPOSE_SIMCC_SIGMA = {(192, 256): (4.9, 5.66), (288, 384): (6.93, 7.99)}


def get_simcc_maximum(simcc_x: np.ndarray, simcc_y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(..., Wx)``, ``(..., Wy)`` -> ``(locs (..., 2) float32 in bins, vals (...))``.

    First maximum wins; ``vals = min(max_x, max_y)``; ``locs = -1`` where ``vals <= 0``.
    """
    sx, sy = np.asarray(simcc_x), np.asarray(simcc_y)
    if sx.shape[:-1] != sy.shape[:-1]:
        raise ValueError(f"simcc_x {sx.shape} and simcc_y {sy.shape} differ in their leading dimensions")
    locs = np.stack([np.argmax(sx, -1), np.argmax(sy, -1)], -1).astype(np.float32)
    vals = np.minimum(sx.max(-1), sy.max(-1))
    locs[vals <= 0.0] = -1
    return locs, vals


def flip_simcc_np(simcc_x: np.ndarray, simcc_y: np.ndarray, flip_index: Sequence[int]):
    """SimCC outputs of a horizontally flipped input mapped back: swap channels, reverse the x bins.

    ``(..., K, Wx)``, ``(..., K, Wy)`` -> same shapes (MMPose ``flip_vectors``; no shift).
    """
    fi = np.asarray(flip_index, np.int64)
    sx, sy = np.asarray(simcc_x), np.asarray(simcc_y)
    if fi.shape[0] != sx.shape[-2]:
        raise ValueError(f"flip_index has {fi.shape[0]} entries, simcc_x has {sx.shape[-2]} keypoints")
    return sx[..., fi, ::-1].copy(), sy[..., fi, :].copy()


@dataclass(frozen=True)
class SimCCCodec:
    """SimCC label codec (see the module docstring).

    Args:
        input_size: model input ``(W, H)``.
        sigma: Gaussian sigma in bins, a float or ``(sigma_x, sigma_y)``.
        split_ratio: bins per input pixel (``simcc_split_ratio``, 2.0 in RTMPose).
        smoothing: ``"gaussian"`` or ``"standard"``.
        label_smooth_weight: ``"standard"`` only, in [0, 1].
        normalize: divide Gaussian labels by ``sigma * sqrt(2 pi)``.
    """

    input_size: Tuple[int, int]
    sigma: Union[float, Tuple[float, float]] = (4.9, 5.66)
    split_ratio: float = 2.0
    smoothing: str = "gaussian"
    label_smooth_weight: float = 0.0
    normalize: bool = False

    def __post_init__(self) -> None:
        try:
            w, h = (int(v) for v in self.input_size)
        except Exception as e:
            raise ValueError(f"SimCCCodec input_size must be (W, H), got {self.input_size!r}") from e
        object.__setattr__(self, "input_size", (w, h))
        s = self.sigma
        s = (float(s), float(s)) if np.isscalar(s) else tuple(float(v) for v in s)
        if len(s) != 2 or min(s) <= 0:
            raise ValueError(f"SimCCCodec sigma must be > 0 (a float or (sx, sy)), got {self.sigma!r}")
        object.__setattr__(self, "sigma", s)
        if self.smoothing not in ("gaussian", "standard"):
            raise ValueError(f"SimCCCodec smoothing must be 'gaussian' or 'standard', got {self.smoothing!r}")
        if not 0.0 <= self.label_smooth_weight <= 1.0:
            raise ValueError(f"SimCCCodec label_smooth_weight must be in [0, 1], got {self.label_smooth_weight}")
        if self.smoothing == "gaussian" and self.label_smooth_weight > 0:
            raise ValueError("SimCCCodec label_smooth_weight is only used with smoothing='standard'")
        if self.split_ratio <= 0:
            raise ValueError(f"SimCCCodec split_ratio must be > 0, got {self.split_ratio}")

    @property
    def num_bins(self) -> Tuple[int, int]:
        """``(Wx, Wy)`` = ``round(input_size * split_ratio)``."""
        w, h = self.input_size
        return int(np.around(w * self.split_ratio)), int(np.around(h * self.split_ratio))

    def encode(self, keypoints: np.ndarray, keypoints_visible: Optional[np.ndarray] = None) -> dict:
        """Labels for one image's instances.

        Args:
            keypoints: (N, K, 2|3) model-input pixels (a third column is the visibility when
                ``keypoints_visible`` is None).
            keypoints_visible: (N, K).
        Returns:
            ``{"keypoint_x_labels": (N, K, Wx), "keypoint_y_labels": (N, K, Wy), "keypoint_weights": (N, K)}``,
            float32.
        """
        kp = np.asarray(keypoints, np.float32)
        if kp.ndim == 2:
            kp = kp[None]
        if kp.ndim != 3 or kp.shape[-1] not in (2, 3):
            raise ValueError(f"keypoints must be (N, K, 2|3), got shape {np.shape(keypoints)}")
        if keypoints_visible is None:
            # a COCO visibility column (0/1/2): labelled (v > 0) means weight 1
            keypoints_visible = ((kp[..., 2] > 0).astype(np.float32) if kp.shape[-1] > 2
                                 else np.ones(kp.shape[:2], np.float32))
        vis = np.asarray(keypoints_visible, np.float32).reshape(kp.shape[:2])
        Wx, Wy = self.num_bins
        mu = np.around(kp[..., :2] * self.split_ratio).astype(np.int64)  # (N, K, 2)
        weights = vis.copy()
        labelled = vis >= 0.5
        if self.smoothing == "standard":
            inb = (mu[..., 0] < Wx) & (mu[..., 1] < Wy) & (mu[..., 0] >= 0) & (mu[..., 1] >= 0)
            use = labelled & inb
            tx = np.zeros((*kp.shape[:2], Wx), np.float32)
            ty = np.zeros((*kp.shape[:2], Wy), np.float32)
            if self.label_smooth_weight > 0:
                tx[use] = self.label_smooth_weight / (Wx - 1)
                ty[use] = self.label_smooth_weight / (Wy - 1)
            n, k = np.nonzero(use)
            tx[n, k, mu[n, k, 0]] = 1.0 - self.label_smooth_weight
            ty[n, k, mu[n, k, 1]] = 1.0 - self.label_smooth_weight
        else:
            sx, sy = self.sigma
            rx, ry = 3 * sx, 3 * sy
            inb = ~((mu[..., 0] - rx >= Wx) | (mu[..., 1] - ry >= Wy) | (mu[..., 0] + rx + 1 < 0)
                    | (mu[..., 1] + ry + 1 < 0))
            use = labelled & inb
            x = np.arange(Wx, dtype=np.float32)
            y = np.arange(Wy, dtype=np.float32)
            tx = np.exp(-((x - mu[..., 0:1]) ** 2) / (2 * sx ** 2)).astype(np.float32)
            ty = np.exp(-((y - mu[..., 1:2]) ** 2) / (2 * sy ** 2)).astype(np.float32)
            tx[~use] = 0
            ty[~use] = 0
            if self.normalize:
                tx /= sx * np.sqrt(2 * np.pi)
                ty /= sy * np.sqrt(2 * np.pi)
        weights[labelled & ~inb] = 0
        return {"keypoint_x_labels": tx.astype(np.float32), "keypoint_y_labels": ty.astype(np.float32),
                "keypoint_weights": weights.astype(np.float32)}

    def decode(self, simcc_x, simcc_y) -> Tuple[np.ndarray, np.ndarray]:
        """``(B, K, Wx)``, ``(B, K, Wy)`` (numpy or torch) -> ``(keypoints (B, K, 2) input pixels, scores (B, K))``."""
        if hasattr(simcc_x, "detach"):
            simcc_x = simcc_x.detach().cpu().numpy()
        if hasattr(simcc_y, "detach"):
            simcc_y = simcc_y.detach().cpu().numpy()
        sx, sy = np.asarray(simcc_x, np.float32), np.asarray(simcc_y, np.float32)
        if sx.ndim == 2:
            sx, sy = sx[None], sy[None]
        Wx, Wy = self.num_bins
        if sx.shape[-1] != Wx or sy.shape[-1] != Wy:
            raise ValueError(f"SimCC outputs have {sx.shape[-1]} x-bins and {sy.shape[-1]} y-bins, "
                             f"codec expects {Wx} and {Wy}")
        locs, vals = get_simcc_maximum(sx, sy)
        return (locs / np.float32(self.split_ratio)).astype(np.float32), vals.astype(np.float32)


def simcc_codec_from_mmpose(cfg: Mapping[str, Any]) -> SimCCCodec:
    """A :class:`SimCCCodec` from an MMPose ``SimCCLabel`` config dict (``use_dark=True`` is not supported)."""
    if cfg.get("type") != "SimCCLabel":
        raise ValueError(f"codec type {cfg.get('type')!r} is not 'SimCCLabel'")
    if cfg.get("use_dark", False):
        raise ValueError("SimCCLabel use_dark=True is not supported by posekit's SimCCCodec")
    sigma = cfg.get("sigma", 6.0)
    return SimCCCodec(
        input_size=tuple(cfg["input_size"]),
        sigma=sigma if np.isscalar(sigma) else tuple(sigma),
        split_ratio=float(cfg.get("simcc_split_ratio", 2.0)),
        smoothing=cfg.get("smoothing_type", "gaussian"),
        label_smooth_weight=float(cfg.get("label_smooth_weight", 0.0)),
        normalize=bool(cfg.get("normalize", True)),
    )
