"""``rtmo``: one-stage RTMO training (SimOTA assignment, VariFocal / IoU / OKS / visibility / DCC-MLE losses).

* Data: ``CocoPoseDataset(mode="bottomup")`` images warped into ``data.input_size = [w, h]`` (multiples of 32) by
  :class:`~posekit.data.transforms.RandomAffine` (the whole image fits the input at zoom 1, border 114 like the
  official letterbox), with optional mosaic (4 images on a ``2w x 2h`` canvas, then the same random affine fits
  the canvas into the input), mixup (people of both kept: with ``mixup_ratio_range``, YOLOX's mixup of a raw second
  image fitted, rescaled, maybe mirrored and cropped, :class:`~posekit.data.transforms.YOLOXMixUp`; without, the
  average of this sample and another augmented one), colour jitter and a horizontal flip. People left with no
  labelled keypoint or a box under 1 px are dropped. With ``batch_resize_range``, the collated batch (images and
  ground truth) is resized in ``compute_loss`` to one random multiple of 32 per step, the same on every process
  (:class:`BatchSyncRandomResize`, MMPose's data preprocessor); the head builds its priors from each forward's
  feature-map sizes, so the targets and priors follow.
* Model: ``build_rtmo(model.name, **model.overrides)`` (``rtmo-t/s/m/l``, any :class:`RTMOConfig` field),
  ``num_keypoints`` from the annotation file; classification biases initialised to the 0.01 prior. Input raw BGR
  0..255, as the official models.
* Loss: :class:`~posekit.losses.rtmo.RTMOCriterion`; its weights are config values (``task_options``), and
  the official mid-training changes (``switch_epoch`` / ``switch``, ``aux_epoch`` / ``aux``) apply from those epochs on
  (MMPose's schedule by default for the official presets).
* Evaluation: every validation image letterboxed (top-left, 114) to the input size, ``model.predict``, people
  mapped back to image pixels, COCO keypoint AP against ``data.val_ann``.

``data.options`` (all optional): ``augment`` (true), ``flip_prob`` (0.5), ``scale_range`` ([0.75, 1.25]),
``max_rotation`` (10 degrees), ``max_translate`` (0.1), ``mosaic_prob`` (0.0), ``mixup_prob`` (0.0),
``color_jitter`` (0.0), ``hsv_aug`` (false: MMDet's ``YOLOXHSVRandomAug``), ``min_keypoints`` (1),
``stage2_epoch`` (null) and ``stage2`` (the options that change from that 0-based epoch on: the official last 20
epochs drop mosaic, mixup and the random affine); ``mixup_ratio_range`` (null; ``[0.8, 1.6]`` in the COCO recipes)
and ``mixup_flip_prob`` (0.5): YOLOX mixup; ``batch_resize_range`` (null; ``[480, 800]`` in the COCO recipes),
``batch_resize_divisor`` (32), ``batch_resize_interval`` (1): the batch-synchronised random resize of training
batches (not changeable by ``stage2``: MMPose keeps it to the last epoch; evaluation stays at ``input_size``).

``task_options`` (all optional): ``loss``: :class:`~posekit.losses.rtmo.RTMOLossWeights` fields (defaults:
the official first phase cls 1, bbox 5, oks 30, vis 1, mle 1, no auxiliary box loss); ``switch_epoch`` (0-based
epoch, null: never) and ``switch`` (the fields that change then; default MMPose's ``{proxy_target_cc: true, mle: 5.0,
oks: 10.0}``); ``aux_epoch`` (0-based, null: never) and ``aux`` (default ``{bbox_aux: 1.0}``: the L1 loss on the raw
box deltas of MMPose's ``YOLOXPoseModeSwitchHook``). Unset, ``switch_epoch`` is 280 and ``aux_epoch`` is
``epochs - 21`` for the official presets (``rtmo-t|s|m|l``: MMPose's 600-epoch recipe, where the aux loss starts at
579; docs/training-parity.md) and null for any other model name. The data-pipeline half of MMPose's last-20-epoch
switch (no mosaic / mixup / random affine) is not applied;
``assigner``: :class:`~posekit.losses.rtmo.SimOTAAssigner` fields; ``score_thr`` (0.1) and ``nms_thr``
(0.65) for the evaluation; ``backbone_onnx`` (a YOLOX ONNX export, e.g. ``../shared/weights/yolox_nano_8xb8-
300e_humanart-40f6f0d0.onnx``, relative paths from the working directory): start the CSPDarknet from that detector's
backbone, as the official recipe starts from a COCO-trained YOLOX (the model must have its settings: YOLOX-nano is
``widen_factor: 0.25, deepen_factor: 0.33, backbone_use_depthwise: true``), with its folded BatchNorms
recalibrated on ``bn_calibration_images`` (64) augmented training images (see
:mod:`posekit.models.backbones.yolox_onnx`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from posekit.training.tasks.base import TrainTask, merge_data_options

__all__ = ["RTMOTask", "RTMOTrainSet", "BatchSyncRandomResize", "mosaic4", "letterbox_batch", "torch_rtmo_predict"]

_DATA_OPTIONS = {
    "augment": True,
    "flip_prob": 0.5,
    "scale_range": (0.75, 1.25),
    "max_rotation": 10.0,
    "max_translate": 0.1,
    "mosaic_prob": 0.0,
    "mixup_prob": 0.0,
    "color_jitter": 0.0,
    "hsv_aug": False,
    "min_keypoints": 1,
    "stage2_epoch": None,
    "stage2": None,
    "mixup_ratio_range": None,
    "mixup_flip_prob": 0.5,
    "batch_resize_range": None,
    "batch_resize_divisor": 32,
    "batch_resize_interval": 1,
}
#: options the last phase may not change (MMPose keeps its data preprocessor to the end)
_NOT_STAGE2 = ("stage2", "stage2_epoch", "batch_resize_range", "batch_resize_divisor", "batch_resize_interval")
_TASK_OPTIONS = ("loss", "switch_epoch", "switch", "aux_epoch", "aux", "assigner", "score_thr", "nms_thr",
                 "backbone_onnx", "bn_calibration_images")
PAD_VALUE = 114


#: the keypoints whose predicted DCC sigma is logged as ``train/sigma_easy``: the torso joints (large joints,
#: visible in front views, with wide OKS tolerances)
EASY_KEYPOINT_NAMES = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")


def easy_keypoint_indices(schema) -> tuple[int, ...]:
    """Indices of :data:`EASY_KEYPOINT_NAMES` present in ``schema`` (empty when none is)."""
    names = list(schema.keypoints)
    return tuple(names.index(n) for n in EASY_KEYPOINT_NAMES if n in names)


# ------------------------------------------------------------------------------------------------ augmentation
def mosaic4(samples: list[dict], out_size, center) -> dict:
    """Four bottom-up samples on one ``(2w, 2h)`` canvas (``out_size = (w, h)``), filled with 114.

    Each image is resized by ``min(w / W, h / H)`` (aspect kept) and placed in its quadrant with a corner at
    ``center = (cx, cy)`` (top-left image: its bottom-right corner; top-right: bottom-left; ...), cropped to the
    quadrant. Keypoints outside the visible part of their image get ``v = 0``; boxes are clipped to it; areas are
    scaled by ``s^2``. Returns a new sample (``image``, ``keypoints``, ``boxes``, ``areas``; ``warp`` of the first).
    """
    import cv2

    from posekit.data import geometry as G

    w, h = (int(v) for v in out_size)
    cx, cy = (int(round(float(c))) for c in center)
    canvas = np.full((2 * h, 2 * w, 3), PAD_VALUE, np.uint8)
    kps, boxes, areas = [], [], []
    for q, s in enumerate(samples):
        img = s["image"]
        H, W = img.shape[:2]
        r = min(w / W, h / H)
        nw, nh = max(1, int(W * r + 1e-6)), max(1, int(H * r + 1e-6))
        x0 = cx - nw if q in (0, 2) else cx
        y0 = cy - nh if q in (0, 1) else cy
        # visible window of this quadrant
        qx0, qx1 = (0, cx) if q in (0, 2) else (cx, 2 * w)
        qy0, qy1 = (0, cy) if q in (0, 1) else (cy, 2 * h)
        vx0, vx1 = max(x0, qx0), min(x0 + nw, qx1)
        vy0, vy1 = max(y0, qy0), min(y0 + nh, qy1)
        if vx1 > vx0 and vy1 > vy0:
            small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
            canvas[vy0:vy1, vx0:vx1] = small[vy0 - y0:vy1 - y0, vx0 - x0:vx1 - x0]
        sx, sy = nw / W, nh / H
        M = np.array([[sx, 0.0, 0.5 * sx - 0.5 + x0], [0.0, sy, 0.5 * sy - 0.5 + y0]])
        kp = np.array(s["keypoints"], np.float32, copy=True)
        if len(kp):
            xy = G.apply_affine(kp[..., :2].astype(np.float64), M)
            inside = ((xy[..., 0] >= vx0 - 0.5) & (xy[..., 0] < vx1 - 0.5) & (xy[..., 1] >= vy0 - 0.5)
                      & (xy[..., 1] < vy1 - 0.5))
            kp[..., :2] = xy
            kp[..., 2] = np.where(inside, kp[..., 2], 0.0)
            b = G.transform_boxes(np.asarray(s["boxes"], np.float64), M)
            b[:, 0::2] = np.clip(b[:, 0::2], vx0, max(vx0, vx1 - 1))
            b[:, 1::2] = np.clip(b[:, 1::2], vy0, max(vy0, vy1 - 1))
            kps.append(kp)
            boxes.append(b.astype(np.float32))
            areas.append((np.asarray(s["areas"], np.float64) * sx * sy).astype(np.float32))
    k = samples[0]["keypoints"].shape[1]
    out = {k_: v for k_, v in samples[0].items() if k_ not in ("mask",)}
    out.update(image=canvas,
               keypoints=np.concatenate(kps) if kps else np.zeros((0, k, 3), np.float32),
               boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
               areas=np.concatenate(areas) if areas else np.zeros((0,), np.float32))
    out.pop("ann_ids", None)
    return out


class RTMOTrainSet(torch.utils.data.Dataset):
    """The training view of a bottom-up :class:`~posekit.data.coco.CocoPoseDataset` for RTMO (see the module
    docstring). Item ``i`` draws everything from ``base.rng(i)`` (reproducible per seed, epoch and index).
    ``epoch`` follows ``set_epoch`` (the task reads it for the loss schedule)."""

    def __init__(self, base, input_size, options: dict) -> None:
        self.base = base
        self.input_size = tuple(int(v) for v in input_size)
        self.options = dict(options)
        self.epoch = 0
        self._configure(self.options)

    def _configure(self, o: dict) -> None:
        from posekit.data.transforms import ColorJitter, HSVRandomAug, RandomAffine, RandomFlip, YOLOXMixUp

        self.o = o
        if o["augment"]:
            self.affine = RandomAffine(scale_range=o["scale_range"], max_rotation=float(o["max_rotation"]),
                                       max_translate=float(o["max_translate"]), output_size=self.input_size,
                                       border_value=PAD_VALUE)
        else:
            self.affine = RandomAffine(scale_range=(1.0, 1.0), max_rotation=0.0, max_translate=0.0,
                                       output_size=self.input_size, border_value=PAD_VALUE)
        self.flip = RandomFlip(self.base.schema, float(o["flip_prob"])) if o["augment"] else None
        j = float(o["color_jitter"])
        self.jitter = ColorJitter(brightness=j, contrast=j, saturation=j) if (o["augment"] and j > 0) else None
        self.hsv = HSVRandomAug() if (o["augment"] and o.get("hsv_aug")) else None
        rr = o.get("mixup_ratio_range")
        self.mixup = (YOLOXMixUp(self.base.schema, self.input_size, rr, float(o["mixup_flip_prob"]), PAD_VALUE)
                      if rr is not None else None)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)
        self.epoch = int(epoch)
        se = self.options.get("stage2_epoch")
        if se is not None and self.epoch >= int(se):  # the recipe's last phase (YOLOXPoseModeSwitchHook)
            o2 = {**self.options, **dict(self.options.get("stage2") or {})}
            if o2 != self.o:
                self._configure(o2)
        elif self.o is not self.options:
            self._configure(self.options)

    def __len__(self) -> int:
        return len(self.base)

    def _raw(self, i: int, mosaic: bool = False) -> dict:
        """Sample ``i`` without the ignore mask (not used). In a mosaic, an image whose pixels reach the output at
        half their size or less (resize ratio x the largest zoom / 2 <= 1/2) is decoded at half size (JPEG DCT
        scaling: several times cheaper than a full decode; no detail the output could show is lost)."""
        reduce = 1
        if mosaic:
            info = self.base.index.image_info(self.base.image_id_of(i))
            w, h = self.input_size
            r = min(w / info["width"], h / info["height"])
            if r * self.affine.scale_range[1] <= 1.0:
                reduce = 2
        return self.base.load_sample(i, reduce=reduce, with_mask=False)

    def _one(self, i: int, rng: np.random.Generator) -> dict:
        o = self.o
        n = len(self.base)
        if o["augment"] and n > 1 and rng.random() < float(o["mosaic_prob"]):
            others = rng.integers(0, n, size=3)
            w, h = self.input_size
            center = (rng.uniform(0.5 * w, 1.5 * w), rng.uniform(0.5 * h, 1.5 * h))
            s = mosaic4([self._raw(i, True)] + [self._raw(int(j), True) for j in others], self.input_size, center)
        else:
            s = self._raw(i)
        return self.affine(s, rng)

    @staticmethod
    def _average(s: dict, s2: dict) -> dict:
        img = (s["image"].astype(np.uint16) + s2["image"].astype(np.uint16) + 1) // 2
        s = {**s, "image": img.astype(np.uint8),
             "keypoints": np.concatenate([s["keypoints"], s2["keypoints"]]),
             "boxes": np.concatenate([s["boxes"], s2["boxes"]]),
             "areas": np.concatenate([s["areas"], s2["areas"]])}
        s.pop("ann_ids", None)
        return s

    def __getitem__(self, i: int) -> dict:
        rng = self.base.rng(i)
        s = self._one(i, rng)
        o = self.o
        if o["augment"] and len(self.base) > 1 and rng.random() < float(o["mixup_prob"]):
            j = int(rng.integers(0, len(self.base)))
            if self.mixup is not None:  # YOLOX: the raw second image, rescaled, flipped, cropped (YOLOXMixUp)
                s = self.mixup.mix(s, self._raw(j), rng)
            else:  # the average of this sample and another augmented one
                s = self._average(s, self._one(j, rng))
        if self.jitter is not None:

            s = self.jitter(s, rng)
        if self.hsv is not None:
            s = self.hsv(s, rng)
        if self.flip is not None:
            s = self.flip(s, rng)
        # FilterAnnotations: at least min_keypoints labelled keypoints and a box of at least 1 px
        kp, b = s["keypoints"], s["boxes"]
        keep = ((kp[..., 2] > 0).sum(-1) >= max(1, int(o["min_keypoints"]))) & \
               ((b[:, 2] - b[:, 0]) > 1) & ((b[:, 3] - b[:, 1]) > 1)
        s = {**s, "keypoints": kp[keep], "boxes": b[keep], "areas": s["areas"][keep]}
        s.pop("ann_ids", None)
        return s


# ------------------------------------------------------------------------------------------------ batch resize
class BatchSyncRandomResize:
    """MMPose's ``BatchSyncRandomResize`` data preprocessor (RTMO): the whole training batch, images and ground
    truth, resized to one random size that every process shares.

    Step ``t`` (the global optimiser step) uses the loader's size in its first ``interval`` steps (MMPose resizes
    from the first draw on, made after iteration ``interval - 1``), then ``(32 int(a k), 32 k)`` (``w, h``; ``a``
    the loader's ``w / h``, 32 = ``size_divisor``) with ``k`` uniform over the integers
    ``[round(lo / 32), round(hi / 32)]`` of ``size_range = (lo, hi)``, re-drawn every ``interval`` steps.

    Synchronised without communication: ``k`` comes from a generator seeded by ``(seed, t // interval)``; the
    seed and the global step are the same on every ``torchrun`` process (MMPose draws on rank 0 and broadcasts),
    and a resumed run draws the same sizes. Images: bilinear ``F.interpolate`` (``align_corners=False``, as
    MMPose); keypoints and boxes: ``x' = s (x + 0.5) - 0.5`` (pixel centres; MMPose multiplies by ``s``, a shift
    below half a pixel); areas times ``s_x s_y``.
    """

    def __init__(self, size_range=(480, 800), size_divisor: int = 32, interval: int = 1, seed: int = 0) -> None:
        lo, hi = (float(v) for v in size_range)
        if isinstance(size_divisor, bool) or int(size_divisor) != size_divisor or size_divisor < 1:
            raise ValueError(f"batch_resize_divisor must be an integer >= 1, got {size_divisor!r}")
        if isinstance(interval, bool) or int(interval) != interval or interval < 1:
            raise ValueError(f"batch_resize_interval must be an integer >= 1, got {interval!r}")
        self.divisor, self.interval, self.seed = int(size_divisor), int(interval), int(seed)
        self.k_range = (round(lo / self.divisor), round(hi / self.divisor))
        if not 1 <= self.k_range[0] <= self.k_range[1]:
            raise ValueError(f"batch_resize_range must be 0 < lo <= hi with at least one multiple of "
                             f"{self.divisor}, got {list(size_range)!r}")

    def size_at(self, step: int, base_size) -> tuple[int, int]:
        """``(w, h)`` of the batch at global step ``step`` for a loader size ``base_size = (w, h)``."""
        block = int(step) // self.interval
        w0, h0 = (int(v) for v in base_size)
        if block == 0:
            return w0, h0
        k = int(np.random.default_rng([self.seed, 0x5253, block]).integers(self.k_range[0], self.k_range[1] + 1))
        return self.divisor * int(w0 / h0 * k), self.divisor * k

    @staticmethod
    def resize(images: torch.Tensor, targets: list[dict], size) -> tuple[torch.Tensor, list[dict]]:
        """``(B, 3, h, w)`` images and the RTMO targets (``boxes``, ``keypoints``, ``areas``) at ``size = (w, h)``."""
        import torch.nn.functional as F

        h0, w0 = images.shape[-2:]
        w, h = (int(v) for v in size)
        if (w, h) == (w0, h0):
            return images, targets
        sx, sy = w / w0, h / h0
        x = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False)
        scale = torch.tensor([sx, sy], dtype=torch.float32)
        out = []
        for t in targets:
            sc = scale.to(t["keypoints"].device)
            kp = (t["keypoints"] + 0.5) * sc - 0.5
            b = ((t["boxes"].reshape(-1, 2, 2) + 0.5) * sc - 0.5).reshape(-1, 4)
            out.append({**t, "keypoints": kp, "boxes": b, "areas": t["areas"] * (sx * sy)})
        return x, out


# ------------------------------------------------------------------------------------------------ inference
def letterbox_batch(images: list[np.ndarray], input_size) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Images -> ``(B, 3, h, w)`` float raw BGR 0..255 (top-left letterbox, 114) and the image->input affines."""
    from posekit.data.geometry import letterbox

    xs, Ms = [], []
    for im in images:
        out, M, _ = letterbox(im, input_size, pad_value=PAD_VALUE)
        xs.append(out)
        Ms.append(M)
    x = torch.from_numpy(np.ascontiguousarray(np.stack(xs).transpose(0, 3, 1, 2))).float()
    return x, Ms


@torch.no_grad()
def torch_rtmo_predict(model, images: list[np.ndarray], input_size=None, score_thr: float | None = None,
                       nms_thr: float | None = None) -> list[list]:
    """``list[Person]`` per image (image pixels, descending score) from the PyTorch model: the same letterbox,
    threshold, NMS and back-projection as the ONNX runtime pipeline."""
    from posekit.data.geometry import apply_affine, invert_affine
    from posekit.structures import Person

    size = tuple(input_size or model.config.input_size)
    x, Ms = letterbox_batch(images, size)
    dev = next(model.parameters()).device
    res = model.predict(x.to(dev), score_thr=score_thr, nms_thr=nms_thr)
    out = []
    for r, M, im in zip(res, Ms, images):
        inv = invert_affine(M)
        H, W = im.shape[:2]
        people = []
        for k, ks, b, s in zip(r["keypoints"], r["keypoint_scores"], r["boxes"], r["scores"]):
            xy = apply_affine(k.astype(np.float64), inv)
            box = apply_affine(b.reshape(2, 2).astype(np.float64), inv).reshape(4)
            box[0::2] = np.clip(box[0::2], 0, W)
            box[1::2] = np.clip(box[1::2], 0, H)
            kp = np.concatenate([xy, ks[:, None].astype(np.float64)], axis=1).astype(np.float32)
            people.append(Person(keypoints=kp, box=box.astype(np.float32), score=float(s)))
        out.append(people)
    return out


# ------------------------------------------------------------------------------------------------ task
class RTMOTask(TrainTask):
    name = "rtmo"

    def __init__(self) -> None:
        self.input_size = (256, 256)
        self.options = dict(_DATA_OPTIONS)
        self.train_set: RTMOTrainSet | None = None
        self.num_keypoints = 17
        self.sigmas = None
        self.schedule = None
        self.assigner = None
        self.score_thr, self.nms_thr = 0.1, 0.65
        self._criterion = None
        self.easy_keypoints: tuple[int, ...] = ()
        self.backbone_onnx: str | None = None
        self.bn_calibration_images = 64
        self.batch_resize: BatchSyncRandomResize | None = None
        self.step = 0

    # ------------------------------------------------------------------ options
    def _task_options(self, cfg) -> None:
        from posekit.losses.rtmo import (MMPOSE_SWITCH, MMPOSE_SWITCH_EPOCH, RTMOLossSchedule, RTMOLossWeights,
                                         SimOTAAssigner, mmpose_aux_epoch)
        from posekit.models.rtmo import RTMO_PRESETS

        t = dict(cfg.task_options)
        unknown = set(t) - set(_TASK_OPTIONS)
        if unknown:
            raise ValueError(f"unknown task_options key(s) for task 'rtmo': {sorted(unknown)} "
                             f"(known: {', '.join(_TASK_OPTIONS)})")
        base = RTMOLossWeights.from_dict(t.get("loss"), "task_options.loss")
        # MMPose's schedule is the default of the official presets (the published recipe); unset options of other
        # models mean "never"
        official = str(cfg.model.name or "rtmo-s").lower() in RTMO_PRESETS
        switch = dict(MMPOSE_SWITCH if t.get("switch") is None else t["switch"])
        RTMOLossWeights.from_dict(switch, "task_options.switch")
        aux = dict({"bbox_aux": 1.0} if t.get("aux") is None else t["aux"])
        RTMOLossWeights.from_dict(aux, "task_options.aux")
        se = t["switch_epoch"] if "switch_epoch" in t else (MMPOSE_SWITCH_EPOCH if official else None)
        ae = t["aux_epoch"] if "aux_epoch" in t else (mmpose_aux_epoch(cfg.epochs) if official else None)
        for key, v in (("switch_epoch", se), ("aux_epoch", ae)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"task_options.{key} must be an epoch >= 0 or null, got {v!r}")
        self.schedule = RTMOLossSchedule(base=base, switch_epoch=se, switch=switch, aux_epoch=ae, aux=aux)
        a = dict(t.get("assigner") or {})
        try:
            self.assigner = SimOTAAssigner(**a)
        except TypeError as e:
            raise ValueError(f"task_options.assigner: {e}") from None
        self.score_thr = float(t.get("score_thr", 0.1))
        self.nms_thr = float(t.get("nms_thr", 0.65))
        self.backbone_onnx = t.get("backbone_onnx") or None
        n = t.get("bn_calibration_images", 64)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"task_options.bn_calibration_images must be an integer >= 1, got {n!r}")
        self.bn_calibration_images = n

    def _data_options(self, cfg) -> dict:
        o = merge_data_options("rtmo", dict(cfg.data.options), _DATA_OPTIONS)
        for k in ("flip_prob", "mosaic_prob", "mixup_prob"):
            if not 0.0 <= float(o[k]) <= 1.0:
                raise ValueError(f"data.options.{k} must be in [0, 1], got {o[k]!r}")
        st2 = o["stage2"]
        if st2 is not None:
            if not isinstance(st2, dict) or set(st2) - (set(_DATA_OPTIONS) - set(_NOT_STAGE2)):
                raise ValueError(f"data.options.stage2 must map data.options keys to their last-phase values, "
                                 f"got {st2!r}")
            if o["stage2_epoch"] is None:
                raise ValueError("data.options.stage2 needs data.options.stage2_epoch (the 0-based epoch it starts)")
            if "scale_range" in st2:
                st2["scale_range"] = tuple(float(v) for v in st2["scale_range"])
        for key in ("mixup_ratio_range", "batch_resize_range"):
            for where, d in (("", o), ("stage2.", st2 or {})):
                v = d.get(key)
                if v is not None:
                    if not (isinstance(v, (list, tuple)) and len(v) == 2 and 0 < float(v[0]) <= float(v[1])):
                        raise ValueError(f"data.options.{where}{key} must be [lo, hi] with 0 < lo <= hi or null, "
                                         f"got {v!r}")
                    d[key] = tuple(float(x) for x in v)
        if not 0.0 <= float(o["mixup_flip_prob"]) <= 1.0:
            raise ValueError(f"data.options.mixup_flip_prob must be in [0, 1], got {o['mixup_flip_prob']!r}")
        return o

    # ------------------------------------------------------------------ data
    def build_datasets(self, cfg) -> tuple[Any, Any]:
        from posekit.data.coco import CocoPoseDataset

        if not cfg.data.train_ann or not cfg.data.train_images:
            raise ValueError("task 'rtmo' needs data.train_ann and data.train_images")
        w, h = (int(v) for v in cfg.data.input_size)
        if w % 32 or h % 32:
            raise ValueError(f"data.input_size must be multiples of 32 for RTMO, got {[w, h]}")
        self.input_size = (w, h)
        self._task_options(cfg)
        o = self.options = self._data_options(cfg)
        base = CocoPoseDataset(cfg.data.train_ann, cfg.data.train_images, mode="bottomup", seed=cfg.seed,
                               min_keypoints=int(o["min_keypoints"]))
        self.num_keypoints = base.schema.num_keypoints
        self.easy_keypoints = easy_keypoint_indices(base.schema)
        self.sigmas = list(base.schema.sigmas) if base.schema.sigmas is not None else None
        self.train_set = RTMOTrainSet(base, self.input_size, o)
        self.batch_resize = None
        if o["batch_resize_range"] is not None:
            try:
                self.batch_resize = BatchSyncRandomResize(o["batch_resize_range"], o["batch_resize_divisor"],
                                                          o["batch_resize_interval"], seed=cfg.seed)
            except ValueError as e:
                raise ValueError(f"data.options: {e}") from None
        val = None
        if cfg.data.val_ann:
            val = CocoPoseDataset(cfg.data.val_ann, cfg.data.val_images, mode="bottomup", seed=cfg.seed,
                                  keep_empty_images=True)
        return self.train_set, val

    def collate(self, samples: list[dict]) -> dict:
        images = np.stack([s["image"] for s in samples])  # (B, H, W, 3) uint8 BGR
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float()
        targets = []
        for s in samples:
            kp = np.asarray(s["keypoints"], np.float32)
            targets.append({
                "boxes": torch.from_numpy(np.asarray(s["boxes"], np.float32).reshape(-1, 4)),
                "keypoints": torch.from_numpy(np.ascontiguousarray(kp[..., :2])),
                "visible": torch.from_numpy((kp[..., 2] > 0).astype(np.float32)),
                "areas": torch.from_numpy(np.asarray(s["areas"], np.float32).reshape(-1)),
            })
        return {"image": x, "targets": targets}

    def batch_size_of(self, batch: Any) -> int | None:
        return int(batch["image"].shape[0])

    # ------------------------------------------------------------------ model and loss
    def build_model(self, cfg) -> nn.Module:
        from posekit.models.rtmo import build_rtmo

        over = dict(cfg.model.overrides)
        over.setdefault("num_keypoints", self.num_keypoints)
        over.setdefault("input_size", tuple(self.input_size))
        if "num_bins" in over:
            over["num_bins"] = tuple(over["num_bins"])
        model = build_rtmo(cfg.model.name or "rtmo-s", **over)
        if model.config.num_keypoints != self.num_keypoints:
            raise ValueError(f"model.overrides.num_keypoints={model.config.num_keypoints} but the annotation file "
                             f"has {self.num_keypoints} keypoints")
        if self.sigmas is not None and len(self.sigmas) == self.num_keypoints:
            model.head.loss_oks.sigmas.copy_(torch.as_tensor(self.sigmas, dtype=torch.float32))
        model.init_weights()
        if self.backbone_onnx:
            self._init_backbone(model)
        return model

    def _init_backbone(self, model) -> None:
        """``task_options.backbone_onnx``: the detector's backbone, BatchNorms recalibrated on training images."""
        from posekit.models.backbones.yolox_onnx import (conv_modules_in_run_order, load_cspdarknet_from_onnx,
                                                         recalibrate_folded_batchnorm)

        if self.train_set is None:
            raise ValueError("task_options.backbone_onnx: build_datasets must run before build_model (the folded "
                             "BatchNorms are recalibrated on training images)")
        load_cspdarknet_from_onnx(model.backbone, self.backbone_onnx)
        n = min(self.bn_calibration_images, len(self.train_set))
        batches = (self.collate([self.train_set[i] for i in range(s, min(s + 16, n))])["image"]
                   for s in range(0, n, 16))
        recalibrate_folded_batchnorm(model.backbone, conv_modules_in_run_order(model.backbone), batches)

    def set_step(self, step: int) -> None:
        """The global step of the next ``compute_loss`` (the batch size of ``BatchSyncRandomResize``)."""
        self.step = int(step)

    def weights_at(self, epoch: int):
        """The loss weights of ``epoch`` (0-based)."""
        if self.schedule is None:
            from posekit.losses.rtmo import RTMOLossSchedule

            self.schedule = RTMOLossSchedule()
        return self.schedule.at(epoch)

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        from posekit.losses.rtmo import RTMOCriterion
        from posekit.training.ema import unwrap_model

        net = unwrap_model(model)
        if self._criterion is None or self._criterion.head is not net.head:
            self._criterion = RTMOCriterion(net.head, self.assigner, easy_keypoints=self.easy_keypoints)
        x, targets = batch["image"], batch["targets"]
        if self.batch_resize is not None and model.training:
            size = self.batch_resize.size_at(self.step, (x.shape[-1], x.shape[-2]))
            x, targets = self.batch_resize.resize(x, targets, size)
        raw = model(x, with_kpt_offsets=True)
        epoch = self.train_set.epoch if self.train_set is not None else 0
        w = self.weights_at(epoch)
        out = self._criterion(raw, targets, w)
        scalars = {k: float(v.detach()) for k, v in out.items() if k != "loss"}
        if self.batch_resize is not None:
            scalars["input_h"] = float(x.shape[-2])
        scalars["proxy_target_cc"] = float(w.proxy_target_cc)
        scalars["bbox_aux_weight"] = float(w.bbox_aux)
        return out["loss"], scalars

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, model: nn.Module, val, batch_size: int = 8) -> dict[int, list]:
        """``{image_id: [Person, ...]}`` for every image of ``val`` (image pixels)."""
        from posekit.data.io import read_image

        index = val.index
        ids = list(index.image_ids)
        out: dict[int, list] = {}
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            imgs = [read_image(index.image_path(i)) for i in chunk]
            for iid, people in zip(chunk, torch_rtmo_predict(model, imgs, self.input_size, self.score_thr,
                                                             self.nms_thr)):
                out[int(iid)] = people
        return out

    @torch.no_grad()
    def evaluate(self, model: nn.Module, val) -> dict[str, float]:
        import warnings

        from posekit.evaluation.coco import evaluate_coco_keypoints
        from posekit.evaluation.results import people_to_results
        from posekit.training.ema import unwrap_model

        net = unwrap_model(model)
        was = net.training
        net.eval()
        try:
            people = self.predict(net, val)
        finally:
            net.train(was)
        cat_id = int((val.index.category or {}).get("id", 1))
        results = people_to_results(people, category_id=cat_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = evaluate_coco_keypoints(str(val.index.file), results, image_ids=list(people))
        out = {k: float(v) for k, v in stats.items()}
        out["num_people"] = float(len(results))
        return out
