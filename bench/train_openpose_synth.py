"""Longer OpenPose-light training run on synthetic data, printing COCO AP on held-out images per epoch.

    python bench/train_openpose_synth.py [--out runs/openpose-synth] [--epochs 120] [--train-images 1000]
        [--size 160] [--max-people 2] [--threads 2] [--export]

Makes the data with :func:`posekit.training.tasks.openpose.make_synthetic_splits` (skipped when it is already
there), loads ``configs/openpose-light-synth.yaml``, points it at the data, and trains with the posekit engine
(``eval.every_epochs`` = 1, so the engine logs AP after every epoch; this script prints them as a table at the
end). ``--export`` writes ``OUT/openpose-light-synth.onnx`` + its model card from ``best.pt`` and checks
``PoseEstimator`` on it.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from posekit.training.config import load_config
from posekit.training.tasks.openpose import make_synthetic_splits
from posekit.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/openpose-synth")
    ap.add_argument("--config", default=str(ROOT / "configs" / "openpose-light-synth.yaml"))
    ap.add_argument("--epochs", type=int, default=120)
    ap.add_argument("--train-images", type=int, default=1000)
    ap.add_argument("--val-images", type=int, default=40)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--min-people", type=int, default=1)
    ap.add_argument("--max-people", type=int, default=2)
    ap.add_argument("--min-head", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--export", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    data_dir = out / "data"  # reused when present: delete it after changing the data arguments
    t0 = time.perf_counter()
    if (data_dir / "val" / "person_keypoints_inside.json").is_file():
        paths = {"train_ann": str(data_dir / "train" / "person_keypoints.json"),
                 "train_images": str(data_dir / "train" / "images"),
                 "val_ann": str(data_dir / "val" / "person_keypoints_inside.json"),
                 "val_images": str(data_dir / "val" / "images")}
    else:
        paths = make_synthetic_splits(data_dir, args.train_images, args.val_images, (args.size, args.size),
                                      seed=args.seed, min_people=args.min_people, max_people=args.max_people,
                                      min_head_px=args.min_head)
    print(f"data in {data_dir} ({time.perf_counter() - t0:.1f} s)")
    overrides = [f"data.{k}={v}" for k, v in paths.items()] + [
        f"data.input_size=[{args.size}, {args.size}]", f"epochs={args.epochs}", "eval.every_epochs=1",
        f"out_dir={out / 'run'}", f"seed={args.seed}"]
    cfg = load_config(args.config, overrides)
    t0 = time.perf_counter()
    res = train(cfg)
    print(f"trained {res['step']} steps in {time.perf_counter() - t0:.0f} s; best {res['best']}")
    log = Path(res["out_dir"]) / "scalars.csv"
    if log.is_file():
        print("epoch  AP     AP50   AR")
        rows = list(csv.DictReader(log.open()))
        by_epoch: dict = {}
        for r in rows:
            if r.get("tag") in ("val/AP", "val/AP50", "val/AR"):
                by_epoch.setdefault(int(float(r["epoch"])), {})[r["tag"]] = float(r["value"])
        for e in sorted(by_epoch):
            v = by_epoch[e]
            print(f"{e + 1:5d}  {v.get('val/AP', float('nan')):.3f}  {v.get('val/AP50', float('nan')):.3f}  "
                  f"{v.get('val/AR', float('nan')):.3f}")
    if args.export:
        from posekit.export.onnx import export_openpose_onnx, load_openpose_checkpoint
        from posekit.training.tasks.openpose import eval_params_for

        ckpt = Path(res["out_dir"]) / "best.pt"
        model = load_openpose_checkpoint(cfg.model.name, ckpt if ckpt.is_file() else res["last_checkpoint"])
        onnx_path, card = export_openpose_onnx(model, out / "openpose-light-synth.onnx",
                                               input_size=tuple(cfg.data.input_size),
                                               params=eval_params_for(cfg.data.input_size))
        print(f"exported {onnx_path} + {card}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
