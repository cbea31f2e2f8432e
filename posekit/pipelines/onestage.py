"""One-stage pose estimation with an RTMO-style ONNX export (``dets [B,N,5]`` + ``keypoints [B,N,K,3]``).

image -> letterbox (card) -> network -> score threshold -> NMS (unless the export has it) -> back to image pixels
-> ``list[Person]``.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import numpy as np

from posekit.data.geometry import apply_affine, invert_affine
from posekit.detectors import map_boxes, nms
from posekit.runtime.cards import ModelCard, load_card
from posekit.runtime.download import resolve_weights
from posekit.runtime.onnx import OnnxModel
from posekit.runtime.preprocess import prepare_image
from posekit.structures import Person

__all__ = ["OneStagePipeline"]


class OneStagePipeline:
    """RTMO ONNX pipeline.

    Args:
        card: ``kind: rtmo`` card (name, path or :class:`ModelCard`).
        weights, threads, providers, spinning: see :class:`~posekit.runtime.onnx.OnnxModel` / ``resolve_weights``.
        score_thr, nms_thr: override the card's (RTMO: 0.1 and 0.65).
        model: an already built :class:`OnnxModel` (skips weight resolution).
        timer: optional stage timer (``preprocess``, ``network``, ``postprocess``).

    Calling it on an ``HxWx3`` uint8 BGR image returns people sorted by decreasing score; keypoints ``(K, 3)`` and
    boxes are in image pixels, ``Person.score`` is the detection score.
    """

    def __init__(self, card: str | Path | ModelCard = "rtmo-s", weights: str | Path | None = None,
                 threads: int | None = None, providers: Sequence[str] | None = None,
                 score_thr: float | None = None, nms_thr: float | None = None, model: OnnxModel | None = None,
                 timer=None, spinning: bool | None = None) -> None:
        self.card = load_card(card)
        if self.card.kind != "rtmo":
            raise ValueError(f"model card '{self.card.name}' is a {self.card.kind!r} model, not 'rtmo'")
        self.model = model or OnnxModel(resolve_weights(self.card, weights), threads=threads, providers=providers,
                                        card=self.card, spinning=spinning)
        self.score_thr = self.card.score_thr if score_thr is None else float(score_thr)
        self.nms_thr = self.card.nms_thr if nms_thr is None else float(nms_thr)
        self.timer = timer
        # NMS is skipped when the card says the export does it, or when the file's graph has a NonMaxSuppression
        # node (a card that does not say so would otherwise run a second, redundant pass)
        self.nms_inside = bool(self.card.nms_inside or (isinstance(self.model, OnnxModel)
                                                        and self.model.has_op("NonMaxSuppression")))

    def _stage(self, name):
        return self.timer.stage(name) if self.timer is not None else nullcontext()

    def postprocess(self, outputs: dict, M: np.ndarray, image_shape) -> list[Person]:
        """Outputs in model-input pixels -> people in image pixels."""
        dets = np.asarray(outputs[self.card.output_names[0]], np.float32)
        kpts = np.asarray(outputs[self.card.output_names[1]], np.float32)
        if dets.ndim != 3 or dets.shape[-1] != 5 or kpts.ndim != 4 or kpts.shape[-1] != 3 \
                or kpts.shape[1] != dets.shape[1]:
            raise ValueError(f"model '{self.card.name}': outputs {dets.shape} / {kpts.shape} are not "
                             f"dets [B,N,5] / keypoints [B,N,K,3]")
        dets, kpts = dets[0], kpts[0]
        ok = dets[:, 4] > self.score_thr
        dets, kpts = dets[ok], kpts[ok]
        if len(dets) and not self.nms_inside:
            keep = nms(dets[:, :4], dets[:, 4], self.nms_thr)
            dets, kpts = dets[keep], kpts[keep]
        order = np.argsort(-dets[:, 4], kind="stable")
        dets, kpts = dets[order], kpts[order].copy()
        boxes = map_boxes(dets[:, :4], M)
        H, W = image_shape[:2]
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, W)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, H)
        kpts[..., :2] = apply_affine(kpts[..., :2], invert_affine(M))
        return [Person(keypoints=k, box=b, score=float(d[4])) for k, b, d in zip(kpts, boxes, dets)]

    def network(self, image: np.ndarray) -> tuple[dict, np.ndarray]:
        """Preprocessing and the network: ``(outputs, M)`` for :meth:`postprocess`."""
        with self._stage("preprocess"):
            batch, M = prepare_image(image, self.card)
        with self._stage("network"):
            return self.model.run(batch, self.card.output_names), M

    def __call__(self, image: np.ndarray) -> list[Person]:
        out, M = self.network(image)
        with self._stage("postprocess"):
            return self.postprocess(out, M, image.shape)

    def boxes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Use RTMO as a person detector for a top-down model: ``(boxes (N, 4), scores (N,))``."""
        people = self(image)
        if not people:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        return np.stack([p.box for p in people]), np.array([p.score for p in people], np.float32)
