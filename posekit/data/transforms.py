"""Augmentation and preprocessing transforms on the sample dict.

Every transform is a small class whose ``__call__(sample, rng) -> sample`` takes the sample dict (see
``docs/architecture.md``) and a ``numpy.random.Generator`` and returns a **new** dict (the input dict and its
arrays are not modified). Geometric transforms move ``image``, ``keypoints``, ``boxes``, ``mask`` and the top-down
``center`` together and compose their matrix into ``sample["warp"]`` (original image -> current frame), so
predictions in the current frame map back with ``geometry.invert_affine(sample["warp"])``.

Rules shared by every geometric transform (see ``docs/augmentation.md``):

* coordinates use pixel centres at integer coordinates;
* a keypoint that ends up off the output image (outside ``-0.5 <= x < w - 0.5``, ``-0.5 <= y < h - 0.5``) keeps
  its coordinates but gets ``v = 0`` ("not labelled"); a keypoint never becomes visible again;
* a box becomes the axis-aligned box of its 4 mapped corners, clipped to ``[0, w - 1] x [0, h - 1]``; people are
  never dropped (arrays stay aligned with ``ann_ids``); ``areas`` are scaled by ``|det|`` of the map;
* masks warp with nearest-neighbour interpolation and the area that comes from outside the source image is 1;
* the horizontal flip maps the image onto itself (``x' = W - 1 - x``) and changes no visibility.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

from posekit.data import geometry as G
from posekit.schema import KeypointSchema

__all__ = [
    "Compose",
    "RandomFlip",
    "RandomHalfBody",
    "RandomBBoxTransform",
    "TopDownAffine",
    "RandomAffine",
    "Letterbox",
    "ColorJitter",
    "HSVRandomAug",
    "RandomBlur",
    "CoarseDropout",
    "EpochSwitch",
    "YOLOXMixUp",
    "apply_affine_to_sample",
]


# ------------------------------------------------------------------------------------------------ helpers
_FLIP_AWARE = ("RandomFlip", "RandomHalfBody", "RandomBBoxTransform", "TopDownAffine", "RandomAffine")


def _check_sample(sample: dict, who: str, need_cs: bool = False) -> tuple[int, int]:
    """Validate the fields a transform uses; returns the image ``(w, h)``."""
    if sample.get("flip_pending") and who not in _FLIP_AWARE:
        raise ValueError(f"{who}: the sample has a deferred flip (RandomFlip(defer_image=True)); put an affine "
                         f"transform (TopDownAffine, RandomAffine) between the flip and {who}")
    if not isinstance(sample, dict):
        raise ValueError(f"{who}: sample must be a dict, got {type(sample).__name__}")
    img = sample.get("image")
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(
            f"{who}: sample['image'] must be an HxWx3 uint8 array, got "
            f"{getattr(img, 'shape', type(img).__name__)} {getattr(img, 'dtype', '')}"
        )
    h, w = img.shape[:2]
    kp = sample.get("keypoints")
    n = None
    if kp is not None:
        kp = np.asarray(kp)
        if kp.ndim != 3 or kp.shape[2] != 3:
            raise ValueError(f"{who}: sample['keypoints'] must be (N, K, 3), got {kp.shape}")
        n = kp.shape[0]
    bx = sample.get("boxes")
    if bx is not None:
        bx = np.asarray(bx)
        if bx.ndim != 2 or bx.shape[1] != 4:
            raise ValueError(f"{who}: sample['boxes'] must be (N, 4) xyxy, got {bx.shape}")
        if n is not None and bx.shape[0] != n:
            raise ValueError(f"{who}: {bx.shape[0]} boxes for {n} keypoint sets in sample")
    mask = sample.get("mask")
    if mask is not None and (not isinstance(mask, np.ndarray) or mask.shape != (h, w)):
        raise ValueError(f"{who}: sample['mask'] must be HxW = {(h, w)} like the image, got {getattr(mask, 'shape', mask)}")
    if "warp" in sample and np.asarray(sample["warp"]).shape != (2, 3):
        raise ValueError(f"{who}: sample['warp'] must be a 2x3 affine matrix, got {np.asarray(sample['warp']).shape}")
    if need_cs:
        for key in ("center", "scale"):
            if key not in sample:
                raise KeyError(f"{who}: needs a top-down sample with {key!r} (centre/scale of the person box)")
            if np.asarray(sample[key]).shape != (2,):
                raise ValueError(f"{who}: sample[{key!r}] must have shape (2,), got {np.asarray(sample[key]).shape}")
        if not np.all(np.asarray(sample["scale"]) > 0):
            raise ValueError(f"{who}: sample['scale'] must be > 0, got {np.asarray(sample['scale']).tolist()}")
    return w, h


def _warp_of(sample: dict) -> np.ndarray:
    return np.asarray(sample.get("warp", np.eye(2, 3)), dtype=np.float64)


def apply_affine_to_sample(
    sample: dict,
    M: np.ndarray,
    out_size: Sequence[int],
    image: np.ndarray | None = None,
    border_value: float = 0,
    interpolation: int = cv2.INTER_LINEAR,
    zero_outside: bool = True,
) -> dict:
    """Move a sample by the affine ``M`` (current frame -> output of ``out_size = (w, h)``).

    Warps the image (unless the already-warped ``image`` is given), keypoints (``v = 0`` for those off the output
    unless ``zero_outside=False``), boxes (mapped corners' box, clipped), areas (times ``|det M|``), the mask
    (nearest, 1 outside the source) and a top-down ``center`` (mapped) and ``scale`` (times the lengths of ``M``'s
    columns: exact without shear); composes ``M`` into ``warp``. Returns a new dict.
    """
    M = np.asarray(M, dtype=np.float64)
    w, h = G._as_size(out_size, "out_size")
    out = dict(sample)
    M_img = M
    if out.pop("flip_pending", False):  # RandomFlip(defer_image=True): flip and warp in one pass
        if image is not None:
            raise ValueError("apply_affine_to_sample: a deferred flip needs the image to be warped here")
        W = sample["image"].shape[1]
        M_img = G.compose_affine(M, np.array([[-1.0, 0.0, W - 1.0], [0.0, 1.0, 0.0]]))
    out["image"] = G.warp_image(sample["image"], M_img, (w, h), border_value, interpolation) if image is None else image
    if sample.get("keypoints") is not None:
        kp = np.array(sample["keypoints"], dtype=np.float32, copy=True)
        xy = G.apply_affine(kp[..., :2].astype(np.float64), M)
        kp[..., :2] = xy
        if zero_outside:
            kp[..., 2] = np.where(G.points_inside(xy, (w, h)), kp[..., 2], 0.0)
        out["keypoints"] = kp
    if sample.get("boxes") is not None:
        b = np.asarray(sample["boxes"])
        out["boxes"] = G.clip_boxes(G.transform_boxes(b, M), (w, h)).astype(np.float32).reshape(b.shape)
    if sample.get("areas") is not None:
        det = abs(M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0])
        out["areas"] = (np.asarray(sample["areas"], dtype=np.float64) * det).astype(np.float32)
    if sample.get("mask") is not None:
        out["mask"] = G.warp_mask(sample["mask"], M, (w, h), fill=1)
    if "center" in sample:
        out["center"] = G.apply_affine(np.asarray(sample["center"], dtype=np.float64), M).astype(np.float32)
    if "scale" in sample:
        out["scale"] = (np.asarray(sample["scale"], dtype=np.float64) * np.linalg.norm(M[:, :2], axis=0)).astype(np.float32)
    out["warp"] = G.compose_affine(M, _warp_of(sample))
    return out


def _truncnorm(rng: np.random.Generator, size) -> np.ndarray:
    """Standard normal samples truncated to [-1, 1] (by rejection)."""
    z = rng.standard_normal(size)
    bad = np.abs(z) > 1
    while np.any(bad):
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 1
    return z


def _rng(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng()
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


class Compose:
    """Apply transforms in order: ``Compose([t1, t2])(sample, rng) == t2(t1(sample, rng), rng)``."""

    def __init__(self, transforms: Iterable):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise ValueError(f"Compose: {t!r} is not callable")

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        rng = _rng(rng)
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


# -------------------------------------------------------------------------------------------------- flip
class RandomFlip:
    """Horizontal flip with probability ``prob``: ``x' = W - 1 - x``; left/right keypoints swap with
    ``schema.flip_index``; boxes, mask, top-down ``center`` flip too and ``rotation`` changes sign.

    ``defer_image=True``: the image is not copied; ``sample["flip_pending"]`` records the flip and the next affine
    (:class:`TopDownAffine`, :class:`RandomAffine`) samples the stored image through the composed matrix, one
    ``warpAffine`` for flip + crop (the same sampling points; no full-size flipped copy). Only the geometric
    transforms that do not read pixels may run in between (others raise)."""

    def __init__(self, schema: KeypointSchema, prob: float = 0.5, defer_image: bool = False):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomFlip: prob must be in [0, 1], got {prob!r}")
        self.schema = schema
        self.prob = float(prob)
        self.flip_index = np.asarray(schema.flip_index)
        self.defer_image = bool(defer_image)

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        rng = _rng(rng)
        w, h = _check_sample(sample, "RandomFlip")
        if not rng.random() < self.prob:
            return dict(sample)
        return self.flip(sample)

    def flip(self, sample: dict) -> dict:
        """Flip unconditionally."""
        w, h = _check_sample(sample, "RandomFlip")
        out = dict(sample)
        if self.defer_image:  # fused into the next affine's single warpAffine (see apply_affine_to_sample)
            out["flip_pending"] = not sample.get("flip_pending", False)
        else:
            out["image"] = np.ascontiguousarray(sample["image"][:, ::-1])
        if sample.get("mask") is not None:
            out["mask"] = np.ascontiguousarray(sample["mask"][:, ::-1])
        if sample.get("keypoints") is not None:
            kp = np.asarray(sample["keypoints"])
            if kp.shape[1] != len(self.flip_index):
                raise ValueError(
                    f"RandomFlip: keypoints have K={kp.shape[1]} but schema {self.schema.name!r} has "
                    f"{len(self.flip_index)}"
                )
            kp = np.array(kp[:, self.flip_index], dtype=np.float32)
            kp[..., 0] = np.float32(w - 1) - kp[..., 0]
            out["keypoints"] = kp
        if sample.get("boxes") is not None:
            b = np.array(sample["boxes"], dtype=np.float32)
            b[:, [0, 2]] = np.float32(w - 1) - b[:, [2, 0]]
            out["boxes"] = b
        if "center" in sample:
            c = np.array(sample["center"], dtype=np.float32)
            c[0] = np.float32(w - 1) - c[0]
            out["center"] = c
        if "rotation" in sample:
            out["rotation"] = -float(sample["rotation"])
        F = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]])
        out["warp"] = G.compose_affine(F, _warp_of(sample))
        return out

    def __repr__(self) -> str:
        return f"RandomFlip(schema={self.schema.name!r}, prob={self.prob})"


# ------------------------------------------------------------------------------------------- top-down
class RandomHalfBody:
    """Top-down: with probability ``prob`` replace ``center``/``scale`` by the box of the visible upper-body
    (``schema.upper_body``) or lower-body keypoints.

    Applies only when the person has at least ``min_keypoints`` keypoints with ``v > 0``. The upper half is
    chosen with probability ``upper_prob`` when it has ``>= min_part_keypoints`` visible keypoints, else the lower
    half if it has enough, else nothing happens. The new scale is the keypoints' box, enlarged to the previous
    scale's aspect ratio, times ``padding``; the new centre is the box's midpoint.
    """

    def __init__(
        self,
        schema: KeypointSchema,
        prob: float = 0.3,
        min_keypoints: int = 8,
        padding: float = 1.5,
        min_part_keypoints: int = 2,
        upper_prob: float = 0.5,
    ):
        if not 0.0 <= prob <= 1.0 or not 0.0 <= upper_prob <= 1.0:
            raise ValueError(f"RandomHalfBody: prob and upper_prob must be in [0, 1], got {prob!r}, {upper_prob!r}")
        if not padding > 0:
            raise ValueError(f"RandomHalfBody: padding must be > 0, got {padding!r}")
        if not schema.upper_body:
            raise ValueError(f"RandomHalfBody: schema {schema.name!r} has no upper_body split")
        self.schema = schema
        self.prob = float(prob)
        self.min_keypoints = int(min_keypoints)
        self.padding = float(padding)
        self.min_part_keypoints = max(2, int(min_part_keypoints))
        self.upper_prob = float(upper_prob)
        self.upper = np.asarray(schema.upper_body, dtype=np.int64)
        self.lower = np.asarray(schema.lower_body, dtype=np.int64)

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        rng = _rng(rng)
        _check_sample(sample, "RandomHalfBody", need_cs=True)
        kp = np.asarray(sample["keypoints"])
        if kp.shape[0] != 1:
            raise ValueError(f"RandomHalfBody: needs one person per sample (top-down), got N={kp.shape[0]}")
        if kp.shape[1] != self.schema.num_keypoints:
            raise ValueError(f"RandomHalfBody: keypoints have K={kp.shape[1]}, schema {self.schema.name!r} has "
                             f"{self.schema.num_keypoints}")
        u1, u2 = rng.random(), rng.random()
        vis = kp[0, :, 2] > 0
        if vis.sum() < self.min_keypoints or not u1 < self.prob:
            return dict(sample)
        up = self.upper[vis[self.upper]]
        lo = self.lower[vis[self.lower]]
        ok_up, ok_lo = len(up) >= self.min_part_keypoints, len(lo) >= self.min_part_keypoints
        if ok_up and (u2 < self.upper_prob or not ok_lo):
            idx = up
        elif ok_lo:
            idx = lo
        else:
            return dict(sample)
        pts = kp[0, idx, :2].astype(np.float64)
        lo_xy, hi_xy = pts.min(axis=0), pts.max(axis=0)
        size = hi_xy - lo_xy
        if not np.any(size > 0):
            return dict(sample)
        old = np.asarray(sample["scale"], dtype=np.float64)
        scale = G.fix_aspect_ratio(size, old[0] / old[1]) * self.padding
        out = dict(sample)
        out["center"] = ((lo_xy + hi_xy) * 0.5).astype(np.float32)
        out["scale"] = scale.astype(np.float32)
        return out

    def __repr__(self) -> str:
        return f"RandomHalfBody(prob={self.prob}, min_keypoints={self.min_keypoints}, padding={self.padding})"


class RandomBBoxTransform:
    """Top-down: jitter the person box (MMPose's ``RandomBBoxTransform``).

    With probability ``shift_prob`` the centre moves by ``t * shift_factor * scale`` (``t`` a standard normal
    truncated to [-1, 1], per axis); with probability ``scale_prob`` the scale is multiplied by a truncated normal
    spanning ``scale_range`` (mean the midpoint, sigma half the width); with probability ``rot_prob`` a rotation of
    ``t * rot_factor`` degrees is added to ``sample["rotation"]`` (which is set to 0 otherwise when absent). The
    image is not touched: :class:`TopDownAffine` applies the result.
    """

    def __init__(
        self,
        shift_factor: float = 0.16,
        scale_range: tuple[float, float] = (0.75, 1.25),
        rot_factor: float = 80.0,
        rot_prob: float = 0.6,
        shift_prob: float = 0.3,
        scale_prob: float = 1.0,
    ):
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"RandomBBoxTransform: scale_range must be 0 < lo <= hi, got {scale_range!r}")
        for name, p in (("rot_prob", rot_prob), ("shift_prob", shift_prob), ("scale_prob", scale_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"RandomBBoxTransform: {name} must be in [0, 1], got {p!r}")
        self.shift_factor = float(shift_factor)
        self.scale_range = (lo, hi)
        self.rot_factor = float(rot_factor)
        self.rot_prob, self.shift_prob, self.scale_prob = float(rot_prob), float(shift_prob), float(scale_prob)

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        rng = _rng(rng)
        _check_sample(sample, "RandomBBoxTransform", need_cs=True)
        center = np.asarray(sample["center"], dtype=np.float64)
        scale = np.asarray(sample["scale"], dtype=np.float64)
        u = rng.random(3)
        t_shift, t_scale, t_rot = _truncnorm(rng, 2), _truncnorm(rng, 1)[0], _truncnorm(rng, 1)[0]
        if u[0] < self.shift_prob:
            center = center + t_shift * self.shift_factor * scale
        if u[1] < self.scale_prob:
            lo, hi = self.scale_range
            scale = scale * (t_scale * (hi - lo) * 0.5 + (hi + lo) * 0.5)
        rot = float(sample.get("rotation", 0.0))
        if u[2] < self.rot_prob:
            rot += float(t_rot * self.rot_factor)
        out = dict(sample)
        out["center"] = center.astype(np.float32)
        out["scale"] = scale.astype(np.float32)
        out["rotation"] = rot
        return out

    def __repr__(self) -> str:
        return (f"RandomBBoxTransform(shift_factor={self.shift_factor}, scale_range={self.scale_range}, "
                f"rot_factor={self.rot_factor}, rot_prob={self.rot_prob})")


class TopDownAffine:
    """Top-down: crop the (rotated) person box ``center, scale, rotation`` to the model input ``input_size =
    (w, h)`` with :func:`geometry.get_affine_matrix` (classic or ``udp``).

    The scale is first enlarged to the input's aspect ratio; the output sample keeps that ``center``/``scale`` in
    the frame *before* the crop (as MMPose does: what heatmap decoders need) and records ``input_size``; the crop
    itself is composed into ``warp``. Keypoints outside the crop get ``v = 0`` like in every geometric transform;
    ``keep_outside_visibility=True`` keeps their ``v`` instead (their coordinates are always kept).
    """

    def __init__(
        self,
        input_size: Sequence[int],
        udp: bool = False,
        keep_outside_visibility: bool = False,
        border_value: float = 0,
        interpolation: int = cv2.INTER_LINEAR,
    ):
        self.input_size = G._as_size(input_size, "TopDownAffine input_size")
        self.udp = bool(udp)
        self.keep_outside_visibility = bool(keep_outside_visibility)
        self.border_value = border_value
        self.interpolation = interpolation

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        _check_sample(sample, "TopDownAffine", need_cs=True)
        w, h = self.input_size
        center = np.asarray(sample["center"], dtype=np.float64)
        scale = G.fix_aspect_ratio(np.asarray(sample["scale"], dtype=np.float64), w / h)
        rot = float(sample.get("rotation", 0.0))
        M = G.get_affine_matrix(center, scale, rot, (w, h), udp=self.udp)
        out = apply_affine_to_sample(
            sample, M, (w, h), border_value=self.border_value, interpolation=self.interpolation,
            zero_outside=not self.keep_outside_visibility,
        )
        out["center"] = center.astype(np.float32)
        out["scale"] = scale.astype(np.float32)
        out["rotation"] = rot
        out["input_size"] = (w, h)
        return out

    def __repr__(self) -> str:
        return f"TopDownAffine(input_size={self.input_size}, udp={self.udp})"


# ------------------------------------------------------------------------------------------- bottom-up
class RandomAffine:
    """Bottom-up: random zoom, rotation and translation of the whole image into ``output_size = (w, h)``.

    The base region is the whole image (centre ``((W - 1) / 2, (H - 1) / 2)``, size ``(W, H)`` enlarged to the
    output's aspect ratio, so the image fits the output at zoom 1). A zoom ``z`` drawn uniformly from
    ``scale_range`` divides the region (``z > 1`` makes people larger), a rotation is drawn uniformly from
    ``[-max_rotation, max_rotation]`` degrees and the centre moves by up to ``max_translate`` times the region's
    size on each axis. ``udp`` selects the UDP affine of :func:`geometry.get_affine_matrix`.
    """

    def __init__(
        self,
        scale_range: tuple[float, float] = (0.75, 1.5),
        max_rotation: float = 30.0,
        max_translate: float = 0.2,
        output_size: Sequence[int] = (512, 512),
        udp: bool = False,
        border_value: float = 0,
        interpolation: int = cv2.INTER_LINEAR,
    ):
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"RandomAffine: scale_range must be 0 < lo <= hi, got {scale_range!r}")
        if max_rotation < 0 or max_translate < 0:
            raise ValueError(f"RandomAffine: max_rotation and max_translate must be >= 0, got "
                             f"{max_rotation!r}, {max_translate!r}")
        self.scale_range = (lo, hi)
        self.max_rotation = float(max_rotation)
        self.max_translate = float(max_translate)
        self.output_size = G._as_size(output_size, "RandomAffine output_size")
        self.udp = bool(udp)
        self.border_value = border_value
        self.interpolation = interpolation

    def matrix(self, image_size: Sequence[int], zoom: float, rot: float, shift: Sequence[float]) -> np.ndarray:
        """The affine (current image of ``image_size = (W, H)`` -> output) for given draws."""
        W, H = image_size
        ow, oh = self.output_size
        region = G.fix_aspect_ratio(np.array([W, H], dtype=np.float64), ow / oh) / zoom
        center = np.array([(W - 1) * 0.5, (H - 1) * 0.5])
        return G.get_affine_matrix(center, region, rot, (ow, oh), shift=shift, udp=self.udp)

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        rng = _rng(rng)
        W, H = _check_sample(sample, "RandomAffine")
        zoom = rng.uniform(*self.scale_range)
        rot = rng.uniform(-self.max_rotation, self.max_rotation)
        shift = rng.uniform(-self.max_translate, self.max_translate, size=2)
        M = self.matrix((W, H), zoom, rot, shift)
        return apply_affine_to_sample(sample, M, self.output_size, border_value=self.border_value,
                                      interpolation=self.interpolation)

    def __repr__(self) -> str:
        return (f"RandomAffine(scale_range={self.scale_range}, max_rotation={self.max_rotation}, "
                f"max_translate={self.max_translate}, output_size={self.output_size}, udp={self.udp})")


class Letterbox:
    """Resize by a uniform ratio and pad to ``size = (w, h)`` (see :func:`geometry.letterbox`): top-left as the
    YOLOX/RTMO exports expect, or centred. Deterministic."""

    def __init__(self, size: Sequence[int], center: bool = False, pad_value: int = 114):
        self.size = G._as_size(size, "Letterbox size")
        self.center = bool(center)
        self.pad_value = pad_value

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        _check_sample(sample, "Letterbox")
        img, M, ratio = G.letterbox(sample["image"], self.size, pad_value=self.pad_value, center=self.center)
        out = apply_affine_to_sample(sample, M, self.size, image=img)
        out["letterbox_ratio"] = ratio
        return out

    def __repr__(self) -> str:
        return f"Letterbox(size={self.size}, center={self.center}, pad_value={self.pad_value})"


# ----------------------------------------------------------------------------------------------- colour
class ColorJitter:
    """Photometric jitter of the image only (uint8 BGR in and out), in a random order per call.

    Factors are drawn uniformly: brightness ``b`` in ``[max(0, 1 - brightness), 1 + brightness]`` (``img * b``),
    contrast ``c`` likewise (blend with the mean grey level), saturation ``s`` likewise (blend with the pixel's
    grey), hue ``d`` in ``[-hue, hue]`` turns (``hue <= 0.5``), added to the HSV hue. A strength of 0 skips its
    operation, so ``ColorJitter()`` returns the image unchanged. The result is rounded and clipped to uint8 once.
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0):
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not v >= 0:
                raise ValueError(f"ColorJitter: {name} must be >= 0, got {v!r}")
        if not 0 <= hue <= 0.5:
            raise ValueError(f"ColorJitter: hue must be in [0, 0.5], got {hue!r}")
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.saturation, self.hue = float(saturation), float(hue)

    @staticmethod
    def _grey(img: np.ndarray) -> np.ndarray:
        return img[..., 0] * 0.114 + img[..., 1] * 0.587 + img[..., 2] * 0.299

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        rng = _rng(rng)
        _check_sample(sample, "ColorJitter")
        out = dict(sample)
        ops = []
        if self.brightness > 0:
            ops.append(("b", rng.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness)))
        if self.contrast > 0:
            ops.append(("c", rng.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast)))
        if self.saturation > 0:
            ops.append(("s", rng.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation)))
        if self.hue > 0:
            ops.append(("h", rng.uniform(-self.hue, self.hue)))
        if not ops:
            return out
        img = sample["image"].astype(np.float32)
        for i in rng.permutation(len(ops)):
            kind, f = ops[i]
            if kind == "b":
                img = img * np.float32(f)
            elif kind == "c":
                m = np.float32(self._grey(img).mean())
                img = (img - m) * np.float32(f) + m
            elif kind == "s":
                g = self._grey(img)[..., None]
                img = (img - g) * np.float32(f) + g
            else:
                hsv = cv2.cvtColor(np.clip(img, 0, 255) / np.float32(255), cv2.COLOR_BGR2HSV)
                hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(f * 360.0), np.float32(360.0))
                img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR) * np.float32(255)
        out["image"] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        return out

    def __repr__(self) -> str:
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue})")


# ------------------------------------------------------------------------------------------------ RTMPose/RTMO photometric set
# The photometric augmentations of the RTMPose and RTMO recipes (MMDet's ``YOLOXHSVRandomAug``, Albumentations'
# ``Blur``, ``MedianBlur`` and ``CoarseDropout`` as MMPose's ``Albumentation`` wrapper calls them: on the image
# only). Each is a couple of OpenCV / NumPy calls, so they are written here rather than adding Albumentations and
# MMDet as dependencies; the draws follow those libraries' definitions.
class HSVRandomAug:
    """YOLOX HSV jitter (MMDet ``YOLOXHSVRandomAug``): gains ``uniform(-1, 1) * (hue_delta, saturation_delta,
    value_delta)``, each kept with probability 1/2, truncated to integers, added to OpenCV's 8-bit HSV (hue modulo
    180, saturation and value clipped to [0, 255])."""

    def __init__(self, hue_delta: int = 5, saturation_delta: int = 30, value_delta: int = 30):
        self.deltas = np.array([hue_delta, saturation_delta, value_delta], np.float64)
        if (self.deltas < 0).any():
            raise ValueError(f"HSVRandomAug: deltas must be >= 0, got {self.deltas.tolist()}")

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        rng = _rng(rng)
        _check_sample(sample, "HSVRandomAug")
        gains = rng.uniform(-1, 1, 3) * self.deltas * rng.integers(0, 2, 3)
        gains = gains.astype(np.int16)
        out = dict(sample)
        if not gains.any():
            return out
        # per-channel look-up tables: the same integers as adding the gains in int16, about 4x faster
        x = np.arange(256, dtype=np.int16)
        luts = [((x + gains[0]) % 180).astype(np.uint8), np.clip(x + gains[1], 0, 255).astype(np.uint8),
                np.clip(x + gains[2], 0, 255).astype(np.uint8)]
        h, s, v = cv2.split(cv2.cvtColor(sample["image"], cv2.COLOR_BGR2HSV))
        hsv = cv2.merge([cv2.LUT(h, luts[0]), cv2.LUT(s, luts[1]), cv2.LUT(v, luts[2])])
        out["image"] = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return out

    def __repr__(self) -> str:
        return f"HSVRandomAug(deltas={self.deltas.astype(int).tolist()})"


class RandomBlur:
    """With probability ``prob``: a box blur (``median=False``, Albumentations ``Blur``) or a median blur
    (``median=True``, ``MedianBlur``) with an odd kernel size drawn from ``[3, max_kernel]``."""

    def __init__(self, prob: float = 0.1, max_kernel: int = 7, median: bool = False):
        if not 0.0 <= prob <= 1.0 or max_kernel < 3:
            raise ValueError(f"RandomBlur: prob must be in [0, 1] and max_kernel >= 3, got {prob!r}, {max_kernel!r}")
        self.prob, self.max_kernel, self.median = float(prob), int(max_kernel), bool(median)

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        rng = _rng(rng)
        _check_sample(sample, "RandomBlur")
        out = dict(sample)
        if not rng.random() < self.prob:
            return out
        k = int(rng.choice(np.arange(3, self.max_kernel + 1, 2)))
        img = sample["image"]
        out["image"] = cv2.medianBlur(img, k) if self.median else cv2.blur(img, (k, k))
        return out

    def __repr__(self) -> str:
        return f"RandomBlur(prob={self.prob}, max_kernel={self.max_kernel}, median={self.median})"


class CoarseDropout:
    """With probability ``prob``: ``holes`` (drawn from ``[min_holes, max_holes]``) rectangles filled with
    ``fill``; each is ``h x w`` with ``h`` drawn from ``[min_height, max_height] * H`` and ``w`` likewise (fractions of
    the image, Albumentations ``CoarseDropout``), at a uniform position inside the image. Image only: keypoints
    under a hole keep their labels (the network learns to infer occluded joints)."""

    def __init__(self, prob: float = 1.0, min_holes: int = 1, max_holes: int = 1, min_height: float = 0.2,
                 max_height: float = 0.4, min_width: float = 0.2, max_width: float = 0.4, fill: int = 0):
        if not 0.0 <= prob <= 1.0 or not 1 <= min_holes <= max_holes:
            raise ValueError(f"CoarseDropout: prob must be in [0, 1] and 1 <= min_holes <= max_holes, got "
                             f"{prob!r}, {min_holes!r}, {max_holes!r}")
        if not (0 < min_height <= max_height <= 1 and 0 < min_width <= max_width <= 1):
            raise ValueError(f"CoarseDropout: sizes must be fractions 0 < min <= max <= 1, got "
                             f"{(min_height, max_height, min_width, max_width)!r}")
        self.prob = float(prob)
        self.holes = (int(min_holes), int(max_holes))
        self.heights = (float(min_height), float(max_height))
        self.widths = (float(min_width), float(max_width))
        self.fill = fill

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        rng = _rng(rng)
        W, H = _check_sample(sample, "CoarseDropout")
        out = dict(sample)
        if not rng.random() < self.prob:
            return out
        img = sample["image"].copy()
        for _ in range(int(rng.integers(self.holes[0], self.holes[1] + 1))):
            h = int(rng.integers(int(self.heights[0] * H), int(self.heights[1] * H) + 1))
            w = int(rng.integers(int(self.widths[0] * W), int(self.widths[1] * W) + 1))
            y = int(rng.integers(0, max(H - h, 0) + 1))
            x = int(rng.integers(0, max(W - w, 0) + 1))
            img[y:y + h, x:x + w] = self.fill
        out["image"] = img
        return out

    def __repr__(self) -> str:
        return f"CoarseDropout(prob={self.prob}, holes={self.holes}, heights={self.heights}, widths={self.widths})"


class EpochSwitch:
    """Two transform pipelines and the epoch (0-based) from which the second one is used (MMDet's
    ``PipelineSwitchHook``): ``set_epoch(e)`` picks; the dataset calls it through its own ``set_epoch``."""

    def __init__(self, first, second, switch_epoch: int):
        self.first, self.second, self.switch_epoch = first, second, int(switch_epoch)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def active(self):
        return self.second if self.epoch >= self.switch_epoch else self.first

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        return self.active(sample, rng)

    def __repr__(self) -> str:
        return f"EpochSwitch(at epoch {self.switch_epoch}: {self.first!r} -> {self.second!r})"


# ------------------------------------------------------------------------------------------------ mixing
class YOLOXMixUp:
    """MMPose's bottom-up ``YOLOXMixUp`` (RTMO, YOLOX-Pose): ``mix(sample, aux, rng)`` averages ``sample`` with
    a second, raw image ``aux`` placed as YOLOX does, and keeps the people of both.

    ``aux`` is fitted (aspect kept) to the top-left of an ``img_scale = (w, h)`` canvas filled with ``pad_value``,
    that canvas is rescaled by a jitter ``j`` drawn uniformly from ``ratio_range`` (to ``(int(w j), int(h j))``),
    mirrored about the rescaled canvas's width with probability ``flip_prob`` (left/right keypoints swapped by
    ``schema.flip_index``), padded to at least the size of ``sample``'s image and cropped to it at an offset
    ``(dx, dy)`` drawn uniformly from ``[0, max(0, canvas - size)]`` per axis. The image is
    ``floor((sample + placed aux) / 2)``. The four steps are one affine, so the placed ``aux`` is one
    ``cv2.warpAffine`` (the same sampling points as MMPose's two resizes up to their integer sizes).

    ``aux``'s keypoints and boxes follow the same affine (pixel centres: ``x' = s (x + 0.5) - 0.5``, then
    ``x' -> W' - 1 - x'`` when mirrored, then the crop); keypoints off the placed image or off the output get
    ``v = 0``, boxes are clipped to both, areas scale by ``|det|``. ``aux`` with no people leaves ``sample``
    unchanged, as in MMPose. ``matrix`` gives the affine and the placed image's window for given draws.
    """

    def __init__(self, schema: KeypointSchema, img_scale: Sequence[int] = (640, 640),
                 ratio_range: Sequence[float] = (0.8, 1.6), flip_prob: float = 0.5, pad_value: int = 114):
        lo, hi = (float(v) for v in ratio_range)
        if not 0 < lo <= hi:
            raise ValueError(f"YOLOXMixUp: ratio_range must be 0 < lo <= hi, got {ratio_range!r}")
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise ValueError(f"YOLOXMixUp: flip_prob must be in [0, 1], got {flip_prob!r}")
        self.schema = schema
        self.flip_index = np.asarray(schema.flip_index)
        self.img_scale = G._as_size(img_scale, "YOLOXMixUp img_scale")
        self.ratio_range = (lo, hi)
        self.flip_prob = float(flip_prob)
        self.pad_value = pad_value

    def matrix(self, aux_size: Sequence[int], jitter: float, flip: bool,
               offset: Sequence[int]) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """``(M, window)``: the affine from ``aux`` (of ``aux_size = (W, H)``) to the output and the placed
        image's extent ``(x0, y0, x1, y1)`` in output coordinates (pixel edges, ``-0.5`` based)."""
        W, H = (int(v) for v in aux_size)
        w, h = self.img_scale
        r = min(w / W, h / H)
        nw, nh = max(1, int(W * r)), max(1, int(H * r))           # the fitted image (mmcv.imresize sizes)
        cw, ch = max(1, int(w * jitter)), max(1, int(h * jitter))  # the rescaled canvas
        sx, sy = nw / W * cw / w, nh / H * ch / h                   # two resizes compose to one scale
        M = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
        x0, x1 = -0.5, nw * cw / w - 0.5
        if flip:
            M = G.compose_affine(np.array([[-1.0, 0.0, cw - 1.0], [0.0, 1.0, 0.0]]), M)
            x0, x1 = cw - 1.0 - x1, cw - 1.0 - x0
        dx, dy = (float(v) for v in offset)
        M[0, 2] -= dx
        M[1, 2] -= dy
        return M, (x0 - dx, -0.5 - dy, x1 - dx, nh * ch / h - 0.5 - dy)

    def mix(self, sample: dict, aux: dict, rng: np.random.Generator | None = None) -> dict:
        rng = _rng(rng)
        w, h = _check_sample(sample, "YOLOXMixUp")
        W, H = _check_sample(aux, "YOLOXMixUp (aux)")
        jitter = rng.uniform(*self.ratio_range)
        flip = bool(rng.uniform(0.0, 1.0) < self.flip_prob)
        cw, ch = max(1, int(self.img_scale[0] * jitter)), max(1, int(self.img_scale[1] * jitter))
        dy = int(rng.integers(0, max(0, max(ch, h) - h) + 1))
        dx = int(rng.integers(0, max(0, max(cw, w) - w) + 1))
        akp = aux.get("keypoints")
        if akp is None or len(akp) == 0:
            return dict(sample)
        M, (x0, y0, x1, y1) = self.matrix((W, H), jitter, flip, (dx, dy))
        placed = G.warp_image(aux["image"], M, (w, h), self.pad_value)
        img = ((sample["image"].astype(np.uint16) + placed.astype(np.uint16)) // 2).astype(np.uint8)
        kp = np.array(akp, np.float32, copy=True)
        if flip:
            if kp.shape[1] != len(self.flip_index):
                raise ValueError(f"YOLOXMixUp: keypoints have K={kp.shape[1]} but schema {self.schema.name!r} "
                                 f"has {len(self.flip_index)}")
            kp = kp[:, self.flip_index]
        xy = G.apply_affine(kp[..., :2].astype(np.float64), M)
        inside = ((xy[..., 0] >= max(x0, -0.5)) & (xy[..., 0] < min(x1, w - 0.5))
                  & (xy[..., 1] >= max(y0, -0.5)) & (xy[..., 1] < min(y1, h - 0.5)))
        kp[..., :2] = xy
        kp[..., 2] = np.where(inside, kp[..., 2], 0.0)
        b = G.transform_boxes(np.asarray(aux["boxes"], np.float64).reshape(-1, 4), M)
        bx0, bx1 = max(0.0, x0 + 0.5), max(0.0, min(w - 1.0, x1 - 0.5))
        by0, by1 = max(0.0, y0 + 0.5), max(0.0, min(h - 1.0, y1 - 0.5))
        b[:, 0::2] = np.clip(b[:, 0::2], bx0, max(bx0, bx1))
        b[:, 1::2] = np.clip(b[:, 1::2], by0, max(by0, by1))
        areas = np.asarray(aux["areas"], np.float64) * abs(M[0, 0] * M[1, 1])
        out = {**sample, "image": img,
               "keypoints": np.concatenate([np.asarray(sample["keypoints"], np.float32), kp]),
               "boxes": np.concatenate([np.asarray(sample["boxes"], np.float32).reshape(-1, 4), b.astype(np.float32)]),
               "areas": np.concatenate([np.asarray(sample["areas"], np.float32), areas.astype(np.float32)])}
        out.pop("ann_ids", None)
        out.pop("mask", None)
        return out

    def __repr__(self) -> str:
        return (f"YOLOXMixUp(img_scale={self.img_scale}, ratio_range={self.ratio_range}, "
                f"flip_prob={self.flip_prob}, pad_value={self.pad_value})")
