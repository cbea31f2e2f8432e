"""Bottom-up (OpenPose / PAF) pipeline: image -> network maps -> association -> people in image pixels.

Frames (pixel centres at integer coordinates everywhere):

* image pixels ``(W, H)``  --resize (no aspect kept, or kept up to a multiple of the stride)-->
* network-input pixels ``(w, h)`` --network, stride ``s``--> map cells ``(ceil(w/s), ceil(h/s))``.

Map cell ``i`` covers input pixels ``[s*i, s*(i+1))``, so its centre is input pixel ``s*i + (s-1)/2`` (the frame of
an area-resized target, which is how tf-pose builds its training targets); ``x_in = (x_cell + 0.5) * s - 0.5``
and ``x_img = (x_in + 0.5) * W / w - 0.5``. Maps upsampled ``f`` times keep that frame with cells ``s/f`` wide.
"""

from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np

from posekit.association.paf import OPENPOSE18_LIMBS, TFPOSE_PAF_CHANNELS, AssociationResult, associate
from posekit.association.params import PafParams
from posekit.schema import COCO17_TO_OPENPOSE18_INDEX
from posekit.structures import Person, box_from_keypoints

__all__ = ["PafParams", "PafPipeline", "onnx_network", "torch_paf_pipeline", "TFPOSE_LIMBS", "TFPOSE_PAF_CHANNELS"]

TFPOSE_LIMBS = OPENPOSE18_LIMBS


def onnx_network(path: str, input_name: str | None = None, threads: int | None = None) -> Callable:
    """A ``run_network`` callable from an ONNX file: ``(N, H, W, 3)`` float32 -> the first output.

    For tests and benchmarks; applications pass a model-card runner instead.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = input_name or sess.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return sess.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    return run


class PafPipeline:
    """Image -> people with an OpenPose-style network.

    Args:
        run_network: ``batch -> output``; ``batch`` is float32 BGR 0..255, ``(N, H, W, 3)`` for ``"NHWC"``
            (``(N, 3, H, W)`` for ``"NCHW"``); the output is ``(N, H/s, W/s, C)`` (``(N, C, H/s, W/s)``).
        params: :class:`PafParams`.
        limbs: ``(j1, j2)`` part pairs in tree order; paf_channels: their ``(x, y)`` channels counted from
            ``paf_offset``.
        num_parts: parts used from the confidence maps (the background channel is ignored).
        heatmap_channels: ``(start, stop)`` or a slice: the confidence-map channels in the output.
        stride: output stride of the network.
        to_coco17: COCO-17 keypoint ``k`` is part ``to_coco17[k]``; None keeps the network's part order.
        input_layout: ``"NHWC"`` or ``"NCHW"`` (applies to the batch and to the output).
    """

    def __init__(
        self,
        run_network: Callable[[np.ndarray], np.ndarray],
        params: PafParams | None = None,
        limbs: Sequence[tuple[int, int]] = TFPOSE_LIMBS,
        paf_channels: Sequence[tuple[int, int]] = TFPOSE_PAF_CHANNELS,
        num_parts: int = 18,
        heatmap_channels: slice | tuple = (0, 19),
        paf_offset: int = 19,
        stride: int = 8,
        to_coco17: Sequence[int] | None = COCO17_TO_OPENPOSE18_INDEX,
        input_layout: str = "NHWC",
    ) -> None:
        if input_layout not in ("NHWC", "NCHW"):
            raise ValueError(f"input_layout must be 'NHWC' or 'NCHW', got {input_layout!r}")
        self.run_network = run_network
        self.params = params if params is not None else PafParams()
        self.limbs = [tuple(int(v) for v in l) for l in limbs]
        self.paf_channels = [tuple(int(v) for v in c) for c in paf_channels]
        if len(self.limbs) != len(self.paf_channels):
            raise ValueError(f"{len(self.limbs)} limbs but {len(self.paf_channels)} paf_channels")
        self.num_parts = int(num_parts)
        hs = heatmap_channels if isinstance(heatmap_channels, slice) else slice(*heatmap_channels)
        self.heatmap_start = hs.start or 0
        if hs.stop is not None and hs.stop - self.heatmap_start < self.num_parts:
            raise ValueError(f"heatmap_channels {heatmap_channels} hold fewer than num_parts={num_parts} channels")
        self.paf_offset = int(paf_offset)
        self.stride = int(stride)
        self.to_coco17 = None if to_coco17 is None else list(to_coco17)
        if self.to_coco17 is not None and max(self.to_coco17) >= self.num_parts:
            raise ValueError(f"to_coco17 references part {max(self.to_coco17)} >= num_parts={num_parts}")
        self.input_layout = input_layout

    # ------------------------------------------------------------------ network
    def preprocess(self, image: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
        """``(1, h, w, 3)`` (or NCHW) float32 batch of the image resized to ``input_size = (w, h)``."""
        x = cv2.resize(image, input_size, interpolation=cv2.INTER_LINEAR).astype(np.float32)[None]
        return x.transpose(0, 3, 1, 2) if self.input_layout == "NCHW" else x

    def _maps_hwc(self, maps: np.ndarray) -> np.ndarray:
        maps = np.asarray(maps, dtype=np.float32)
        if maps.ndim != 3:
            raise ValueError(f"network maps for one image must be 3-D, got shape {maps.shape}")
        return maps.transpose(1, 2, 0) if self.input_layout == "NCHW" else maps

    def network_maps(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Run the network (every scale of ``params.scales``) and return the maps ``(h, w, C)`` on the grid of
        the first scale, with that scale's input size ``(w, h)``."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            got = getattr(image, "shape", type(image).__name__)
            raise ValueError(f"image must be an HxWx3 uint8 BGR array, got {got} {getattr(image, 'dtype', '')}")
        H, W = image.shape[:2]
        p = self.params
        base = None
        acc = None
        for s in p.scales:
            size = p.input_size_for((W, H), s)
            out = self.run_network(self.preprocess(image, size))
            maps = self._maps_hwc(np.asarray(out)[0])
            if base is None:
                base, acc = size, maps.astype(np.float32, copy=True)
            else:
                acc += cv2.resize(maps, (acc.shape[1], acc.shape[0]), interpolation=cv2.INTER_CUBIC).reshape(acc.shape)
        if len(p.scales) > 1:
            acc /= len(p.scales)
        return acc, base

    def __call__(self, image: np.ndarray) -> list[Person]:
        """People in an ``HxWx3`` uint8 BGR image, keypoints in image pixels (COCO-17 unless ``to_coco17`` is
        None), sorted by decreasing score."""
        maps, size = self.network_maps(image)
        maps = maps if self.input_layout == "NHWC" else maps.transpose(2, 0, 1)
        return self.from_maps(maps, (image.shape[1], image.shape[0]), size)

    # ------------------------------------------------------------------ decoding
    def associate_maps(self, maps: np.ndarray) -> AssociationResult:
        """Association on one image's maps; keypoints in cells of the (upsampled) confidence-map grid."""
        m = self._maps_hwc(maps)
        p = self.params
        hm = m[..., self.heatmap_start:self.heatmap_start + self.num_parts]
        if p.upsample > 1:
            hm = np.ascontiguousarray(hm)
            hm = cv2.resize(hm, (hm.shape[1] * p.upsample, hm.shape[0] * p.upsample),
                            interpolation=cv2.INTER_CUBIC).reshape(hm.shape[0] * p.upsample, -1, self.num_parts)
        n_paf = max(max(c) for c in self.paf_channels) + 1
        pafs = m[..., self.paf_offset:self.paf_offset + n_paf]
        if pafs.shape[2] < n_paf:
            raise ValueError(f"maps have {m.shape[2]} channels, PAF channels need {self.paf_offset + n_paf}")
        return associate(
            hm, pafs, self.limbs, self.paf_channels,
            peak_threshold=p.peak_threshold, nms_window=p.nms_window, subpixel=p.subpixel,
            smooth_sigma=p.smooth_sigma, max_peaks=p.max_peaks, num_samples=p.paf_samples,
            sample_threshold=p.paf_sample_threshold, min_share=p.paf_min_share,
            score_threshold=p.paf_score_threshold, length_prior=p.length_prior, sampling=p.sampling,
            matching=p.matching, min_parts=p.min_parts, min_mean_score=p.min_mean_score,
            paf_scale=float(p.upsample),
        )

    def from_maps(self, maps: np.ndarray, image_size: tuple[int, int], input_size: tuple[int, int]) -> list[Person]:
        """People from one image's network output.

        Args:
            maps: ``(h, w, C)`` (``(C, h, w)`` for NCHW) as the network returns for one image.
            image_size: ``(W, H)`` of the original image.
            input_size: ``(w, h)`` the image was resized to for the network.
        """
        res = self.associate_maps(maps)
        W, H = image_size
        w_in, h_in = input_size
        cell = self.stride / self.params.upsample
        kp = res.keypoints.copy()
        found = kp[..., 2] > 0
        off = self.params.map_offset
        kp[..., 0] = ((kp[..., 0] + 0.5) * cell + off) * (W / w_in) - 0.5
        kp[..., 1] = ((kp[..., 1] + 0.5) * cell + off) * (H / h_in) - 0.5
        kp[~found] = 0
        n_total = self.num_parts
        if self.to_coco17 is not None:
            kp = kp[:, self.to_coco17]
        people = []
        mode = self.params.instance_score
        for i in range(len(kp)):
            k = kp[i]
            ok = k[:, 2] > 0
            if not ok.any():
                continue
            mean_kp = float(res.keypoints[i, :, 2][res.keypoints[i, :, 2] > 0].mean())
            share = res.num_parts[i] / n_total
            if mode == "mean":
                score = 0.5 * float(res.scores[i])  # parts and limbs each score ~1 at best
            elif mode == "mean_x_share":
                score = mean_kp * share
            else:
                score = mean_kp * np.sqrt(share)
            people.append(Person(keypoints=k, box=box_from_keypoints(k), score=min(max(score, 0.0), 1.0),
                                 extra={"num_parts": int(res.num_parts[i])}))
        people.sort(key=lambda q: -q.score)
        return people


def torch_paf_pipeline(model, params=None) -> PafPipeline:
    """A :class:`PafPipeline` that runs a PyTorch OpenPose ``model`` as its exported graph would
    (:func:`posekit.export.onnx.torch_maps`: NCHW, raw BGR in, normalised inside), with the limbs, channels and part
    order of the exported card: its people match ``PoseEstimator`` on the exported file.

    Args:
        model: a posekit OpenPose model (:mod:`posekit.models.openpose`).
        params: :class:`PafParams` or a mapping of its fields (None: the defaults).
    """
    from posekit.export.onnx import torch_maps
    from posekit.models.checkpoints import check_openpose_model

    check_openpose_model(model, "torch_paf_pipeline's model")
    if params is None:
        params = PafParams()
    elif not isinstance(params, PafParams):
        params = PafParams.from_dict(dict(params), "params")
    codec = model.codec
    return PafPipeline(lambda batch: torch_maps(model, batch), params, limbs=list(codec.limbs),
                       paf_channels=list(codec.paf_channels), num_parts=codec.num_parts,
                       heatmap_channels=(0, model.num_heatmaps), paf_offset=model.num_heatmaps,
                       stride=model.stride,
                       to_coco17=COCO17_TO_OPENPOSE18_INDEX if codec.num_parts == 18 else None,
                       input_layout="NCHW")
