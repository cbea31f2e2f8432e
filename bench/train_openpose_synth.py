"""Longer OpenPose-light training run on easy synthetic data, printing COCO AP on held-out images as it goes.

    python bench/train_openpose_synth.py [--out runs/openpose-synth] [--steps 2000] [--train-images 2000]
        [--val-images 50] [--size 128x192] [--views front|all] [--background plain|textured] [--seed 0]
        [--threads 2] [--eval-every 4] [--export]

Makes the data with :func:`posekit.training.tasks.openpose.make_synthetic_splits` and the arguments of
:data:`~posekit.training.tasks.openpose.SYNTH_EASY` (head heights scaled with the image height; ``--views all`` and
``--background textured`` give harder sets), reused when ``OUT/data`` already holds it (delete it after changing
the data arguments). Loads ``configs/openpose-light-synth.yaml``, points it at the data, trains ``--steps`` steps
with the posekit engine (evaluating every ``--eval-every`` epochs), and prints the AP table, the time and the
images/s. ``--export`` writes ``OUT/openpose-light-synth.onnx`` + its model card from the last checkpoint and checks
that ``PoseEstimator`` on it finds the same people as the PyTorch pipeline on the validation images.

The default-suite test (``tests/test_openpose_training.py``) is the short version: 800 images, 600 steps.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from posekit.training.config import load_config
from posekit.training.tasks.openpose import SYNTH_EASY, make_synthetic_splits, synth_easy
from posekit.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/openpose-synth")
    ap.add_argument("--config", default=str(ROOT / "configs" / "openpose-light-synth.yaml"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--train-images", type=int, default=2000)
    ap.add_argument("--val-images", type=int, default=50)
    ap.add_argument("--size", type=_size, default=SYNTH_EASY["size"], help="WxH (default 128x192)")
    ap.add_argument("--views", default=SYNTH_EASY["views"], choices=("front", "all"))
    ap.add_argument("--background", default=SYNTH_EASY["background"], choices=("plain", "textured"))
    ap.add_argument("--seed", type=int, default=0, help="data seed (the training seed is the config's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=4, help="evaluate every N epochs")
    ap.add_argument("--export", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    data_dir = out / "data"
    w, h = args.size
    synth = {**synth_easy((w, h)), "views": args.views, "background": args.background}
    t0 = time.perf_counter()
    if (data_dir / "val" / "person_keypoints_inside.json").is_file():
        paths = {"train_ann": str(data_dir / "train" / "person_keypoints.json"),
                 "train_images": str(data_dir / "train" / "images"),
                 "val_ann": str(data_dir / "val" / "person_keypoints_inside.json"),
                 "val_images": str(data_dir / "val" / "images")}
        print(f"reusing the data in {data_dir}")
    else:
        paths = make_synthetic_splits(data_dir, args.train_images, args.val_images, seed=args.seed, **synth)
        print(f"data in {data_dir} ({time.perf_counter() - t0:.1f} s)")
    overrides = [f"data.{k}={v}" for k, v in paths.items()] + [
        f"data.input_size=[{w}, {h}]", f"max_steps={args.steps}", f"eval.every_epochs={args.eval_every}",
        f"out_dir={out / 'run'}"]
    cfg = load_config(args.config, overrides)
    t0 = time.perf_counter()
    res = train(cfg)
    dt = time.perf_counter() - t0
    print(f"trained {res['step']} steps in {dt:.0f} s ({res['step'] * cfg.batch_size / dt:.1f} images/s incl. "
          f"evaluation); best {res['best']}")
    log = Path(res["out_dir"]) / "scalars.csv"
    if log.is_file():
        print(" step  AP     AP50   AR")
        by_step: dict = {}
        for r in csv.DictReader(log.open()):
            if r.get("tag") in ("val/AP", "val/AP50", "val/AR"):
                by_step.setdefault(int(r["step"]), {})[r["tag"]] = float(r["value"])
        for s in sorted(by_step):
            v = by_step[s]
            print(f"{s:5d}  {v.get('val/AP', float('nan')):.3f}  {v.get('val/AP50', float('nan')):.3f}  "
                  f"{v.get('val/AR', float('nan')):.3f}")
    if args.export:
        from posekit.data.io import read_image
        from posekit.export.onnx import export_openpose_onnx
        from posekit.models.checkpoints import load_openpose_checkpoint
        from posekit.pipelines.bottomup import torch_paf_pipeline
        from posekit.pipelines.estimator import PoseEstimator
        from posekit.training.tasks.openpose import eval_params_for

        model = load_openpose_checkpoint(cfg.model.name, res["last_checkpoint"])
        params = eval_params_for(cfg.data.input_size, cfg.task_options.get("paf_params"))
        onnx_path, card = export_openpose_onnx(model, out / "openpose-light-synth.onnx",
                                               input_size=tuple(cfg.data.input_size), params=params)
        est, ref = PoseEstimator(str(card)), torch_paf_pipeline(model, params)
        images = sorted(Path(paths["val_images"]).glob("*.jpg"))[:20]
        same = sum(len(est(img)) == len(ref(img)) for img in map(read_image, images))
        print(f"exported {onnx_path} + {card}; same number of people from ONNX and PyTorch on {same}/{len(images)} "
              f"images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
