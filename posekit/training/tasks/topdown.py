"""``topdown``: train every top-down model family (SimpleBaseline, ViTPose, RTMPose, CPM, Stacked Hourglass, CPN).

* Data: ``CocoPoseDataset(mode="topdown")``: one sample per annotated person, cropped from its ground-truth box
  (padding 1.25, aspect fixed to ``data.input_size = [w, h]``) by :class:`~posekit.data.transforms.TopDownAffine`
  (UDP crop for UDP codecs, i.e. ViTPose). With ``augment``: random flip, half body, box shift/scale/rotation
  first (MMPose's pipeline). Targets come from the model's own codec, computed in ``collate`` (loader workers).
* Model (``model.name``): any top-down preset of :func:`posekit.models.presets.build_model`
  (``simplebaseline-r18|r50``, ``vitpose-*``, ``rtmpose-t|s|m|l``, ``cpm``, ``hourglass-52``, ``cpn-r50``,
  ``cpn-tiny``) or of :data:`~posekit.models.topdown_presets.TOPDOWN_CPU_PRESETS` (``rtmpose-nano``), with
  ``model.overrides``. The task passes the data's keypoint schema, ``input_size`` and (heatmap models, unless
  overridden) ``heatmap_size = input_size / stride``. Input: BGR crops normalised like
  :meth:`~posekit.models.topdown.TopDownModel.preprocess` (RGB, ImageNet mean/std).
* Loss, by what the model outputs (every one a mean over the samples of the batch):

  - ``global_heatmaps`` (CPN): GlobalNet L2 at every pyramid level (summed; targets with
    ``CPNConfig.global_sigmas``) + RefineNet online hard keypoint mining (``topk``),
    :func:`posekit.losses.stage.cpn_loss`;
  - ``stage_heatmaps`` (CPM, Hourglass): the L2 of every stage / stack, summed (``F = sum_t f_t``: CPM's
    objective, the Hourglass intermediate supervision), :func:`posekit.losses.stage.stage_l2_loss`;
  - ``heatmaps`` (SimpleBaseline, ViTPose): keypoint MSE, :func:`posekit.losses.topdown.keypoint_mse_loss`;
  - ``pred_x`` / ``pred_y`` (RTMPose): SimCC KL loss (:func:`~posekit.losses.topdown.kl_discret_loss`, RTMPose's
    beta 10 / label softmax). ``task_options.simcc_loss_norm``: ``mmpose`` is MMPose's ``KLDiscretLoss`` exactly
    (summed over the instances and divided by K), ``batch`` also divides by the batch size (a per-sample mean like
    the other families); unset, it is ``mmpose`` for the official presets (``rtmpose-t|s|m|l``, the published
    recipe) and ``batch`` for posekit's CPU preset ``rtmpose-nano`` (docs/training-parity.md).

* Evaluation: the validation people cropped from their ground-truth boxes, the model (flip test by default),
  decoding, keypoints mapped back to image pixels with the inverse crop affine, COCO keypoint AP against
  ``data.val_ann`` (keypoint score = heatmap / SimCC maximum; person score = the mean of the keypoint scores
  above 0.2). Also ``kpt_err``: the mean distance (model-input pixels) of the labelled keypoints. For CPN the
  same is reported for GlobalNet's finest level (``global_AP``, ``global_kpt_err``), decoded with the same codec.

**Several datasets, one decoder each** (ViTPose multi-dataset training): ``data.options.datasets`` =
``{name: {train_ann, train_images, val_ann, val_images}, ...}`` (``data.train_ann`` etc. are then unused). The
model gets one head (and codec) per dataset, built for that dataset's keypoint schema, on one shared backbone
(:class:`MultiDecoderTopDown`). One training item is a *group*: one sample of every dataset (item ``i`` takes
sample ``i mod len(d)`` of dataset ``d``; ``len`` = the largest dataset), so every batch of ``batch_size`` items
holds ``batch_size`` crops of every dataset; the backbone runs once on all of them and each slice goes to its
own decoder; the loss is the sum over decoders of their batch means. Evaluation gives ``AP_<name>`` (and the
other stats) per decoder on its own validation file, and ``AP`` = their mean.

``data.options`` (all optional): ``augment`` (true), ``flip_prob`` (0.5), ``half_body_prob`` (0.3),
``shift_factor`` (0.16), ``shift_prob`` (0.3), ``scale_range`` ([0.75, 1.25]), ``rot_factor`` (80 degrees),
``rot_prob`` (0.6), ``min_keypoints`` (1), ``bbox_padding`` (1.25), ``udp`` (null: from the codec),
``datasets`` (see above), ``half_body_min_keypoints`` (8; MMPose: 9), ``half_body_upper_prob`` (0.5; MMPose: 0.7),
the RTMPose photometric set applied to the crop: ``hsv_aug`` (false), ``blur_prob`` (0), ``median_blur_prob`` (0),
``coarse_dropout_prob`` (0) (:mod:`posekit.data.transforms`), and a second augmentation phase: ``stage2_epoch``
(0-based, null: none) with ``stage2`` (the options that change from then on; MMDet's ``PipelineSwitchHook``).

``data.schema``: a keypoint schema file (or name) used instead of the annotation file's category (single dataset);
it is saved in every checkpoint (``checkpoint["schema"]``) for export and loading.

``task_options`` (all optional): ``flip_test`` (true), ``eval_batch_size`` (64), ``dark`` (false: true switches MSRA
heatmap codecs -- SimpleBaseline, CPM, Hourglass, CPN -- to DARK: uncut Gaussians centred on the exact position and
Taylor-refined decoding, :class:`~posekit.codecs.heatmap.HeatmapCodec` ``unbiased=True``; it matters for small
heatmaps, where MSRA's rounding to a cell costs a lot of AP), ``simcc_loss_norm`` (null: ``"mmpose"`` for the official
RTMPose presets, ``"batch"`` for ``rtmpose-nano``; ``"mmpose"``: RTMPose's loss as MMPose computes it, a sum over the
instances / K; ``"batch"``: also divided by the batch size).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from posekit.models.topdown import TopDownModel
from posekit.models.topdown_presets import heatmap_stride, topdown_family
from posekit.training.tasks.base import TrainTask, merge_data_options

__all__ = ["TopDownTask", "MultiDecoderTopDown", "GroupedDatasets", "build_topdown_for_training",
           "heatmap_stride", "predict_crops", "init_heatmap_outputs", "make_synthetic_splits", "EASY_SYNTH"]

_DATA_OPTIONS = {
    "augment": True,
    "flip_prob": 0.5,
    "half_body_prob": 0.3,
    "shift_factor": 0.16,
    "shift_prob": 0.3,
    "scale_range": (0.75, 1.25),
    "rot_factor": 80.0,
    "rot_prob": 0.6,
    "min_keypoints": 1,
    "bbox_padding": 1.25,
    "udp": None,
    "datasets": None,
    "half_body_min_keypoints": 8,
    "half_body_upper_prob": 0.5,
    "hsv_aug": False,
    "blur_prob": 0.0,
    "median_blur_prob": 0.0,
    "coarse_dropout_prob": 0.0,
    "stage2_epoch": None,
    "stage2": None,
}
_TASK_OPTIONS = {"flip_test": True, "eval_batch_size": 64, "dark": False, "simcc_loss_norm": None}
_DATASET_KEYS = ("train_ann", "train_images", "val_ann", "val_images")


# ------------------------------------------------------------------------------------------------ models
class MultiDecoderTopDown(TopDownModel):
    """A :class:`TopDownModel` with several decoders, one per training dataset: ``forward({decoder: crops})`` runs
    the backbone once and routes each slice to its own decoder (:meth:`TopDownModel.forward_multi`)."""


def _builder(name: str):
    from posekit.models.presets import PRESETS
    from posekit.models.topdown_presets import TOPDOWN_CPU_PRESETS

    if name in PRESETS:
        return PRESETS[name]
    if name in TOPDOWN_CPU_PRESETS:
        return TOPDOWN_CPU_PRESETS[name]
    raise KeyError(f"unknown top-down model.name {name!r}")


def build_topdown_for_training(name: str, schema, input_size, overrides: Mapping[str, Any] | None = None
                               ) -> TopDownModel:
    """Preset ``name`` built for ``schema`` (a :class:`~posekit.schema.KeypointSchema`) and ``input_size = (w, h)``:
    ``schema`` / ``num_keypoints``, ``input_size`` and (heatmap models) ``heatmap_size`` are set unless
    ``overrides`` sets them. Raises ValueError for a preset that is not top-down or a bad override."""
    overrides = dict(overrides or {})
    fam = topdown_family(name)
    builder = _builder(name)
    w, h = (int(v) for v in input_size)
    kw: dict[str, Any] = {"schema": schema, "input_size": (w, h)}
    if fam in ("cpm", "hourglass", "cpn"):
        kw["num_keypoints"] = schema.num_keypoints
    stride = heatmap_stride(name, overrides)
    if stride is not None:
        kw["heatmap_size"] = (math.ceil(w / stride), math.ceil(h / stride))
    kw.update(overrides)
    try:
        model = builder(**kw)
    except TypeError as e:
        raise ValueError(f"model {name!r}: bad model.overrides {sorted(overrides)}: {e}") from None
    if not isinstance(model, TopDownModel):
        raise ValueError(f"model.name {name!r} did not build a TopDownModel")
    if stride is not None and "heatmap_size" not in overrides:
        _check_heatmap_size(model, name, (w, h), stride)
    init_heatmap_outputs(model, schema.num_keypoints)
    heads = model.head.values() if isinstance(model.head, nn.ModuleDict) else [model.head]
    for head in heads:  # MMPose's own head init (HeatmapHead, RTMCCHead)
        if hasattr(head, "init_weights"):
            head.init_weights()
    model.preset = name
    return model


def init_heatmap_outputs(model: nn.Module, num_keypoints: int, std: float = 1e-3) -> int:
    """MMPose's initialisation of heatmap prediction layers (``HeatmapHead`` / ``CPMHead`` final layers): every
    ``Conv2d`` that outputs ``num_keypoints`` (or ``num_keypoints + 1``: CPM's background map) channels gets
    ``N(0, std)`` weights and zero bias (a ``BatchNorm2d`` over such maps, as in CPN, gets scale ``std`` and bias
    0), so that a network trained from scratch starts near the all-zero map
    instead of spending its first steps unlearning O(1) outputs. Returns the number of layers changed."""
    n = 0
    ks = (num_keypoints, num_keypoints + 1)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.out_channels in ks:
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            n += 1
        elif isinstance(m, nn.BatchNorm2d) and m.num_features in ks:  # CPN's predictors end with a BN
            nn.init.constant_(m.weight, std)
            nn.init.zeros_(m.bias)
            n += 1
    return n


@torch.no_grad()
def _check_heatmap_size(model: TopDownModel, name: str, input_size, stride: int) -> None:
    """One forward pass on zeros: the heatmaps must have the codec's size (the backbone rounds odd sizes up)."""
    w, h = input_size
    was = model.training
    model.eval()
    try:
        raw = model(torch.zeros(1, 3, h, w))
    finally:
        model.train(was)
    got = tuple(raw["heatmaps"].shape[-2:][::-1])
    want = tuple(model.codec().heatmap_size)
    if got != want:
        raise ValueError(f"model {name!r}: data.input_size {[w, h]} gives {list(got)} heatmaps, not input / "
                         f"{stride} = {list(want)}; use an input size whose sides the backbone divides evenly "
                         f"(e.g. multiples of 32 for ResNet / CSPNeXt backbones)")


def _build_multi(name: str, schemas: Mapping[str, Any], input_size, overrides) -> MultiDecoderTopDown:
    parts = {n: build_topdown_for_training(name, s, input_size, overrides) for n, s in schemas.items()}
    first = next(iter(parts.values()))
    necks = {n: m.neck for n, m in parts.items()}
    neck = None if all(v is None for v in necks.values()) else first.neck  # a parameter-free neck, shared
    model = MultiDecoderTopDown(
        first.backbone, {n: m.head for n, m in parts.items()}, {n: m.codec() for n, m in parts.items()},
        neck=neck, flip_index={n: m.flip_indices[None] for n, m in parts.items()},
        shift_heatmap=first.shift_heatmap, mean=tuple(first.mean.flatten().tolist()),
        std=tuple(first.std.flatten().tolist()), bgr_to_rgb=first.bgr_to_rgb, preset=name)
    model.config = getattr(first, "config", None)
    return model


def _dark(codec):
    """The DARK version (``unbiased=True``) of an MSRA heatmap codec; other codecs unchanged."""
    import dataclasses

    from posekit.codecs.heatmap import HeatmapCodec

    if isinstance(codec, HeatmapCodec) and codec.kind == "msra":
        return dataclasses.replace(codec, unbiased=True)
    return codec


# ------------------------------------------------------------------------------------------------ data
class GroupedDatasets:
    """Several map-style datasets read together: item ``i`` is ``{name: dataset[i mod len(dataset)]}`` for every
    dataset; ``len`` is the largest dataset's. ``set_epoch`` is passed on."""

    def __init__(self, datasets: Mapping[str, Any]):
        if not datasets:
            raise ValueError("GroupedDatasets needs at least one dataset")
        self.datasets = dict(datasets)
        for n, d in self.datasets.items():
            if len(d) == 0:
                raise ValueError(f"dataset {n!r} has no samples")

    def __len__(self) -> int:
        return max(len(d) for d in self.datasets.values())

    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets.values():
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict:
        return {n: d[int(i) % len(d)] for n, d in self.datasets.items()}


def predict_crops(model: TopDownModel, x: torch.Tensor, decoder=None, flip_test: bool = True,
                  keys=("heatmaps",)) -> dict:
    """Decode normalised crops ``x (B, 3, H, W)``: ``{key: (keypoints (B, K, 2) model-input pixels, scores
    (B, K))}`` for every heatmap output in ``keys`` (a list output such as ``global_heatmaps`` uses its last
    entry, the finest level) or the SimCC outputs (key ``"heatmaps"`` stands for the model's main output).

    The flip test averages each output with the mirrored crop's, mapped back (heatmaps flipped, channels swapped,
    MSRA heatmaps shifted one column; SimCC x bins reversed). UDP heatmap decodings are rescaled by
    ``(input - 1) / input`` so that they are exact in the UDP crop frame (MMPose's UDP decoder returns
    ``p * input / (input - 1)`` and back-projects with the classic box formula, which cancels it).
    """
    from posekit.codecs.heatmap import HeatmapCodec
    from posekit.codecs.simcc import SimCCCodec
    from posekit.models.topdown import flip_heatmaps, flip_simcc

    key = model._key(decoder)
    codec = model.codec(decoder)
    fi = model.flip_indices[key] if flip_test else None
    raw = model(x, decoder) if model.multi else model(x)
    flipped = None
    if fi is not None:
        flipped = model(x.flip(-1), decoder) if model.multi else model(x.flip(-1))

    def pick(out, k):
        v = out[k]
        return v[-1] if isinstance(v, (list, tuple)) else v

    res = {}
    if isinstance(codec, SimCCCodec):
        px, py = raw["pred_x"], raw["pred_y"]
        if flipped is not None:
            fx, fy = flip_simcc(flipped["pred_x"], flipped["pred_y"], fi)
            px, py = 0.5 * (px + fx), 0.5 * (py + fy)
        res["heatmaps"] = codec.decode(px.float(), py.float())
        return res
    assert isinstance(codec, HeatmapCodec)
    for k in keys:
        hm = pick(raw, k)
        if flipped is not None:
            ch = hm.shape[1]
            fidx = list(fi) + list(range(len(fi), ch))
            hm = 0.5 * (hm + flip_heatmaps(pick(flipped, k), fidx, model.shift_heatmap))
        kp, sc = codec.decode(hm.float())
        if codec.kind == "udp":
            size = np.asarray(codec.input_size, np.float32)
            kp = kp * (size - 1) / size
        res[k] = (kp, sc)
    return res


# ------------------------------------------------------------------------------------------------ the task
class TopDownTask(TrainTask):
    name = "topdown"

    def __init__(self) -> None:
        self.input_size = (192, 256)
        self.options = dict(_DATA_OPTIONS)
        self.task_options = dict(_TASK_OPTIONS)
        self.model_name = ""
        self.schemas: dict = {}  # decoder name (None: single) -> schema
        self.codecs: dict = {}  # decoder name -> codec (set by build_model)
        self.global_codecs: dict = {}  # CPN: decoder name -> per-level codecs
        self.affines: list = []  # TopDownAffine instances (their ``udp`` is set by build_model)
        self.mean = np.array([123.675, 116.28, 103.53], np.float32)
        self.std = np.array([58.395, 57.12, 57.375], np.float32)
        self.bgr_to_rgb = True
        self.multi = False

    # ------------------------------------------------------------------ options
    def _options(self, cfg) -> dict:
        out = merge_data_options("topdown", dict(cfg.data.options), _DATA_OPTIONS)
        for k in ("flip_prob", "half_body_prob", "shift_prob", "rot_prob", "half_body_upper_prob", "blur_prob",
                  "median_blur_prob", "coarse_dropout_prob"):
            if not 0.0 <= float(out[k]) <= 1.0:
                raise ValueError(f"data.options.{k} must be in [0, 1], got {out[k]!r}")
        st2 = out["stage2"]
        if st2 is not None:
            if not isinstance(st2, Mapping) or set(st2) - (set(_DATA_OPTIONS) - {"datasets", "stage2", "stage2_epoch"}):
                raise ValueError(f"data.options.stage2 must map data.options keys to their second-phase values, "
                                 f"got {st2!r}")
            if out["stage2_epoch"] is None:
                raise ValueError("data.options.stage2 needs data.options.stage2_epoch (the 0-based epoch it starts)")
        topts = dict(cfg.task_options)
        unknown = set(topts) - set(_TASK_OPTIONS)
        if unknown:
            raise ValueError(f"unknown task_options key(s) for task 'topdown': {sorted(unknown)} "
                             f"(known: {', '.join(sorted(_TASK_OPTIONS))})")
        self.task_options = {**_TASK_OPTIONS, **topts}
        if self.task_options["simcc_loss_norm"] not in (None, "mmpose", "batch"):
            raise ValueError(f"task_options.simcc_loss_norm must be 'mmpose', 'batch' or null, "
                             f"got {self.task_options['simcc_loss_norm']!r}")
        return out

    @staticmethod
    def _schema_of(cfg, decoder):
        """``data.schema`` (a schema file or name) for the single-dataset case; None: the file's category."""
        if not cfg.data.schema:
            return None
        if decoder is not None:
            raise ValueError("data.schema applies to a single dataset; with data.options.datasets each file's "
                             "category gives its schema")
        from posekit.schema import get_schema

        try:
            return get_schema(cfg.data.schema)
        except (KeyError, ValueError, FileNotFoundError) as e:
            raise ValueError(f"data.schema {cfg.data.schema!r}: {e}") from None

    def checkpoint_meta(self) -> dict:
        """Saved in every checkpoint: the keypoint ``schema`` (a plain dict) of a single-decoder model, so that
        ``posekit export`` / ``load_preset`` rebuild the model and its card for it."""
        if self.multi or None not in self.schemas:
            return {}
        return {"schema": self.schemas[None].to_dict()}

    @staticmethod
    def _train_pipeline(schema, o: Mapping, affine):
        """The training transforms of ``data.options`` ``o``: flip, half body, box jitter, the crop ``affine``,
        then the photometric set on the crop (HSV, blur, median blur, coarse dropout; RTMPose's order)."""
        from posekit.data.transforms import (CoarseDropout, Compose, HSVRandomAug, RandomBBoxTransform, RandomBlur,
                                             RandomFlip, RandomHalfBody)

        steps: list = []
        if o["augment"]:
            if float(o["flip_prob"]) > 0:
                steps.append(RandomFlip(schema, float(o["flip_prob"]), defer_image=True))  # fused into the crop
            if float(o["half_body_prob"]) > 0 and schema.upper_body:
                steps.append(RandomHalfBody(schema, float(o["half_body_prob"]),
                                            min_keypoints=int(o["half_body_min_keypoints"]),
                                            upper_prob=float(o["half_body_upper_prob"])))
            steps.append(RandomBBoxTransform(shift_factor=float(o["shift_factor"]),
                                             scale_range=tuple(float(v) for v in o["scale_range"]),
                                             rot_factor=float(o["rot_factor"]), rot_prob=float(o["rot_prob"]),
                                             shift_prob=float(o["shift_prob"])))
        steps.append(affine)
        if o["augment"]:
            if o["hsv_aug"]:
                steps.append(HSVRandomAug())
            if float(o["blur_prob"]) > 0:
                steps.append(RandomBlur(float(o["blur_prob"])))
            if float(o["median_blur_prob"]) > 0:
                steps.append(RandomBlur(float(o["median_blur_prob"]), median=True))
            if float(o["coarse_dropout_prob"]) > 0:
                steps.append(CoarseDropout(float(o["coarse_dropout_prob"])))
        return Compose(steps)

    def _dataset_paths(self, cfg) -> dict:
        ds = self.options["datasets"]
        if ds is None:
            if not cfg.data.train_ann or not cfg.data.train_images:
                raise ValueError("task 'topdown' needs data.train_ann and data.train_images (or "
                                 "data.options.datasets)")
            return {None: {k: getattr(cfg.data, k) for k in _DATASET_KEYS}}
        if not isinstance(ds, Mapping) or not ds:
            raise ValueError(f"data.options.datasets must map a decoder name to its paths, got {ds!r}")
        out = {}
        for name, paths in ds.items():
            if not isinstance(paths, Mapping):
                raise ValueError(f"data.options.datasets.{name} must be a mapping of {_DATASET_KEYS}, got {paths!r}")
            bad = set(paths) - set(_DATASET_KEYS)
            if bad:
                raise ValueError(f"unknown key(s) {sorted(bad)} in data.options.datasets.{name} "
                                 f"(known: {', '.join(_DATASET_KEYS)})")
            if not paths.get("train_ann") or not paths.get("train_images"):
                raise ValueError(f"data.options.datasets.{name} needs train_ann and train_images")
            out[str(name)] = {k: str(paths.get(k) or "") for k in _DATASET_KEYS}
        return out

    # ------------------------------------------------------------------ data
    def build_datasets(self, cfg) -> tuple[Any, Any]:
        from posekit.data.coco import CocoPoseDataset
        from posekit.data.transforms import EpochSwitch, TopDownAffine

        self.input_size = tuple(int(v) for v in cfg.data.input_size)
        o = self.options = self._options(cfg)
        paths = self._dataset_paths(cfg)
        self.multi = None not in paths
        self.affines = []
        self.schemas = {}
        trains, vals = {}, {}
        for name, p in paths.items():
            kw = dict(mode="topdown", seed=cfg.seed, min_keypoints=int(o["min_keypoints"]),
                      bbox_padding=float(o["bbox_padding"]), schema=self._schema_of(cfg, name))
            train = CocoPoseDataset(p["train_ann"], p["train_images"], **kw)
            schema = train.schema
            affine = TopDownAffine(self.input_size, udp=bool(o["udp"]))
            self.affines.append(affine)
            pipeline = self._train_pipeline(schema, o, affine)
            if o["stage2_epoch"] is not None:  # the recipe's second augmentation phase
                o2 = {**o, **dict(o["stage2"] or {})}
                pipeline = EpochSwitch(pipeline, self._train_pipeline(schema, o2, affine), int(o["stage2_epoch"]))
            train.transform = pipeline
            trains[name] = train
            self.schemas[name] = schema
            if p["val_ann"]:
                val_affine = TopDownAffine(self.input_size, udp=bool(o["udp"]))
                self.affines.append(val_affine)
                val = CocoPoseDataset(p["val_ann"], p["val_images"] or p["train_images"], transform=val_affine, **kw)
                if val.schema.num_keypoints != schema.num_keypoints:
                    raise ValueError(f"{p['val_ann']}: {val.schema.num_keypoints} keypoints, the training file "
                                     f"{p['train_ann']} has {schema.num_keypoints}")
                vals[name] = val
        if not self.multi:
            return trains[None], vals.get(None)
        missing = sorted(set(trains) - set(vals))
        if vals and missing:
            raise ValueError(f"data.options.datasets: {missing} have no val_ann (give every dataset one, or none)")
        return GroupedDatasets(trains), (vals or None)

    # ------------------------------------------------------------------ model
    def build_model(self, cfg) -> nn.Module:
        name = cfg.model.name
        if not name:
            raise ValueError("task 'topdown' needs model.name (e.g. simplebaseline-r18, vitpose-s, rtmpose-nano, "
                             "cpm, hourglass-52, cpn-tiny)")
        if not self.schemas:
            raise RuntimeError("TopDownTask.build_model needs build_datasets first (the keypoint schema)")
        overrides = dict(cfg.model.overrides)
        self.input_size = tuple(int(v) for v in cfg.data.input_size)
        if self.multi:
            model = _build_multi(name, self.schemas, self.input_size, overrides)
        else:
            model = build_topdown_for_training(name, self.schemas[None], self.input_size, overrides)
        self.model_name = name
        dark = bool(self.task_options["dark"])
        if dark:  # DARK: MSRA heatmaps with exact (uncut) Gaussians and Taylor decoding
            for d in model.decoders:
                model.codecs[d] = _dark(model.codecs[d])
        self.codecs = {d: model.codec(d) for d in model.decoders}
        self.global_codecs = {}
        cfg_obj = getattr(model, "config", None)
        if cfg_obj is not None and hasattr(cfg_obj, "global_sigmas"):
            from posekit.models.topdown_presets import cpn_global_codecs

            self.global_codecs = {d: [_dark(c) if dark else c for c in cpn_global_codecs(cfg_obj)]
                                  for d in model.decoders}
        self.topk = int(getattr(cfg_obj, "topk", 8) or 8)
        kinds = {getattr(c, "kind", "simcc") for c in self.codecs.values()}
        udp = self.options["udp"]
        if udp is None:
            udp = kinds == {"udp"}
        for a in self.affines:
            a.udp = bool(udp)
        self.mean = model.mean.flatten().cpu().numpy().astype(np.float32)
        self.std = model.std.flatten().cpu().numpy().astype(np.float32)
        self.bgr_to_rgb = bool(model.bgr_to_rgb)
        return model

    # ------------------------------------------------------------------ batches
    def _images(self, samples: list[dict]) -> torch.Tensor:
        from posekit.data.batch import images_to_nchw

        return torch.from_numpy(images_to_nchw([s["image"] for s in samples], self.mean, self.std, self.bgr_to_rgb))

    def _collate_one(self, samples: list[dict], decoder) -> dict:
        from posekit.codecs.simcc import SimCCCodec

        if decoder not in self.codecs:
            raise RuntimeError("TopDownTask.collate needs build_model first (the codec)")
        codec = self.codecs[decoder]
        kps = [np.asarray(s["keypoints"], np.float32)[:1] for s in samples]  # (1, K, 3) crop pixels
        out = {"image": self._images(samples),
               "keypoints": torch.from_numpy(np.concatenate(kps)),
               "warp": torch.from_numpy(np.stack([np.asarray(s["warp"], np.float64) for s in samples])),
               "image_id": torch.tensor([int(s["image_id"]) for s in samples])}
        enc = [codec.encode(k) for k in kps]
        out["keypoint_weights"] = torch.from_numpy(np.concatenate([e["keypoint_weights"] for e in enc]))
        if isinstance(codec, SimCCCodec):
            out["x_labels"] = torch.from_numpy(np.concatenate([e["keypoint_x_labels"] for e in enc]))
            out["y_labels"] = torch.from_numpy(np.concatenate([e["keypoint_y_labels"] for e in enc]))
        else:
            out["heatmaps"] = torch.from_numpy(np.stack([e["heatmaps"] for e in enc]))
        if decoder in self.global_codecs:
            levels = [np.stack([c.encode(k)["heatmaps"] for k in kps]) for c in self.global_codecs[decoder]]
            out["global_heatmaps"] = torch.from_numpy(np.stack(levels, 1))  # (B, L, K, h, w)
        return out

    def collate(self, samples: list[dict]) -> dict:
        if not self.multi:
            return self._collate_one(samples, None)
        return {"decoders": {n: self._collate_one([s[n] for s in samples], n) for n in self.codecs}}

    def batch_size_of(self, batch: Any) -> int | None:
        if "decoders" in batch:
            return sum(int(b["image"].shape[0]) for b in batch["decoders"].values())
        return int(batch["image"].shape[0])

    # ------------------------------------------------------------------ loss
    def _loss(self, raw: dict, batch: dict) -> tuple[torch.Tensor, dict]:
        from posekit.losses.stage import cpn_loss, stage_l2_loss
        from posekit.losses.topdown import keypoint_mse_loss, kl_discret_loss

        w = batch["keypoint_weights"]
        if "global_heatmaps" in raw:
            gt = batch.get("global_heatmaps")
            targets = [gt[:, i] for i in range(gt.shape[1])] if gt is not None else batch["heatmaps"]
            out = cpn_loss([p.float() for p in raw["global_heatmaps"]], raw["heatmaps"].float(), targets,
                           batch["heatmaps"], w, self.topk)
            return out["loss"], {"loss_global": float(out["loss_global"].detach()),
                                 "loss_refine": float(out["loss_refine"].detach())}
        if "stage_heatmaps" in raw:
            out = stage_l2_loss([p.float() for p in raw["stage_heatmaps"]], batch["heatmaps"], w)
            n = len(raw["stage_heatmaps"])
            return out["loss"], {"loss_first_stage": float(out["loss_stage1"].detach()),
                                 "loss_last_stage": float(out[f"loss_stage{n}"].detach())}
        if "pred_x" in raw:
            loss = kl_discret_loss((raw["pred_x"].float(), raw["pred_y"].float()),
                                   (batch["x_labels"], batch["y_labels"]), w)
            if self.simcc_loss_norm() == "batch":
                loss = loss / raw["pred_x"].shape[0]
            return loss, {"loss_kl": float(loss.detach())}
        loss = keypoint_mse_loss(raw["heatmaps"].float(), batch["heatmaps"], w)
        return loss, {"loss_mse": float(loss.detach())}

    def simcc_loss_norm(self) -> str:
        """``"mmpose"`` or ``"batch"``: ``task_options.simcc_loss_norm``, or when unset ``"mmpose"`` for the
        official presets (:data:`~posekit.models.topdown_presets.TOPDOWN_PRESETS`) and ``"batch"`` otherwise."""
        from posekit.models.topdown_presets import TOPDOWN_PRESETS

        opt = self.task_options.get("simcc_loss_norm")
        if opt is None:
            return "mmpose" if self.model_name in TOPDOWN_PRESETS else "batch"
        return str(opt)

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        if "decoders" not in batch:
            return self._loss(model(batch["image"]), batch)
        raws = model({n: b["image"] for n, b in batch["decoders"].items()})
        total, scalars = None, {}
        for n, b in batch["decoders"].items():
            loss, sc = self._loss(raws[n], b)
            total = loss if total is None else total + loss
            scalars[f"loss_{n}"] = float(loss.detach())
        return total, scalars

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict_dataset(self, model: nn.Module, val, decoder=None, keys=("heatmaps",)) -> dict:
        """Every sample of ``val`` (crops from ground-truth boxes) through the model: ``{key: (keypoints (N, K, 3)
        image pixels x, y, score, crop keypoints (N, K, 2) model-input pixels)}``, plus ``"gt"`` (N, K, 3) crop
        keypoints and ``"image_id"`` (N,)."""
        from posekit.data.geometry import apply_affine, invert_affine

        device = next(model.parameters()).device
        flip = bool(self.task_options["flip_test"])
        bs = int(self.task_options["eval_batch_size"])
        acc: dict = {k: ([], []) for k in keys}
        gts, iids = [], []
        for start in range(0, len(val), bs):
            samples = [val[i] for i in range(start, min(len(val), start + bs))]
            x = self._images(samples).to(device)
            pred = predict_crops(model, x, decoder, flip, keys)
            warps = [np.asarray(s["warp"], np.float64) for s in samples]
            for k in keys:
                kp, sc = pred[k]
                img = np.stack([apply_affine(p.astype(np.float64), invert_affine(M)) for p, M in zip(kp, warps)])
                acc[k][0].append(np.concatenate([img, sc[..., None]], -1))
                acc[k][1].append(kp)
            gts.append(np.stack([np.asarray(s["keypoints"], np.float32)[0] for s in samples]))
            iids += [int(s["image_id"]) for s in samples]
        out = {k: (np.concatenate(a), np.concatenate(b)) for k, (a, b) in acc.items()}
        out["gt"] = np.concatenate(gts)
        out["image_id"] = np.asarray(iids)
        return out

    def _stats(self, val, pred_img: np.ndarray, pred_crop: np.ndarray, gt: np.ndarray, iids) -> dict:
        import warnings

        from posekit.evaluation.coco import evaluate_coco_keypoints

        cat_id = int((val.index.category or {}).get("id", 1))
        results = []
        for kp, iid in zip(pred_img, iids):
            sc = kp[:, 2]
            good = sc > 0.2
            score = float(sc[good].mean()) if good.any() else 0.0
            results.append({"image_id": int(iid), "category_id": cat_id, "keypoints": kp.ravel().tolist(),
                            "score": score})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = {k: float(v) for k, v in evaluate_coco_keypoints(str(val.index.file), results,
                                                                    sigmas=val.schema).items()}
        lab = gt[..., 2] > 0
        d = np.linalg.norm(pred_crop - gt[..., :2], axis=-1)
        stats["kpt_err"] = float(d[lab].mean()) if lab.any() else float("nan")
        return stats

    @torch.no_grad()
    def evaluate(self, model: nn.Module, val) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            if not self.multi:
                cpn = bool(self.global_codecs)
                keys = ("heatmaps", "global_heatmaps") if cpn else ("heatmaps",)
                p = self.predict_dataset(model, val, None, keys)
                out = self._stats(val, *p["heatmaps"], p["gt"], p["image_id"])
                if cpn:
                    g = self._stats(val, *p["global_heatmaps"], p["gt"], p["image_id"])
                    out["global_AP"], out["global_kpt_err"] = g["AP"], g["kpt_err"]
                return out
            out, aps = {}, []
            for name, v in val.items():
                p = self.predict_dataset(model, v, name)
                st = self._stats(v, *p["heatmaps"], p["gt"], p["image_id"])
                out.update({f"{k}_{name}": x for k, x in st.items()})
                aps.append(st["AP"])
            out["AP"] = float(np.mean(aps))
            return out
        finally:
            model.train(was_training)


# ------------------------------------------------------------------------------------------------ synthetic data
#: the easy synthetic setting of the top-down training tests and benchmarks (see docs/training-topdown.md)
EASY_SYNTH = dict(size=(128, 128), max_people=1, min_people=1, crowd_prob=0.0, occluder_prob=0.0, small_prob=0.0,
                  views="front", inside=True, background="plain", head_range=(11.0, 14.0))


def make_synthetic_splits(out_dir, num_train: int = 400, num_val: int = 40, seed: int = 0, schema: str = "coco17",
                          **render_kwargs) -> dict:
    """An easy synthetic train/val pair for top-down training: ``out_dir/train`` (seed ``seed``) and
    ``out_dir/val`` (seed ``seed + 1000``) written by :func:`posekit.data.synthetic.make_synthetic_dataset` with
    :data:`EASY_SYNTH` (one front-facing person per 128x128 image, plain background, nothing occluding, the
    whole person inside the image), updated by ``render_kwargs``; ``schema`` e.g. ``"mpii16"``.

    Returns:
        ``{"train_ann", "train_images", "val_ann", "val_images"}`` paths (str), for ``cfg.data`` or
        ``data.options.datasets``.
    """
    from pathlib import Path

    from posekit.data.synthetic import make_synthetic_dataset

    out = Path(out_dir)
    kw = {**EASY_SYNTH, **render_kwargs}
    train = make_synthetic_dataset(out / "train", num_train, seed=seed, schema=schema, **kw)
    val = make_synthetic_dataset(out / "val", num_val, seed=seed + 1000, schema=schema, **kw)
    return {"train_ann": str(train), "train_images": str(out / "train" / "images"),
            "val_ann": str(val), "val_images": str(out / "val" / "images")}
