"""Longer top-down training runs on easy synthetic data: COCO AP on held-out crops before and after, per family.

    python bench/train_topdown_synth.py [--family all|simplebaseline|vitpose|rtmpose|cpm|hourglass|cpn|vitpose-multi]
        [--steps N] [--train-images 1000] [--val-images 60] [--seeds 0] [--threads 1] [--out runs/topdown-synth]

For each family it loads ``configs/topdown-<family>-synth.yaml``, points it at data made by
:func:`posekit.training.tasks.topdown.make_synthetic_splits` (one front-facing person per 128x128 image, plain
background, no occluders; reused when present: delete ``OUT/data*`` after changing the data arguments), trains
with the posekit engine and prints one row per run: AP before / after, AP50, the mean keypoint error in
model-input pixels, the wall time and images/s. CPN rows also give GlobalNet's finest level (``global_AP``);
``vitpose-multi`` trains one backbone with a COCO-17 and an MPII-16 decoder and prints both APs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from posekit.training.config import load_config
from posekit.training.tasks.topdown import TopDownTask, make_synthetic_splits
from posekit.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("simplebaseline", "vitpose", "rtmpose", "cpm", "hourglass", "cpn")


def _splits(out: Path, name: str, n_train: int, n_val: int, seed: int, schema: str) -> dict:
    d = out / name
    if (d / "val" / "person_keypoints.json").is_file():
        return {"train_ann": str(d / "train" / "person_keypoints.json"), "train_images": str(d / "train" / "images"),
                "val_ann": str(d / "val" / "person_keypoints.json"), "val_images": str(d / "val" / "images")}
    return make_synthetic_splits(d, n_train, n_val, seed=seed, schema=schema)


def run(family: str, args, seed: int) -> dict:
    out = Path(args.out)
    coco = _splits(out, "data", args.train_images, args.val_images, 0, "coco17")
    cfg = load_config(ROOT / "configs" / f"topdown-{family}-synth.yaml")
    if family == "vitpose-multi":
        mpii = _splits(out, "data-mpii", args.train_images, args.val_images, 7, "mpii16")
        cfg.data.options["datasets"] = {"coco": coco, "mpii": mpii}
    else:
        for k, v in coco.items():
            setattr(cfg.data, k, v)
    cfg.max_steps = args.steps or cfg.max_steps  # default: the light configuration's own length
    cfg.seed, cfg.progress = seed, False
    cfg.eval.every_epochs = 1000  # once, at the end
    cfg.out_dir = str(out / f"{family}-seed{seed}")
    task = TopDownTask()
    _, val = task.build_datasets(cfg)
    torch.manual_seed(seed)
    before = task.evaluate(task.build_model(cfg), val)
    t0 = time.perf_counter()
    res = train(cfg, task=task)
    dt = time.perf_counter() - t0
    return {"before": before, "after": res["last_eval"], "time": dt, "ips": res["step"] * cfg.batch_size / dt}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="all")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the config's max_steps)")
    ap.add_argument("--train-images", type=int, default=1000)
    ap.add_argument("--val-images", type=int, default=60)
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: two spin-wait on a shared 2-core CPU)")
    ap.add_argument("--out", default="runs/topdown-synth")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fams = FAMILIES if args.family == "all" else tuple(args.family.split(","))
    print("family          seed  AP before  AP after  AP50   kpt err px  time s  img/s  extra")
    for fam in fams:
        for seed in (int(s) for s in args.seeds.split(",")):
            r = run(fam, args, seed)
            b, a = r["before"], r["after"]
            extra = ""
            if "global_AP" in a:
                extra = f"GlobalNet AP {a['global_AP']:.3f} err {a['global_kpt_err']:.2f}"
            if "AP_coco" in a:
                extra = f"coco {b['AP_coco']:.3f}->{a['AP_coco']:.3f} mpii {b['AP_mpii']:.3f}->{a['AP_mpii']:.3f}"
            ap50 = a.get("AP50", a.get("AP50_coco", float("nan")))
            err = a.get("kpt_err", a.get("kpt_err_coco", float("nan")))
            print(f"{fam:15s} {seed:4d}  {b['AP']:9.3f}  {a['AP']:8.3f}  {ap50:.3f}  {err:10.2f}  {r['time']:6.0f}  "
                  f"{r['ips']:5.1f}  {extra}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
