"""Drawing: skeletons, keypoints, boxes, scores and track ids; image grids; an atomic video writer.

Every function takes and returns ``H x W x 3`` uint8 **BGR** images (OpenCV). Schema colours are RGB and are
converted here. Coordinates are image pixels with pixel centres at integer coordinates; drawing is sub-pixel
accurate (OpenCV ``shift``) and anti-aliased.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from posekit.schema import COCO17, KeypointSchema, get_schema
from posekit.structures import Person

__all__ = ["draw_people", "draw_ground_truth", "make_grid", "write_image", "VideoWriter", "id_color", "clip_from_images"]

_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT


def write_image(path, img, quality: int | None = None) -> Path:
    """Write an image atomically; this is :func:`posekit.data.io.write_image` (re-exported for convenience)."""
    from posekit.data.io import write_image as _write

    return Path(_write(path, img, quality=quality))


def id_color(track_id: int) -> tuple[int, int, int]:
    """A stable, well-separated BGR colour for an integer id (golden-ratio hue walk)."""
    hue = (int(track_id) * 0.618033988749895) % 1.0
    hsv = np.array([[[int(hue * 180), 200, 255]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _bgr(rgb: Sequence[int]) -> tuple[int, int, int]:
    return int(rgb[2]), int(rgb[1]), int(rgb[0])


def _fix(p) -> tuple[int, int]:
    return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))


def _check_image(image, copy: bool) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got dtype {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 (BGR) or HxW, got shape {image.shape}")
    return image.copy() if copy else image


def _default_sizes(image: np.ndarray, radius, thickness) -> tuple[int, int]:
    side = max(image.shape[:2])
    if radius is None:
        radius = max(2, int(round(side * 0.006)))
    if thickness is None:
        thickness = max(1, int(round(side * 0.003)))
    if radius < 0 or thickness < 1:
        raise ValueError(f"radius must be >= 0 and thickness >= 1, got radius={radius}, thickness={thickness}")
    return int(radius), int(thickness)


def _draw_skeleton(img, kpts, ok, hollow, schema: KeypointSchema, radius: int, thickness: int) -> None:
    """Links where both ends are ``ok`` then keypoints; ``hollow[k]`` draws keypoint k as a ring."""
    for (a, b), col in zip(schema.skeleton, schema.skeleton_colors):
        if ok[a] and ok[b]:
            cv2.line(img, _fix(kpts[a]), _fix(kpts[b]), _bgr(col), thickness, cv2.LINE_AA, _SHIFT)
    for k in np.flatnonzero(ok):
        col = _bgr(schema.keypoint_colors[k])
        if hollow is not None and hollow[k]:
            cv2.circle(img, _fix(kpts[k]), max(radius, 2) * _ONE, col, 1, cv2.LINE_AA, _SHIFT)
        else:
            cv2.circle(img, _fix(kpts[k]), radius * _ONE, col, -1, cv2.LINE_AA, _SHIFT)


def _put_label(img, text: str, x: float, y: float, color, scale: float) -> None:
    """Text with a filled background box whose bottom-left corner is at (x, y), kept inside the image."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    th = max(1, int(round(scale * 2)))
    (tw, tht), base = cv2.getTextSize(text, font, scale, th)
    h, w = img.shape[:2]
    x = int(min(max(x, 0), max(w - tw - 2, 0)))
    y = int(min(max(y, tht + base + 2), h - 1))
    cv2.rectangle(img, (x, y - tht - base - 2), (x + tw + 2, y), color, -1)
    lum = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    cv2.putText(img, text, (x + 1, y - base), font, scale, (0, 0, 0) if lum > 128 else (255, 255, 255), th,
                cv2.LINE_AA)


def draw_people(
    image: np.ndarray,
    people,
    schema: KeypointSchema | str = COCO17,
    kpt_thr: float = 0.3,
    draw_boxes: bool = False,
    draw_scores: bool = False,
    draw_ids: bool = True,
    radius: int | None = None,
    thickness: int | None = None,
    copy: bool = True,
    boxes=None,
    scores=None,
    track_ids=None,
) -> np.ndarray:
    """Draw skeletons (and optionally boxes, scores, track ids) of people on a BGR image.

    Args:
        image: ``H x W x 3`` uint8 BGR (a 2-D grey image is converted to BGR, which implies a copy).
        people: a list of :class:`~posekit.structures.Person`, or a keypoint array ``(N, K, 3)`` / ``(K, 3)`` of
            ``x, y, score`` in image pixels.
        schema: the keypoint schema (its skeleton and RGB colours); ``K`` must match it.
        kpt_thr: keypoints with score ``<= kpt_thr`` are not drawn; a link is drawn only when both ends are above.
        draw_boxes, draw_scores, draw_ids: draw the box, the instance score, the track id (ids are drawn only when
            present; with ``draw_ids`` the box of a tracked person takes the id's colour).
        radius, thickness: keypoint radius and link thickness in pixels; by default they scale with the image
            (``0.6 %`` and ``0.3 %`` of its longer side, at least 2 and 1).
        copy: draw on a copy (default) or in place.
        boxes, scores, track_ids: with an array ``people``: ``(N, 4)`` xyxy boxes (default: around the keypoints
            above the threshold), ``(N,)`` scores (default: mean keypoint score), ``(N,)`` ids (default: none).

    Returns:
        The drawn image (the input itself when ``copy=False``).
    """
    schema = get_schema(schema)
    img = _check_image(image, copy)
    radius, thickness = _default_sizes(img, radius, thickness)
    k_expected = schema.num_keypoints

    if isinstance(people, np.ndarray) or (isinstance(people, (list, tuple)) and people
                                          and not isinstance(people[0], Person)):
        kp = np.asarray(people, dtype=np.float64)
        if kp.ndim == 2:
            kp = kp[None]
        if kp.ndim != 3 or kp.shape[2] != 3:
            raise ValueError(f"people keypoints must be (N, K, 3), got shape {kp.shape}")
        n = kp.shape[0]
        bx = None if boxes is None else np.asarray(boxes, np.float64).reshape(-1, 4)
        sc = None if scores is None else np.asarray(scores, np.float64).reshape(-1)
        ids = None if track_ids is None else list(track_ids)
        for name, arr in (("boxes", bx), ("scores", sc), ("track_ids", ids)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} entries for {n} people")
    else:
        people = list(people or [])
        n = len(people)
        for i, p in enumerate(people):
            if not isinstance(p, Person):
                raise TypeError(f"people[{i}] is a {type(p).__name__}, expected posekit.structures.Person")
        kp = np.stack([p.keypoints for p in people]).astype(np.float64) if n else np.zeros((0, k_expected, 3))
        bx = np.stack([p.box for p in people]).astype(np.float64) if n else None
        sc = np.array([p.score for p in people]) if n else None
        ids = [p.track_id for p in people]
    if n and kp.shape[1] != k_expected:
        raise ValueError(f"people have {kp.shape[1]} keypoints but schema {schema.name!r} has {k_expected}")

    label_scale = max(0.35, max(img.shape[:2]) / 1400.0)
    for i in range(n):
        kpts = kp[i]
        ok = np.isfinite(kpts).all(axis=1) & (kpts[:, 2] > kpt_thr)
        tid = ids[i] if ids is not None else None
        _draw_skeleton(img, kpts, ok, None, schema, radius, thickness)
        if not (draw_boxes or draw_scores or (draw_ids and tid is not None)):
            continue
        if bx is not None and np.isfinite(bx[i]).all() and (bx[i][2] > bx[i][0] or bx[i][3] > bx[i][1]):
            box = bx[i]
        elif ok.any():
            xy = kpts[ok, :2]
            box = np.array([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()])
        else:
            continue
        color = id_color(tid) if (draw_ids and tid is not None) else (255, 255, 255)
        if draw_boxes:
            cv2.rectangle(img, _fix(box[:2]), _fix(box[2:]), color, thickness, cv2.LINE_AA, _SHIFT)
        parts = []
        if draw_ids and tid is not None:
            parts.append(f"id {tid}")
        if draw_scores:
            s = sc[i] if sc is not None else float(np.mean(kpts[:, 2]))
            parts.append(f"{s:.2f}")
        if parts:
            _put_label(img, " ".join(parts), box[0], box[1] - 1, color, label_scale)
    return img


def draw_ground_truth(
    image: np.ndarray,
    annotations: Sequence[Mapping],
    schema: KeypointSchema | str = COCO17,
    draw_boxes: bool = True,
    draw_segmentation: bool = False,
    radius: int | None = None,
    thickness: int | None = None,
    copy: bool = True,
) -> np.ndarray:
    """Draw COCO keypoint annotations (dicts of a COCO json) on a BGR image.

    Keypoints with ``v > 0`` are drawn; ``v == 2`` filled, ``v == 1`` (labelled but occluded) as a hollow ring; a
    link is drawn when both ends have ``v > 0``. With ``draw_boxes`` the ``bbox`` (xywh) is drawn: white for
    people, grey for crowd regions (``iscrowd=1``). With ``draw_segmentation`` the outline of each ``segmentation``
    (polygons or RLE, decoded with pycocotools) is drawn in yellow (people) or grey (crowd).
    """
    schema = get_schema(schema)
    img = _check_image(image, copy)
    radius, thickness = _default_sizes(img, radius, thickness)
    h, w = img.shape[:2]
    k_expected = schema.num_keypoints
    for j, ann in enumerate(annotations):
        crowd = bool(ann.get("iscrowd", 0))
        if draw_segmentation and ann.get("segmentation"):
            seg = ann["segmentation"]
            col = (128, 128, 128) if crowd else (0, 220, 255)
            if isinstance(seg, list):
                for poly in seg:
                    pts = np.asarray(poly, np.float64).reshape(-1, 2)
                    # COCO polygons use pixel corners at integers; convert to the pixel-centre frame.
                    pts = np.round((pts - 0.5) * _ONE).astype(np.int32)
                    cv2.polylines(img, [pts], True, col, 1, cv2.LINE_AA, _SHIFT)
            else:
                from pycocotools import mask as mask_utils

                rle = seg
                if isinstance(seg.get("counts"), list):
                    rle = mask_utils.frPyObjects(seg, *seg["size"])
                m = mask_utils.decode(rle)
                if m.shape[:2] == (h, w):
                    cs, _ = cv2.findContours(m, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
                    cv2.drawContours(img, cs, -1, col, 1, cv2.LINE_AA)
        if draw_boxes and ann.get("bbox") is not None and len(ann["bbox"]) == 4:
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            col = (128, 128, 128) if crowd else (255, 255, 255)
            # xywh in COCO's corner frame -> pixel-centre frame
            cv2.rectangle(img, _fix((x - 0.5, y - 0.5)), _fix((x + bw - 0.5, y + bh - 0.5)), col, 1, cv2.LINE_AA,
                          _SHIFT)
        kps = ann.get("keypoints")
        if not kps:
            continue
        kp = np.asarray(kps, np.float64)
        if kp.size != 3 * k_expected:
            raise ValueError(
                f"annotation {ann.get('id', j)}: {kp.size} keypoint values, expected {3 * k_expected} for schema "
                f"{schema.name!r}"
            )
        kp = kp.reshape(k_expected, 3)
        _draw_skeleton(img, kp, kp[:, 2] > 0, kp[:, 2] == 1, schema, radius, thickness)
    return img


def make_grid(
    images: Sequence[np.ndarray],
    cols: int | None = None,
    cell_size: tuple[int, int] | None = None,
    pad: int = 4,
    pad_value: int = 0,
) -> np.ndarray:
    """Tile images into one BGR image.

    Each image is resized keeping its aspect ratio to fit a ``cell_size = (w, h)`` cell (default: the largest
    width and height among the images) and centred in it; cells are separated (and framed) by ``pad`` pixels of
    ``pad_value``. ``cols`` defaults to ``ceil(sqrt(n))``. The result is
    ``rows * (h + pad) + pad`` by ``cols * (w + pad) + pad``.
    """
    images = list(images)
    if not images:
        raise ValueError("make_grid: no images given")
    imgs = []
    for i, im in enumerate(images):
        im = np.asarray(im)
        if im.dtype != np.uint8:
            raise ValueError(f"make_grid: image {i} has dtype {im.dtype}, expected uint8")
        if im.ndim == 2:
            im = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
        if im.ndim != 3 or im.shape[2] != 3 or im.shape[0] == 0 or im.shape[1] == 0:
            raise ValueError(f"make_grid: image {i} has shape {im.shape}, expected HxWx3 or HxW")
        imgs.append(im)
    n = len(imgs)
    if cols is None:
        cols = int(math.ceil(math.sqrt(n)))
    if cols < 1:
        raise ValueError(f"make_grid: cols must be >= 1, got {cols}")
    if pad < 0:
        raise ValueError(f"make_grid: pad must be >= 0, got {pad}")
    if cell_size is None:
        cw, ch = max(im.shape[1] for im in imgs), max(im.shape[0] for im in imgs)
    else:
        cw, ch = (int(v) for v in cell_size)
        if cw < 1 or ch < 1:
            raise ValueError(f"make_grid: cell_size must be positive (w, h), got {cell_size}")
    rows = int(math.ceil(n / cols))
    out = np.full((rows * (ch + pad) + pad, cols * (cw + pad) + pad, 3), pad_value, np.uint8)
    for i, im in enumerate(imgs):
        h, w = im.shape[:2]
        s = min(cw / w, ch / h)
        nw, nh = max(1, min(cw, int(round(w * s)))), max(1, min(ch, int(round(h * s))))
        if (nw, nh) != (w, h):
            im = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        r, c = divmod(i, cols)
        y0 = pad + r * (ch + pad) + (ch - nh) // 2
        x0 = pad + c * (cw + pad) + (cw - nw) // 2
        out[y0:y0 + nh, x0:x0 + nw] = im
    return out


class VideoWriter:
    """Write BGR frames to an ``.mp4`` (mp4v) or ``.avi`` (MJPG) file, atomically.

    Frames go to a temporary file beside ``path`` that is renamed to ``path`` on :meth:`close` (so a crash never
    leaves a truncated video under the final name); on an exception inside a ``with`` block the temporary file is
    removed. ``size = (w, h)``; by default the size of the first frame. Every frame must have that size.

    >>> with VideoWriter("out.mp4", fps=25) as vw:   # doctest: +SKIP
    ...     for frame in frames:
    ...         vw.write(frame)
    """

    _CODECS = {".mp4": "mp4v", ".avi": "MJPG"}

    def __init__(self, path, fps: float, size: tuple[int, int] | None = None, fourcc: str | None = None):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if fourcc is None:
            if suffix not in self._CODECS:
                raise ValueError(f"VideoWriter: unsupported video extension {self.path.suffix!r} for {self.path}; "
                                 f"use one of {sorted(self._CODECS)} or give fourcc")
            fourcc = self._CODECS[suffix]
        if len(fourcc) != 4:
            raise ValueError(f"VideoWriter: fourcc must be 4 characters, got {fourcc!r}")
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"VideoWriter: fps must be > 0, got {fps}")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"VideoWriter: directory does not exist: {self.path.parent}")
        self.fps = float(fps)
        self.fourcc = fourcc
        self.size = None if size is None else (int(size[0]), int(size[1]))
        if self.size is not None and (self.size[0] < 1 or self.size[1] < 1):
            raise ValueError(f"VideoWriter: size must be positive (w, h), got {size}")
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}{self.path.suffix}")
        self._writer = None
        self._closed = False
        self.frames_written = 0
        if self.size is not None:
            self._open()

    def _open(self) -> None:
        w = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self.size)
        if not w.isOpened():
            w.release()
            self._remove_tmp()
            raise RuntimeError(
                f"OpenCV cannot open a video writer for {self.path} (codec {self.fourcc!r}, size {self.size}, "
                f"fps {self.fps}); this OpenCV build may lack the codec: try .avi (MJPG)"
            )
        self._writer = w

    def _remove_tmp(self) -> None:
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass

    def write(self, frame: np.ndarray) -> None:
        """Append one ``H x W x 3`` uint8 BGR frame (a grey ``H x W`` frame is converted)."""
        if self._closed:
            raise RuntimeError(f"VideoWriter for {self.path} is closed")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            raise ValueError(f"VideoWriter: frame dtype must be uint8, got {frame.dtype}")
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"VideoWriter: frame must be HxWx3 BGR, got shape {frame.shape}")
        if self.size is None:
            self.size = (frame.shape[1], frame.shape[0])
        if self._writer is None:
            self._open()
        if (frame.shape[1], frame.shape[0]) != self.size:
            raise ValueError(f"VideoWriter: frame size {frame.shape[1]}x{frame.shape[0]} differs from the video "
                             f"size {self.size[0]}x{self.size[1]}")
        self._writer.write(np.ascontiguousarray(frame))
        self.frames_written += 1

    def close(self) -> Path:
        """Finish the file and move it to ``path``; raises RuntimeError when no frame was written."""
        if self._closed:
            return self.path
        self._closed = True
        if self._writer is not None:
            self._writer.release()
        if self.frames_written == 0:
            self._remove_tmp()
            raise RuntimeError(f"VideoWriter: no frames were written to {self.path}")
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the video: release the writer and delete the temporary file."""
        if not self._closed:
            self._closed = True
            if self._writer is not None:
                self._writer.release()
            self._remove_tmp()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


def clip_from_images(images, path, size: tuple[int, int] = (640, 480), hold: int = 2, pan: int = 4,
                     fps: float = 10.0) -> Path:
    """Write a video made of still images (a test / benchmark clip with a varying number of people).

    Each image (an ``HxWx3`` array or a path) is fitted into ``size = (w, h)`` (aspect kept, grey borders) and held
    for ``hold`` frames, shifted right by ``pan`` pixels more on every frame of the hold, so people move a little
    and a tracker can follow them. Written with :class:`VideoWriter` (MJPG for ``.avi``: exact enough to decode
    to the same frames every time); returns the path.
    """
    from posekit.data.io import read_image

    w, h = int(size[0]), int(size[1])
    with VideoWriter(path, fps=fps, size=(w, h)) as vw:
        for item in images:
            img = read_image(item) if isinstance(item, (str, os.PathLike)) else np.asarray(item)
            s = min(w / img.shape[1], h / img.shape[0])
            rw, rh = max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))
            base = np.full((h, w, 3), 114, np.uint8)
            y0, x0 = (h - rh) // 2, (w - rw) // 2
            base[y0:y0 + rh, x0:x0 + rw] = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_AREA)
            for t in range(hold):
                dx = min(pan * t, w - 1)
                frame = np.full_like(base, 114)
                frame[:, dx:] = base[:, :w - dx]
                vw.write(frame)
    return Path(path)
