"""``openpose``: bottom-up OpenPose training (confidence maps + part affinity fields, masked stage L2).

* Data: ``CocoPoseDataset(mode="bottomup")`` images (COCO-17 or OpenPose-18 keypoints) warped into
  ``data.input_size = [w, h]`` by :class:`~posekit.data.transforms.RandomAffine` (the whole image fits the input at
  zoom 1); with ``augment`` also a random flip, zoom, rotation and shift, and optional colour jitter. Targets come
  from :class:`~posekit.codecs.paf.PafCodec` (``sigma``, ``limb_width`` in input pixels), computed in ``collate``
  (so in the data-loader workers); crowd regions and unannotated people are masked out of the loss.
* Model: ``build_model(model.name, **model.overrides)`` (default ``openpose-light``); the input is BGR
  normalised with the model's ``mean``/``std`` (``(x - 128) / 256``).
* Loss: :class:`~posekit.losses.OpenPoseLoss` with ``reduction="batch"``: the per-image sum over stages, channels
  and map cells of ``W (pred - target)^2``, averaged over the images of the batch (a per-sample normaliser).
* Evaluation: every image of the validation file through :func:`posekit.pipelines.bottomup.torch_paf_pipeline` (the
  PyTorch model in the same :class:`~posekit.pipelines.bottomup.PafPipeline` as exported ONNX models), people in
  image pixels, COCO keypoint AP against ``data.val_ann``.

``data.options`` (all optional): ``augment`` (true), ``flip_prob`` (0.5), ``scale_range`` ([0.75, 1.25]),
``max_rotation`` (15 degrees), ``max_translate`` (0.1), ``color_jitter`` (0.0: the brightness/contrast/saturation
strength), ``sigma`` (7 * sqrt(2) px), ``limb_width`` (the stride), ``min_keypoints`` (1).

``task_options`` (all optional): ``paf_params``: :class:`~posekit.association.params.PafParams` fields for the
evaluation (defaults: :data:`DEFAULT_EVAL_PARAMS`, images resized to the input height keeping the aspect).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from posekit.association.params import DEFAULT_EVAL_PARAMS, PafParams
from posekit.training.tasks.base import TrainTask, merge_data_options

__all__ = ["OpenPoseTask", "DEFAULT_EVAL_PARAMS", "SYNTH_EASY", "synth_easy", "eval_params_for", "make_synthetic_splits"]

#: :func:`make_synthetic_splits` arguments of the easy set that the light model learns in a few CPU minutes
#: (``configs/openpose-light-synth.yaml``, ``tests/test_openpose_training.py``): 128x192 (w x h) images with one
#: person facing the camera (no left/right ambiguity), heads of 17.5..21.8 px (a standing figure fills most of the
#: height: the OKS tolerance grows with the person, the stride-8 map does not), always fully inside the image, on a
#: plain gradient background.
SYNTH_EASY: dict = {
    "size": (128, 192),
    "min_people": 1,
    "max_people": 1,
    "min_head_px": 8.0,
    "head_range": (192 / 11, 192 / 8.8),
    "views": "front",
    "inside": True,
    "background": "plain",
}



def synth_easy(size=(128, 192)) -> dict:
    """:data:`SYNTH_EASY` for images of ``size = (w, h)``: the head heights (``head_range``, ``min_head_px``) scale
    with the image height, so the figures fill the image as they do at 128x192."""
    w, h = (int(v) for v in size)
    f = h / SYNTH_EASY["size"][1]
    return {**SYNTH_EASY, "size": (w, h), "min_head_px": SYNTH_EASY["min_head_px"] * f,
            "head_range": tuple(v * f for v in SYNTH_EASY["head_range"])}


_DATA_OPTIONS = {
    "augment": True,
    "flip_prob": 0.5,
    "scale_range": (0.75, 1.25),
    "max_rotation": 15.0,
    "max_translate": 0.1,
    "color_jitter": 0.0,
    "sigma": 7.0 * math.sqrt(2.0),
    "limb_width": None,
    "min_keypoints": 1,
}


def eval_params_for(input_size, paf_params: dict | None = None):
    """:class:`~posekit.association.params.PafParams` for evaluation at ``input_size = (w, h)``: images resized to
    height ``h`` (aspect kept, width a multiple of 8), :data:`DEFAULT_EVAL_PARAMS` updated by ``paf_params``."""
    p = {"input_mode": "keep_aspect", "target_height": int(input_size[1]), "size_multiple": 8,
         **DEFAULT_EVAL_PARAMS, **dict(paf_params or {})}
    return PafParams.from_dict(p, "task_options.paf_params")


class OpenPoseTask(TrainTask):
    name = "openpose"

    def __init__(self) -> None:
        self.input_size = (192, 192)
        self.options = dict(_DATA_OPTIONS)
        self.codec = None
        self.mean = np.full(3, 128.0, np.float32)
        self.std = np.full(3, 256.0, np.float32)
        self.paf_params: dict = {}

    # ------------------------------------------------------------------ data
    def _options(self, cfg) -> dict:
        out = merge_data_options("openpose", dict(cfg.data.options), _DATA_OPTIONS)
        if not out["sigma"] > 0:
            raise ValueError(f"data.options.sigma must be > 0, got {out['sigma']!r}")
        return out

    def build_datasets(self, cfg) -> tuple[Any, Any]:
        from posekit.codecs.paf import PafCodec
        from posekit.data.coco import CocoPoseDataset
        from posekit.data.transforms import ColorJitter, Compose, RandomAffine, RandomFlip

        if not cfg.data.train_ann or not cfg.data.train_images:
            raise ValueError("task 'openpose' needs data.train_ann and data.train_images")
        self.input_size = tuple(int(v) for v in cfg.data.input_size)
        o = self.options = self._options(cfg)
        topts = dict(cfg.task_options)
        unknown = set(topts) - {"paf_params"}
        if unknown:
            raise ValueError(f"unknown task_options key(s) for task 'openpose': {sorted(unknown)} (known: paf_params)")
        self.paf_params = dict(topts.get("paf_params") or {})
        eval_params_for(self.input_size, self.paf_params)  # fail early on a bad field
        self.codec = PafCodec(sigma=float(o["sigma"]),
                              limb_width=None if o["limb_width"] is None else float(o["limb_width"]))
        train = CocoPoseDataset(cfg.data.train_ann, cfg.data.train_images, mode="bottomup", seed=cfg.seed,
                                min_keypoints=int(o["min_keypoints"]))
        if train.schema.num_keypoints not in (17, 18):
            raise ValueError(f"{cfg.data.train_ann}: task 'openpose' trains COCO-17 or OpenPose-18 keypoints, the "
                             f"file has {train.schema.num_keypoints} ({train.schema.name})")
        if o["augment"]:
            steps = [RandomFlip(train.schema, float(o["flip_prob"])),
                     RandomAffine(scale_range=o["scale_range"], max_rotation=float(o["max_rotation"]),
                                  max_translate=float(o["max_translate"]), output_size=self.input_size,
                                  border_value=128)]
            if o["color_jitter"]:
                j = float(o["color_jitter"])
                steps.append(ColorJitter(brightness=j, contrast=j, saturation=j))
        else:  # the whole image fitted into the input, no randomness
            steps = [RandomAffine(scale_range=(1.0, 1.0), max_rotation=0.0, max_translate=0.0,
                                  output_size=self.input_size, border_value=128)]
        train.transform = Compose(steps)
        val = None
        if cfg.data.val_ann:
            val = CocoPoseDataset(cfg.data.val_ann, cfg.data.val_images, mode="bottomup", seed=cfg.seed,
                                  keep_empty_images=True)
        return train, val

    def collate(self, samples: list[dict]) -> dict:
        if self.codec is None:
            raise RuntimeError("OpenPoseTask.collate called before build_datasets")
        from posekit.data.batch import images_to_nchw

        mean = np.broadcast_to(np.asarray(self.mean, np.float32).reshape(-1), (3,))
        std = np.broadcast_to(np.asarray(self.std, np.float32).reshape(-1), (3,))
        x = images_to_nchw([s["image"] for s in samples], mean, std)  # BGR in, BGR out
        targets = [self.codec.encode(s) for s in samples]
        out = {"image": torch.from_numpy(x)}
        for k in ("heatmaps", "pafs", "mask"):
            out[k] = torch.from_numpy(np.stack([t[k] for t in targets]))
        return out

    def batch_size_of(self, batch: Any) -> int | None:
        return int(batch["image"].shape[0])

    # ------------------------------------------------------------------ model and loss
    def build_model(self, cfg) -> nn.Module:
        from posekit.models.presets import build_model

        name = cfg.model.name or "openpose-light"
        model = build_model(name, **dict(cfg.model.overrides))
        if getattr(model, "kind", None) != "bottomup" or not hasattr(model, "codec"):
            raise ValueError(f"model.name {name!r} is not an OpenPose (bottom-up PAF) model")
        if self.codec is not None:
            c, m = self.codec, model.codec
            if (c.stride, c.num_heatmaps, c.num_pafs) != (m.stride, m.num_heatmaps, m.num_pafs):
                raise ValueError(f"model {name!r} outputs stride {m.stride}, {m.num_heatmaps} confidence / "
                                 f"{m.num_pafs} PAF channels; the targets have {c.stride}, {c.num_heatmaps} / "
                                 f"{c.num_pafs}")
        self.mean = np.asarray(model.mean, np.float32)
        self.std = np.asarray(model.std, np.float32)
        return model

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        from posekit.losses import openpose_loss

        raw = model(batch["image"])
        out = openpose_loss(raw["stage_pafs"], raw["stage_heatmaps"], batch["pafs"], batch["heatmaps"],
                            batch.get("mask"), "batch")
        scalars = {"loss_paf": float(out["loss_paf"].detach()), "loss_heatmap": float(out["loss_heatmap"].detach())}
        return out["loss"], scalars

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, model: nn.Module, val) -> dict[int, list]:
        """``{image_id: [Person, ...]}`` for every image of ``val`` (a ``CocoPoseDataset``), image pixels."""
        from posekit.data.io import read_image
        from posekit.pipelines.bottomup import torch_paf_pipeline

        pipe = torch_paf_pipeline(model, eval_params_for(self.input_size, self.paf_params))
        index = val.index
        return {int(iid): pipe(read_image(index.image_path(iid))) for iid in index.image_ids}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, val) -> dict[str, float]:
        import warnings

        from posekit.evaluation.coco import evaluate_coco_keypoints
        from posekit.evaluation.results import people_to_results

        was_training = model.training
        model.eval()
        try:
            people = self.predict(model, val)
        finally:
            model.train(was_training)
        cat_id = int((val.index.category or {}).get("id", 1))
        results = people_to_results(people, category_id=cat_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no results" before training: all stats 0
            stats = evaluate_coco_keypoints(str(val.index.file), results, image_ids=list(people))
        out = {k: float(v) for k, v in stats.items()}
        out["num_people"] = float(len(results))
        return out


# ------------------------------------------------------------------------------------------------ synthetic data
def make_synthetic_splits(out_dir, num_train: int = 300, num_val: int = 30, size=(160, 160), seed: int = 0,
                          min_people: int = 1, max_people: int = 1, min_head_px: float = 12.0,
                          occluder_prob: float = 0.0, small_prob: float = 0.0, crowd_prob: float = 0.0,
                          val_inside_only: bool = True, views: str = "all", head_range=None, inside: bool = False,
                          background: str = "textured") -> dict:
    """An easy synthetic train/val pair for OpenPose training tests and benchmarks.

    ``out_dir/train`` and ``out_dir/val`` are written by :func:`posekit.data.synthetic.make_synthetic_dataset`
    (seeds ``seed`` and ``seed + 1``; ``min_head_px`` sets the smallest annotated person, the largest has a head of
    ``h / 6.8``, unless ``head_range = (lo, hi)`` px is given). ``views`` (``"all"``/``"front"``), ``inside`` (every
    person placed fully inside the image) and ``background`` (``"textured"``/``"plain"``) go to
    :func:`posekit.data.synthetic.render_image`; :data:`SYNTH_EASY` is the easy set of the training test. With
    ``val_inside_only`` the validation file ``val/person_keypoints_inside.json`` keeps the first ``num_val`` images
    whose annotated people have every keypoint inside the image (a person cut by the border loses its neck, which
    splits it in OpenPose's tree); up to ``8 * num_val`` images are rendered to find them.

    Returns:
        ``{"train_ann", "train_images", "val_ann", "val_images"}`` paths (str), for ``cfg.data``.
    """
    import json
    from pathlib import Path

    from posekit.data.synthetic import make_synthetic_dataset

    out = Path(out_dir)
    kw = dict(size=tuple(size), min_people=min_people, max_people=max_people, min_head_px=min_head_px,
              occluder_prob=occluder_prob, small_prob=small_prob, crowd_prob=crowd_prob, views=views,
              head_range=None if head_range is None else tuple(head_range), inside=inside, background=background)
    train_json = make_synthetic_dataset(out / "train", num_train, seed=seed, **kw)
    n_render = 8 * num_val if val_inside_only else num_val
    val_json = make_synthetic_dataset(out / "val", n_render, seed=seed + 1, **kw)
    if val_inside_only:
        data = json.loads(val_json.read_text())
        cut = {a["image_id"] for a in data["annotations"]
               if a["num_keypoints"] > 0 and min(a["keypoints"][2::3]) == 0}
        images = [im for im in data["images"] if im["id"] not in cut][:num_val]
        if len(images) < num_val:
            raise ValueError(f"only {len(images)} of {n_render} synthetic images have every person inside the image; "
                             f"use smaller people (min_head_px) or fewer validation images")
        keep = {im["id"] for im in images}
        data["images"] = images
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        val_json = out / "val" / "person_keypoints_inside.json"
        val_json.write_text(json.dumps(data, separators=(",", ":")))
    return {"train_ann": str(train_json), "train_images": str(out / "train" / "images"),
            "val_ann": str(val_json), "val_images": str(out / "val" / "images")}
