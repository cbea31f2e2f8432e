"""Image geometry: box <-> centre/scale, affine crops (classic and UDP), letterbox and warps.

Every function here is pure NumPy/OpenCV and uses one coordinate convention: continuous pixel coordinates with
**pixel centres at integer coordinates** (the convention of ``cv2.warpAffine``), so the pixel ``(i, j)`` covers
``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]`` and an image of width ``W`` spans ``[-0.5, W - 0.5]``.

Affine matrices are ``2x3`` float64 arrays ``M`` mapping a point ``p`` (column ``(x, y)``) to ``M[:, :2] @ p +
M[:, 2]``; they are the forward maps ``source -> destination`` that ``cv2.warpAffine`` takes.

Rotation: ``rot_deg > 0`` turns the image **content counter-clockwise** in the output (the same sense as
``cv2.getRotationMatrix2D`` and MMPose's classic ``get_warp_matrix``); equivalently the crop box is turned clockwise
in the source image.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

__all__ = [
    "box_xyxy_to_cs",
    "cs_to_box_xyxy",
    "fix_aspect_ratio",
    "get_affine_matrix",
    "apply_affine",
    "invert_affine",
    "compose_affine",
    "to_3x3",
    "transform_boxes",
    "clip_boxes",
    "points_inside",
    "letterbox",
    "letterbox_layout",
    "warp_image",
    "warp_mask",
]


# --------------------------------------------------------------------------------------------- validation
def _as_size(size, what: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be (w, h) integers, got {size!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"{what} must be positive (w, h), got {size!r}")
    return w, h


def _as_affine(M, what: str = "M") -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    if M.shape == (3, 3):
        M = M[:2]
    if M.shape != (2, 3):
        raise ValueError(f"{what} must be a 2x3 affine matrix, got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError(f"{what} has non-finite entries: {M.tolist()}")
    return M


# ------------------------------------------------------------------------------------------ boxes <-> cs
def fix_aspect_ratio(scales: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """Enlarge (never shrink) one side of each ``(w, h)`` in ``scales`` (shape ``(..., 2)``) so that ``w / h ==
    aspect_ratio``."""
    if not (aspect_ratio > 0 and np.isfinite(aspect_ratio)):
        raise ValueError(f"aspect_ratio must be a positive number, got {aspect_ratio!r}")
    s = np.asarray(scales, dtype=np.float64)
    w, h = s[..., 0], s[..., 1]
    wide = w > h * aspect_ratio
    return np.stack([np.where(wide, w, h * aspect_ratio), np.where(wide, w / aspect_ratio, h)], axis=-1)


def box_xyxy_to_cs(
    boxes: np.ndarray, aspect_ratio: float | None = None, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``x1, y1, x2, y2`` -> centres and scales.

    Args:
        boxes: ``(N, 4)`` or ``(4,)`` xyxy boxes in image pixels.
        aspect_ratio: target ``w / h`` of the scale (e.g. ``192 / 256`` for a 192x256 model input); the shorter
            side (relative to it) is enlarged, never shrunk. ``None`` keeps the box's own aspect ratio.
        padding: factor multiplied onto ``(w, h)`` *before* the aspect-ratio fix (MMPose's order).

    Returns:
        ``centers`` ``(N, 2)`` (or ``(2,)``) = box midpoints, ``scales`` ``(N, 2)`` (or ``(2,)``) = padded
        ``(w, h)`` in pixels, both float64.
    """
    b = np.asarray(boxes, dtype=np.float64)
    single = b.ndim == 1
    if b.shape[-1:] != (4,) or b.ndim not in (1, 2):
        raise ValueError(f"boxes must be (N, 4) or (4,) xyxy, got shape {b.shape}")
    if not (padding > 0):
        raise ValueError(f"padding must be > 0, got {padding!r}")
    b = b.reshape(-1, 4)
    centers = (b[:, :2] + b[:, 2:]) * 0.5
    scales = (b[:, 2:] - b[:, :2]) * float(padding)
    if aspect_ratio is not None:
        scales = fix_aspect_ratio(scales, float(aspect_ratio))
    if single:
        return centers[0], scales[0]
    return centers, scales


def cs_to_box_xyxy(centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Centres ``(N, 2)`` and scales ``(N, 2)`` (or ``(2,)`` each) -> xyxy boxes ``center -/+ scale / 2``.

    This is the inverse of :func:`box_xyxy_to_cs` only up to the padding and the aspect-ratio enlargement, which
    it does not undo: ``cs_to_box_xyxy(*box_xyxy_to_cs(b, padding=p))`` is ``b`` grown by ``p`` about its centre.
    """
    c = np.asarray(centers, dtype=np.float64)
    s = np.asarray(scales, dtype=np.float64)
    if c.shape[-1:] != (2,) or s.shape[-1:] != (2,):
        raise ValueError(f"centers and scales must end in 2, got {c.shape} and {s.shape}")
    return np.concatenate([c - 0.5 * s, c + 0.5 * s], axis=-1)


# --------------------------------------------------------------------------------------------- affines
def get_affine_matrix(
    center: Sequence[float],
    scale: Sequence[float],
    rot_deg: float,
    output_size: Sequence[int],
    shift: Sequence[float] = (0.0, 0.0),
    inv: bool = False,
    udp: bool = False,
) -> np.ndarray:
    """The 2x3 affine that maps the (rotated) box ``center, scale`` of an image onto an output of ``output_size``.

    The box has centre ``center`` (image pixels), size ``scale = (w, h)`` (image pixels) and is turned by
    ``rot_deg`` degrees (content appears rotated counter-clockwise in the output for ``rot_deg > 0``). ``shift``
    moves the centre by ``shift * scale`` (in unrotated image axes, as in MMPose). With ``(ow, oh) =
    output_size`` and ``R`` the rotation, the map is ``out = D @ R(-rot) @ (p - c') + t`` where:

    * classic (``udp=False``, MMPose's ``get_warp_matrix``): ``D = diag(ow / w, oh / h)`` and ``t = (ow / 2,
      oh / 2)``. The box edges ``c -/+ w/2`` go to ``0`` and ``ow``, i.e. to the outer edge of the first
      pixel's *centre* and half a pixel past the last: with pixel centres at integers this is biased by half an
      output pixel, and a horizontal flip of the output is not a flip of the box.
    * UDP (``udp=True``, Huang et al., CVPR 2020, "unbiased data processing"): ``D = diag((ow - 1) / w, (oh - 1)
      / h)`` and ``t = ((ow - 1) / 2, (oh - 1) / 2)``: the box, measured as the distance ``w`` between its
      extreme sample positions, spans the ``ow - 1`` units between the first and last output pixel centres.
      This is the formulation of the authors' code (``size_dst = image_size - 1``, ``size_target = s * 200``)
      and of MMPose 1.x ``get_udp_warp_matrix`` (``scale_x = (output_size[0] - 1) / scale[0]``). The box centre
      lands exactly on the output's centre ``(ow - 1) / 2``, so flipping the output (``x -> ow - 1 - x``) is
      exactly flipping the image about the box centre, and scaling between heatmap and input resolutions
      (``(in - 1) / (hm - 1)``) composes without drift. Note: MMPose's ``get_udp_warp_matrix`` rotates in the
      opposite sense to its classic matrix; here both use the classic sense, so ``rot_deg`` means the same
      thing with and without UDP.

    Args:
        center: ``(2,)`` box centre ``x, y`` in image pixels.
        scale: ``(2,)`` box size ``w, h`` in image pixels (> 0).
        rot_deg: rotation in degrees.
        output_size: ``(w, h)`` of the output image in pixels.
        shift: ``(2,)`` centre shift as a fraction of ``scale``.
        inv: return the output -> image map instead.
        udp: use the UDP mapping (see above).

    Returns:
        ``(2, 3)`` float64 matrix image -> output (or output -> image when ``inv``).
    """
    c = np.asarray(center, dtype=np.float64).reshape(-1)
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    sh = np.asarray(shift, dtype=np.float64).reshape(-1)
    if c.shape != (2,) or s.shape != (2,) or sh.shape != (2,):
        raise ValueError(f"center, scale and shift must have 2 values each, got {c.shape}, {s.shape}, {sh.shape}")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"center must be finite and scale finite and > 0, got center={c.tolist()} scale={s.tolist()}")
    ow, oh = _as_size(output_size, "output_size")
    c = c + s * sh
    if udp:
        dx, dy = (ow - 1.0) / s[0], (oh - 1.0) / s[1]
        t = np.array([(ow - 1.0) * 0.5, (oh - 1.0) * 0.5])
    else:
        dx, dy = ow / s[0], oh / s[1]
        t = np.array([ow * 0.5, oh * 0.5])
    a = np.deg2rad(float(rot_deg))
    cs, sn = np.cos(a), np.sin(a)
    lin = np.array([[dx * cs, dx * sn], [-dy * sn, dy * cs]])  # D @ R(-rot)
    M = np.empty((2, 3), dtype=np.float64)
    M[:, :2] = lin
    M[:, 2] = t - lin @ c
    return invert_affine(M) if inv else M


def to_3x3(M: np.ndarray) -> np.ndarray:
    """A ``2x3`` affine as a ``3x3`` homogeneous matrix (float64)."""
    M = _as_affine(M)
    out = np.eye(3)
    out[:2] = M
    return out


def apply_affine(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Map points ``(..., 2)`` through the ``2x3`` affine ``M``; returns float64 ``(..., 2)``."""
    M = _as_affine(M)
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-1:] != (2,):
        raise ValueError(f"points must have shape (..., 2), got {p.shape}")
    return p @ M[:, :2].T + M[:, 2]


def invert_affine(M: np.ndarray) -> np.ndarray:
    """The inverse of a ``2x3`` affine (float64); raises ValueError when it is singular."""
    M = _as_affine(M)
    A = M[:, :2]
    det = A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0]
    if abs(det) < 1e-12:
        raise ValueError(f"affine matrix is singular (det={det:.3g}): {M.tolist()}")
    Ai = np.array([[A[1, 1], -A[0, 1]], [-A[1, 0], A[0, 0]]]) / det
    out = np.empty((2, 3))
    out[:, :2] = Ai
    out[:, 2] = -Ai @ M[:, 2]
    return out


def compose_affine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A`` after ``B``: the ``2x3`` affine ``p -> A(B(p))``."""
    return (to_3x3(A) @ to_3x3(B))[:2]


# ----------------------------------------------------------------------------------- boxes and points
def transform_boxes(boxes: np.ndarray, M: np.ndarray) -> np.ndarray:
    """The axis-aligned xyxy box around the 4 mapped corners of each box ``(N, 4)``; float64 ``(N, 4)``."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape (N, 4), got {b.shape}")
    b = b.reshape(-1, 4)
    corners = np.stack(
        [b[:, [0, 1]], b[:, [2, 1]], b[:, [0, 3]], b[:, [2, 3]]], axis=1
    )  # (N, 4, 2)
    p = apply_affine(corners, M)
    return np.concatenate([p.min(axis=1), p.max(axis=1)], axis=1)


def clip_boxes(boxes: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Clip xyxy boxes ``(N, 4)`` to the pixel-centre range ``[0, w - 1] x [0, h - 1]`` of an image of ``size``."""
    w, h = _as_size(size, "size")
    b = np.asarray(boxes, dtype=np.float64).copy()
    b[..., 0::2] = np.clip(b[..., 0::2], 0.0, w - 1.0)
    b[..., 1::2] = np.clip(b[..., 1::2], 0.0, h - 1.0)
    return b


def points_inside(points: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Boolean ``(...)``: whether each point ``(..., 2)`` lies on a pixel of an image of ``size = (w, h)``.

    A point is inside when ``-0.5 <= x < w - 0.5`` and ``-0.5 <= y < h - 0.5`` (the area the pixels cover), so
    ``np.floor(p + 0.5)`` of an inside point is a valid pixel index.
    """
    w, h = _as_size(size, "size")
    p = np.asarray(points, dtype=np.float64)
    x, y = p[..., 0], p[..., 1]
    return (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)


# ----------------------------------------------------------------------------------------------- images
def _border(value, channels: int):
    if np.isscalar(value):
        return (float(value),) * 4
    v = tuple(float(x) for x in value)
    if len(v) not in (1, channels):
        raise ValueError(f"border value {value!r} does not match an image with {channels} channels")
    return v if len(v) > 1 else v * 4


def warp_image(
    image: np.ndarray,
    M: np.ndarray,
    size: Sequence[int],
    border_value: float | Sequence[float] = 0,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """``cv2.warpAffine`` of ``image`` (``HxW`` or ``HxWxC``) by the forward map ``M`` (image -> output) into an
    output of ``size = (w, h)``; constant border ``border_value`` (a scalar fills every channel)."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"image must be a non-empty HxW or HxWxC array, got {getattr(image, 'shape', type(image))}")
    w, h = _as_size(size, "size")
    ch = 1 if image.ndim == 2 else image.shape[2]
    out = cv2.warpAffine(
        image, _as_affine(M), (w, h), flags=interpolation,
        borderMode=cv2.BORDER_CONSTANT, borderValue=_border(border_value, ch),
    )
    if image.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing channel axis of 1
        out = out[:, :, None]
    return out


def warp_mask(mask: np.ndarray, M: np.ndarray, size: Sequence[int], fill: int = 1) -> np.ndarray:
    """Warp an ``HxW`` mask with nearest-neighbour interpolation; output pixels that come from outside the source
    get ``fill`` (default 1: "nothing to ignore there" for loss masks)."""
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty HxW array, got {getattr(mask, 'shape', type(mask))}")
    return warp_image(mask, M, size, border_value=fill, interpolation=cv2.INTER_NEAREST)


def letterbox(
    image: np.ndarray,
    size: Sequence[int],
    pad_value: int = 114,
    center: bool = False,
    interpolation: int = cv2.INTER_LINEAR,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Resize one image by the uniform ratio ``s = min(w / W, h / H)`` and pad it to ``size = (w, h)``.

    The resized image is ``(int(W * s), int(H * s))`` pixels (made with ``cv2.resize``, as the YOLOX / RTMO /
    MMDeploy exports expect), placed at the top-left of a canvas filled with ``pad_value`` (``center=False``) or
    in its middle (``center=True``, offsets ``((w - nw) // 2, (h - nh) // 2)``).

    Returns:
        ``out`` (``h x w`` like ``image``), ``M`` (2x3 float64, image -> ``out``) and ``ratio`` ``s``.
        ``M`` is exactly what ``cv2.resize`` did to the pixels in the pixel-centre convention: ``x' = sx * (x +
        0.5) - 0.5 + left`` with ``sx = nw / W`` (likewise for ``y``). YOLOX-style post-processing that divides
        by ``ratio`` instead differs from ``invert_affine(M)`` by at most ``0.5 * |W / nw - 1| + (W * s - nw) / s``
        pixels (the second term, below ``1 / s``, is the rounding of ``nw``; likewise for ``y``). (``cv2.INTER_NEAREST`` does not follow the pixel-centre convention; prefer
        ``INTER_LINEAR``/``INTER_AREA``.)
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"image must be a non-empty HxW or HxWxC array, got {getattr(image, 'shape', type(image))}")
    w, h = _as_size(size, "size")
    (nw, nh), (left, top), M, s = letterbox_layout(image.shape, (w, h), center)
    H, W = image.shape[:2]
    resized = image if (nw, nh) == (W, H) else cv2.resize(image, (nw, nh), interpolation=interpolation)
    if resized.ndim == 2 and image.ndim == 3:
        resized = resized[:, :, None]
    out = np.empty((h, w) + image.shape[2:], dtype=image.dtype)
    out[...] = pad_value
    out[top:top + nh, left:left + nw] = resized
    return out, M, s


def letterbox_layout(image_shape: Sequence[int], size: Sequence[int], center: bool = False
                     ) -> tuple[tuple[int, int], tuple[int, int], np.ndarray, float]:
    """Where :func:`letterbox` puts an ``(H, W, ...)`` image in a ``size = (w, h)`` canvas, without touching pixels.

    Returns:
        ``(nw, nh)`` the resized size, ``(left, top)`` its offset, ``M`` (2x3, image -> canvas) and ``ratio``.
    """
    w, h = _as_size(size, "size")
    H, W = int(image_shape[0]), int(image_shape[1])
    s = min(w / W, h / H)
    nw = min(w, max(1, int(W * s + 1e-6)))
    nh = min(h, max(1, int(H * s + 1e-6)))
    left, top = ((w - nw) // 2, (h - nh) // 2) if center else (0, 0)
    sx, sy = nw / W, nh / H
    M = np.array([[sx, 0.0, 0.5 * sx - 0.5 + left], [0.0, sy, 0.5 * sy - 0.5 + top]])
    return (nw, nh), (left, top), M, float(s)
