"""Person detectors from ONNX model cards (YOLOX ``end2end`` MMDeploy exports and raw-head YOLOX exports).

A detector is a callable ``detector(image) -> (boxes, scores)``: ``boxes`` ``(N, 4)`` float32 xyxy and
``scores`` ``(N,)`` float32, in **image pixels**, sorted by decreasing score. Top-down pipelines accept any
callable of that form as their box source.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from posekit.data.geometry import invert_affine
from posekit.runtime.cards import ModelCard, load_card
from posekit.runtime.download import resolve_weights
from posekit.runtime.onnx import OnnxModel
from posekit.boxes import box_iou, nms
from posekit.runtime.preprocess import prepare_image

__all__ = ["PersonDetector", "nms", "box_iou", "decode_yolox_raw", "map_boxes"]

@lru_cache(maxsize=16)
def _yolox_grid(input_size: tuple[int, int], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    w, h = input_size
    grids, steps = [], []
    for s in strides:
        gh, gw = h // s, w // s
        ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        grids.append(np.stack([xs.ravel(), ys.ravel()], -1))
        steps.append(np.full(gh * gw, s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(steps).astype(np.float32)[:, None]


def decode_yolox_raw(out: np.ndarray, input_size: tuple[int, int], strides: Sequence[int], class_id: int,
                     score_thr: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode a raw YOLOX head ``(A, 5 + C)`` (``dx, dy, log w, log h, obj, classes``, sigmoid already applied to
    objectness and classes; anchors row-major per level, levels in ``strides`` order) into xyxy boxes in
    model-input pixels and ``obj * cls[class_id]`` scores. With ``score_thr`` only anchors scoring above it are
    decoded and returned."""
    grid, step = _yolox_grid(tuple(int(v) for v in input_size), tuple(int(s) for s in strides))
    if out.shape[0] != len(grid):
        raise ValueError(f"raw YOLOX output has {out.shape[0]} anchors; input {input_size[0]}x{input_size[1]} "
                         f"with strides {list(strides)} gives {len(grid)}")
    if class_id >= out.shape[1] - 5:
        raise ValueError(f"class_id {class_id} is out of range for {out.shape[1] - 5} classes")
    scores = out[:, 4] * out[:, 5 + class_id]
    if score_thr is not None:
        keep = np.flatnonzero(scores > score_thr)
        out, scores, grid, step = out[keep], scores[keep], grid[keep], step[keep]
    cxy = (out[:, :2] + grid) * step
    wh = np.exp(np.clip(out[:, 2:4], -20, 20)) * step
    boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], axis=1)
    return boxes.astype(np.float32), scores.astype(np.float32)


def map_boxes(boxes: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Map xyxy boxes through the *inverse* of an axis-aligned ``M`` (image -> input), i.e. input -> image."""
    Mi = invert_affine(M)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.empty_like(b)
    out[:, 0::2] = b[:, 0::2] * Mi[0, 0] + Mi[0, 2]
    out[:, 1::2] = b[:, 1::2] * Mi[1, 1] + Mi[1, 2]
    return out.astype(np.float32)


class PersonDetector:
    """A person detector from a ``kind: detector`` model card.

    Args:
        card: a card name (``"yolox-nano-human"``), a card file path, or a :class:`ModelCard`.
        weights: explicit ONNX path (else the card's path / the cache / a download).
        threads, providers, spinning: passed to :class:`~posekit.runtime.onnx.OnnxModel`.
        score_thr, nms_thr: override the card's thresholds.
        timer: optional :class:`~posekit.pipelines.estimator.StageTimer` (stages ``preprocess``, ``network``,
            ``postprocess``).
    """

    def __init__(self, card: str | Path | ModelCard = "yolox-nano-human", weights: str | Path | None = None,
                 threads: int | None = None, providers: Sequence[str] | None = None,
                 score_thr: float | None = None, nms_thr: float | None = None, timer=None,
                 spinning: bool | None = None) -> None:
        self.card = load_card(card)
        if self.card.kind != "detector":
            raise ValueError(f"model card '{self.card.name}' is a {self.card.kind!r} model, not a detector")
        self.model = OnnxModel(resolve_weights(self.card, weights), threads=threads, providers=providers,
                               card=self.card, spinning=spinning)
        self.score_thr = self.card.score_thr if score_thr is None else float(score_thr)
        self.nms_thr = self.card.nms_thr if nms_thr is None else float(nms_thr)
        self.timer = timer

    def _stage(self, name):
        from contextlib import nullcontext

        return self.timer.stage(name) if self.timer is not None else nullcontext()

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return prepare_image(image, self.card)

    def postprocess(self, outputs: dict, M: np.ndarray, image_shape) -> tuple[np.ndarray, np.ndarray]:
        """Network outputs (input frame) -> ``(boxes, scores)`` in image pixels, thresholded, NMS-ed, clipped."""
        spec = self.card.detector
        if spec.decode == "end2end":
            dets = np.asarray(outputs[self.card.output_names[0]])
            labels = np.asarray(outputs[self.card.output_names[1]])
            if dets.ndim != 3 or dets.shape[-1] != 5:
                raise ValueError(f"detector '{self.card.name}': output {self.card.output_names[0]!r} has shape "
                                 f"{dets.shape}, expected [1, N, 5]")
            dets, labels = dets[0], labels[0].reshape(-1)
            ok = (labels == spec.class_id) & (dets[:, 4] > self.score_thr)
            boxes, scores = dets[ok, :4], dets[ok, 4]
            if not self.card.nms_inside and len(boxes):
                keep = nms(boxes, scores, self.nms_thr)
                boxes, scores = boxes[keep], scores[keep]
        else:
            raw = np.asarray(outputs[self.card.output_names[0]])
            if raw.ndim != 3:
                raise ValueError(f"detector '{self.card.name}': output shape {raw.shape}, expected [1, A, 5 + C]")
            boxes, scores = decode_yolox_raw(raw[0], self.card.input_size, spec.strides, spec.class_id,
                                             score_thr=self.score_thr)
            keep = nms(boxes, scores, self.nms_thr)
            boxes, scores = boxes[keep], scores[keep]
        order = np.argsort(-scores, kind="stable")
        boxes = map_boxes(boxes[order], M)
        H, W = image_shape[:2]
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, W)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, H)
        return boxes.astype(np.float32), scores[order].astype(np.float32)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``HxWx3`` uint8 BGR -> ``(boxes (N, 4) xyxy, scores (N,))`` in image pixels."""
        with self._stage("preprocess"):
            batch, M = self.preprocess(image)
        with self._stage("network"):
            out = self.model.run(batch)
        with self._stage("postprocess"):
            return self.postprocess(out, M, image.shape)
