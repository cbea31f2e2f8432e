"""Top-down pose estimation with an ONNX crop model (SimCC such as RTMPose, or heatmaps).

boxes (a detector, RTMO, given boxes or a detections json) -> padded crops of the model's aspect ratio (all crops
of an image in ONE batched run; with flip test the flipped crops join the same batch) -> SimCC / heatmap decode in
crop pixels -> back-projection to image pixels with the inverse crop affine -> optional OKS-NMS -> people.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from posekit.codecs.heatmap import HeatmapCodec, flip_heatmaps_np
from posekit.codecs.simcc import flip_simcc_np, get_simcc_maximum
from posekit.data.geometry import apply_affine, invert_affine
from posekit.data.io import read_json
from posekit.runtime.cards import ModelCard, load_card
from posekit.runtime.download import resolve_weights
from posekit.runtime.onnx import OnnxModel
from posekit.runtime.preprocess import prepare_crops
from posekit.schema import get_schema
from posekit.structures import Person

__all__ = ["TopDownPipeline", "decode_simcc", "decode_heatmaps", "load_detections", "BoxSource"]

BoxSource = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = 2.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """SimCC ``(N, K, Wx)``, ``(N, K, Wy)`` -> locations ``(N, K, 2)`` in model-input pixels and scores ``(N, K)``,
    exactly as the SimCC codec decodes (:func:`posekit.codecs.simcc.get_simcc_maximum`: argmax / split ratio,
    score = the smaller of the two axis maxima, location -1 where the score is <= 0)."""
    sx = np.asarray(simcc_x, np.float32)
    sy = np.asarray(simcc_y, np.float32)
    if sx.ndim != 3 or sy.ndim != 3 or sx.shape[:2] != sy.shape[:2]:
        raise ValueError(f"SimCC outputs must be (N, K, Wx) and (N, K, Wy), got {sx.shape} and {sy.shape}")
    locs, scores = get_simcc_maximum(sx, sy)
    return locs / np.float32(split_ratio), scores


def decode_heatmaps(heatmaps: np.ndarray, input_size: tuple[int, int], udp: bool = False, dark: bool = False,
                    blur_kernel_size: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps ``(N, K, h, w)`` -> locations ``(N, K, 2)`` in model-input pixels and scores ``(N, K)`` (the peak),
    exactly as :class:`posekit.codecs.heatmap.HeatmapCodec` decodes: MSRA (quarter-cell shift, or DARK with
    ``dark``) or UDP (DARK-UDP refinement)."""
    hm = np.asarray(heatmaps, np.float32)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be (N, K, h, w), got {hm.shape}")
    codec = HeatmapCodec(input_size=tuple(input_size), heatmap_size=(hm.shape[3], hm.shape[2]),
                         kind="udp" if udp else "msra", unbiased=bool(dark) and not udp,
                         blur_kernel_size=int(blur_kernel_size))
    return codec.decode(hm)


def load_detections(path: str | Path, min_score: float = 0.0, category_id: int = 1
                    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """A COCO detections json (list of ``{image_id, category_id, bbox [x,y,w,h], score}``) -> ``{image_id: (boxes
    (N, 4) xyxy, scores (N,))}``."""
    path = Path(path)
    dets = read_json(path, "detections file")
    if not isinstance(dets, list):
        raise ValueError(f"{path}: expected a list of detections, got {type(dets).__name__}")
    acc: dict[int, list] = defaultdict(list)
    for i, d in enumerate(dets):
        try:
            if int(d.get("category_id", category_id)) != category_id or float(d.get("score", 1.0)) < min_score:
                continue
            x, y, w, h = (float(v) for v in d["bbox"])
            acc[int(d["image_id"])].append((x, y, x + w, y + h, float(d.get("score", 1.0))))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: detection #{i} is malformed ({e!r}): {d!r}") from None
    return {k: (np.array(v, np.float32)[:, :4], np.array(v, np.float32)[:, 4]) for k, v in acc.items()}


class TopDownPipeline:
    """Detector + crop model.

    Args:
        card: ``kind: simcc`` or ``kind: heatmap`` card.
        box_source: ``callable(image) -> (boxes (N, 4) xyxy, scores (N,))`` in image pixels (a
            :class:`~posekit.detectors.PersonDetector`, ``OneStagePipeline.boxes``…); may be None when boxes are
            always given to ``__call__``.
        flip_test: also run the horizontally flipped crops (same batch) and average with the un-flipped outputs
            (left/right channels swapped with the schema's ``flip_index``).
        oks_nms_thr: when set, OKS-NMS (``posekit.evaluation.oks.oks_nms``) with this threshold on the results.
        kpt_score_thr: keypoints above it count in the instance score ``box_score * mean(kpt scores > thr)``
            (MMPose's COCO rescoring).
        model: an already built :class:`OnnxModel`; timer: optional stage timer.
    """

    def __init__(self, card: str | Path | ModelCard = "rtmpose-s", box_source: BoxSource | None = None,
                 weights: str | Path | None = None, threads: int | None = None,
                 providers: Sequence[str] | None = None, flip_test: bool = False, oks_nms_thr: float | None = None,
                 kpt_score_thr: float = 0.2, model: OnnxModel | None = None, timer=None,
                 spinning: bool | None = None) -> None:
        self.card = load_card(card)
        if not self.card.is_topdown:
            raise ValueError(f"model card '{self.card.name}' is a {self.card.kind!r} model, not a top-down "
                             f"'simcc' or 'heatmap' model")
        self.schema = get_schema(self.card.schema)
        self.model = model or OnnxModel(resolve_weights(self.card, weights), threads=threads, providers=providers,
                                        card=self.card, spinning=spinning)
        self.box_source = box_source
        self.flip_test = bool(flip_test)
        self.oks_nms_thr = oks_nms_thr
        self.kpt_score_thr = float(kpt_score_thr)
        self.timer = timer

    def _stage(self, name):
        return self.timer.stage(name) if self.timer is not None else nullcontext()

    def _decode(self, out: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Network outputs for ``n`` crops (``2n`` with flip) -> crop-pixel locations and scores."""
        card = self.card
        fi = np.asarray(self.schema.flip_index)
        if card.kind == "simcc":
            sx = np.asarray(out[card.output_names[0]], np.float32)
            sy = np.asarray(out[card.output_names[1]], np.float32)
            if sx.shape[1] != len(fi):
                raise ValueError(f"model '{card.name}' gives {sx.shape[1]} keypoints, schema "
                                 f"'{self.schema.name}' has {len(fi)}")
            if self.flip_test:
                fx, fy = flip_simcc_np(sx[n:], sy[n:], fi)
                sx, sy = 0.5 * (sx[:n] + fx), 0.5 * (sy[:n] + fy)
            return decode_simcc(sx, sy, card.simcc.split_ratio)
        hm = np.asarray(out[card.output_names[0]], np.float32)
        if hm.ndim != 4 or hm.shape[1] != len(fi):
            raise ValueError(f"model '{card.name}': heatmaps {hm.shape} are not (N, {len(fi)}, h, w)")
        if self.flip_test:  # MMPose's shift_heatmap for the classic (biased) transform, none for UDP
            hm = 0.5 * (hm[:n] + flip_heatmaps_np(hm[n:], fi, shift=not card.heatmap.udp))
        spec = card.heatmap
        return decode_heatmaps(hm, card.input_size, udp=spec.udp, dark=spec.dark,
                               blur_kernel_size=spec.blur_kernel_size)

    def predict_boxes(self, image: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray | None = None
                      ) -> list[Person]:
        """People for the given xyxy boxes (image pixels); ``box_scores`` default to 1."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        n = len(boxes)
        box_scores = np.ones(n, np.float32) if box_scores is None else np.asarray(box_scores, np.float32)
        if len(box_scores) != n:
            raise ValueError(f"{n} boxes but {len(box_scores)} box scores")
        if n == 0:
            return []
        with self._stage("preprocess"):
            batch, Ms = prepare_crops(image, boxes, self.card, flip=self.flip_test)
        with self._stage("network"):
            out = self.model.run(batch, self.card.output_names)
        with self._stage("postprocess"):
            locs, scores = self._decode(out, n)
            kpts = np.zeros(locs.shape[:2] + (3,), np.float32)
            for i in range(n):
                kpts[i, :, :2] = apply_affine(locs[i], invert_affine(Ms[i]))
            kpts[..., 2] = scores
            ok = scores > self.kpt_score_thr
            mean = np.where(ok.any(1), (scores * ok).sum(1) / np.maximum(ok.sum(1), 1), 0.0)
            inst = box_scores * mean
            people = [Person(keypoints=kpts[i], box=boxes[i], score=float(inst[i]),
                             extra={"box_score": float(box_scores[i])}) for i in range(n)]
            if self.oks_nms_thr is not None and len(people) > 1:
                from posekit.evaluation.oks import oks_nms

                areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                keep = oks_nms(kpts, inst, areas, self.oks_nms_thr, self.schema.sigmas_array)
                people = [people[i] for i in keep]
            people.sort(key=lambda p: -p.score)
        return people

    def __call__(self, image: np.ndarray, boxes: np.ndarray | None = None,
                 box_scores: np.ndarray | None = None) -> list[Person]:
        """People in an ``HxWx3`` uint8 BGR image: boxes from ``boxes`` when given, else from the box source."""
        if boxes is None:
            if self.box_source is None:
                raise ValueError(f"top-down model '{self.card.name}' needs person boxes: give boxes= or a detector")
            with self._stage("detector"):
                boxes, box_scores = self.box_source(image)
        return self.predict_boxes(image, boxes, box_scores)
