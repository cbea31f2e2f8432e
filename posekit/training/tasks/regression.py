"""``regression``: a tiny top-down network that regresses keypoint coordinates from person crops.

It is the engine's own test task (small, fast on a CPU, no BatchNorm by default so that multi-process and
single-process training agree to float precision), and a minimal example of a :class:`TrainTask`.

* Data: ``CocoPoseDataset(mode="topdown")`` person crops of ``data.input_size = [w, h]``
  (``data.options.augment``: random flip + box jitter, default true).
* Model (``model.name``: ``"tiny"`` or empty; ``model.overrides``: ``width`` (16), ``norm`` (``none``,
  ``gn`` or ``bn``), ``dropout`` (0.0)): three stride-2 3x3 conv blocks, then a linear layer to ``K * 2``
  coordinates in crop units (0..1 of the input width/height).
* Loss: L1 over labelled keypoints (``v > 0``), divided by ``batch * K * 2`` (a per-sample normaliser).
* Evaluation: predictions on ground-truth boxes mapped back to image pixels, COCO keypoint AP against
  ``data.val_ann`` (every keypoint score 1, person score 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from posekit.training.tasks.base import TrainTask

__all__ = ["TinyRegressor", "RegressionTask"]


class TinyRegressor(nn.Module):
    """``(B, 3, H, W)`` float image in ``[-0.5, 0.5]`` -> ``(B, K, 2)`` keypoint ``x / W, y / H`` in the crop."""

    def __init__(self, num_keypoints: int = 17, input_size=(32, 32), width: int = 16, norm: str = "none",
                 dropout: float = 0.0):
        super().__init__()
        if norm not in ("none", "gn", "bn"):
            raise ValueError(f"model.overrides.norm must be 'none', 'gn' or 'bn', got {norm!r}")
        w, h = (int(v) for v in input_size)
        if w % 8 or h % 8:
            raise ValueError(f"data.input_size must be multiples of 8 for the tiny regressor, got {[w, h]}")
        layers: list[nn.Module] = []
        cin = 3
        for cout in (width, 2 * width, 4 * width):
            layers.append(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=norm == "none"))
            if norm == "gn":
                layers.append(nn.GroupNorm(4 if cout % 4 == 0 else 1, cout))
            elif norm == "bn":
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin * (w // 8) * (h // 8), num_keypoints * 2)
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)
        self.num_keypoints = num_keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x).flatten(1)
        return 0.5 + self.head(self.dropout(f)).view(x.shape[0], self.num_keypoints, 2)


class RegressionTask(TrainTask):
    name = "regression"

    def __init__(self) -> None:
        self.input_size = (32, 32)
        self.num_keypoints = 17

    # ------------------------------------------------------------------ data
    def build_datasets(self, cfg) -> tuple[Any, Any]:
        from posekit.data.coco import CocoPoseDataset
        from posekit.data.transforms import Compose, RandomBBoxTransform, RandomFlip, TopDownAffine

        self.input_size = tuple(int(v) for v in cfg.data.input_size)
        opts = dict(cfg.data.options)
        augment = bool(opts.pop("augment", True))
        if opts:
            raise ValueError(f"unknown data.options key(s) for task 'regression': {sorted(opts)} (known: augment)")
        if not cfg.data.train_ann:
            raise ValueError("task 'regression' needs data.train_ann and data.train_images")
        probe = CocoPoseDataset(cfg.data.train_ann, cfg.data.train_images, mode="topdown", seed=cfg.seed)
        steps = [TopDownAffine(self.input_size)]
        if augment:
            steps = [RandomFlip(probe.schema, 0.5), RandomBBoxTransform(rot_factor=30.0)] + steps
        probe.transform = Compose(steps)
        self.num_keypoints = probe.schema.num_keypoints
        val = None
        if cfg.data.val_ann:
            val = CocoPoseDataset(cfg.data.val_ann, cfg.data.val_images, mode="topdown", seed=cfg.seed,
                                  transform=TopDownAffine(self.input_size))
        return probe, val

    def collate(self, samples: list[dict]) -> dict:
        w, h = self.input_size
        images = np.stack([s["image"] for s in samples])  # (B, H, W, 3) uint8
        kps = np.stack([s["keypoints"][0] for s in samples]).astype(np.float32)  # (B, K, 3) crop pixels
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5)
        target = torch.from_numpy(kps[..., :2] / np.array([w, h], np.float32))
        weight = torch.from_numpy((kps[..., 2] > 0).astype(np.float32))
        return {
            "image": x.contiguous(),
            "target": target,
            "weight": weight,
            "warp": torch.from_numpy(np.stack([np.asarray(s["warp"], np.float64) for s in samples])),
            "image_id": torch.tensor([int(s["image_id"]) for s in samples]),
        }

    # ------------------------------------------------------------------ model and loss
    def build_model(self, cfg) -> nn.Module:
        if cfg.model.name not in ("", "tiny"):
            raise ValueError(f"model.name for task 'regression' must be 'tiny', got {cfg.model.name!r}")
        kw = dict(cfg.model.overrides)
        unknown = set(kw) - {"width", "norm", "dropout"}
        if unknown:
            raise ValueError(f"unknown model.overrides key(s) for 'tiny': {sorted(unknown)} "
                             f"(known: width, norm, dropout)")
        return TinyRegressor(self.num_keypoints, tuple(cfg.data.input_size), **kw)

    def compute_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        pred = model(batch["image"])
        err = (pred.float() - batch["target"]).abs() * batch["weight"][..., None]
        b, k, _ = pred.shape
        loss = err.sum() / (b * k * 2)
        return loss, {"l1": float(loss.detach())}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, val) -> dict[str, float]:
        from posekit.data.geometry import apply_affine, invert_affine
        from posekit.evaluation.coco import evaluate_coco_keypoints

        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        w, h = self.input_size
        results = []
        cat_id = int((val.index.category or {}).get("id", 1))
        n = len(val)
        for start in range(0, n, 32):
            batch = self.collate([val[i] for i in range(start, min(n, start + 32))])
            pred = model(batch["image"].to(device)).float().cpu().numpy() * np.array([w, h], np.float32)
            for p, warp, iid in zip(pred, batch["warp"].numpy(), batch["image_id"].tolist()):
                xy = apply_affine(p.astype(np.float64), invert_affine(warp))
                kp = np.concatenate([xy, np.ones((len(xy), 1))], axis=1)
                results.append({"image_id": int(iid), "category_id": cat_id, "keypoints": kp.ravel().tolist(),
                                "score": 1.0})
        model.train(was_training)
        stats = evaluate_coco_keypoints(str(val.index.file), results)
        return {k: float(v) for k, v in stats.items()}
