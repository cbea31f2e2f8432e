"""Train the reduced-width RTMO of ``configs/rtmo-nano-synth.yaml`` on easy synthetic people (CPU) and report held-out
COCO AP before/after, the MLE loss, the predicted DCC sigma and the training-positive diagnostics.

    python bench/train_rtmo_synth.py                                   # the recipe of the config (one thread)
    python bench/train_rtmo_synth.py --scratch                         # the same network, backbone from scratch
    python bench/train_rtmo_synth.py --steps 1000 --set optim.lr=2e-3  # any config override

The recipe starts the backbone from the YOLOX-nano person detector in ``../shared/weights`` (found beside the
repository root, whatever the working directory).

The data are :data:`posekit.training.tasks.openpose.SYNTH_EASY` (the easy set on which OpenPose-light reaches
held-out AP 0.68): 128x192 images, one front-facing person filling most of the height, plain background;
``--train`` training images (data seed ``--seed``) and 30 held-out images (seed + 1) never trained on.
Nothing is asserted here (tests/test_rtmo_training.py holds the bar); measured numbers are in docs/rtmo.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "rtmo-nano-synth.yaml"
#: the detector whose backbone the recipe starts from (``task_options.backbone_onnx``, resolved here from the root)
BACKBONE_ONNX = ROOT.parent / "shared" / "weights" / "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx"

def series(out_dir, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of one logged scalar of a run."""
    from posekit.training.logging import read_csv_scalars

    rows = read_csv_scalars(Path(out_dir) / "scalars.csv")
    return [(int(r["step"]), float(r["value"])) for r in rows if r["tag"] == tag]


def make_data(out_dir, num_train: int = 800, num_val: int = 30, seed: int = 12) -> dict:
    """The easy synthetic train/val split (``SYNTH_EASY``); returns the ``cfg.data`` paths."""
    from posekit.training.tasks.openpose import SYNTH_EASY, make_synthetic_splits

    return make_synthetic_splits(out_dir, num_train=num_train, num_val=num_val, seed=seed, **SYNTH_EASY)


def recipe_config(data: dict, out_dir, overrides=(), scratch: bool = False):
    """``configs/rtmo-nano-synth.yaml`` with the data paths, the output folder, the detector backbone at
    :data:`BACKBONE_ONNX` (none with ``scratch``) and ``key=value`` overrides."""
    from posekit.training.config import load_config

    return load_config(CONFIG, [f"data.{k}={v}" for k, v in data.items()]
                       + [f"out_dir={out_dir}", "progress=false", "checkpoint.save_best=false",
                          "eval.every_epochs=1000", f"task_options.backbone_onnx={'' if scratch else BACKBONE_ONNX}"]
                       + list(overrides))


def run_recipe(data: dict, out_dir, overrides=(), scratch: bool = False) -> dict:
    """Train the recipe; returns AP before/after, the step count, the time and the logged series."""
    from posekit.training.tasks.rtmo import RTMOTask
    from posekit.training.trainer import train

    cfg = recipe_config(data, out_dir, overrides, scratch)
    task = RTMOTask()
    _, val = task.build_datasets(cfg)
    torch.manual_seed(cfg.seed)
    before = task.evaluate(task.build_model(cfg), val)
    t0 = time.perf_counter()
    res = train(cfg, task=RTMOTask())
    tags = ("loss_mle", "sigma_easy", "oks_dcc", "oks_reg", "iou", "score_pos")
    return {"before": before, "after": res["last_eval"], "steps": res["step"], "seconds": time.perf_counter() - t0,
            "num_val": len(val.index.image_ids), **{t: series(cfg.out_dir, f"train/{t}") for t in tags}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/rtmo-synth")
    ap.add_argument("--train", type=int, default=800)
    ap.add_argument("--seed", type=int, default=12, help="data seed (validation: seed + 1)")
    ap.add_argument("--steps", type=int, default=0, help="max_steps (0: the config's)")
    ap.add_argument("--scratch", action="store_true", help="no detector backbone: every weight from scratch")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; on a shared 2-core machine 1 is several times faster than 2")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = make_data(out / "data", num_train=args.train, seed=args.seed)
    over = list(args.set) + ([f"max_steps={args.steps}"] if args.steps else [])
    r = run_recipe(data, out / "run", over, args.scratch)

    def mean(s, sl):
        return float(np.mean([v for _, v in s[sl]])) if s else float("nan")

    for (s, m), (_, g) in zip(r["loss_mle"][::10], r["sigma_easy"][::10]):
        print(f"step {s:5d}  mle {m:7.3f}  sigma_easy {g:.4f}")
    b, a = r["before"], r["after"]
    print(f"RTMO nano synthetic{' (from scratch)' if args.scratch else ''}: {r['steps']} steps in {r['seconds']:.0f} s, held-out ({r['num_val']} images) "
          f"AP {b['AP']:.3f} -> {a['AP']:.3f}, AP50 {a['AP50']:.3f}; MLE {mean(r['loss_mle'], slice(0, 10)):.2f} -> "
          f"{mean(r['loss_mle'], slice(-10, None)):.2f}; sigma_easy {mean(r['sigma_easy'], slice(0, 5)):.4f} -> "
          f"peak {max(v for _, v in r['sigma_easy']):.4f} -> {mean(r['sigma_easy'], slice(-10, None)):.4f}; "
          f"training positives (last 10 steps): box IoU {mean(r['iou'], slice(-10, None)):.2f}, DCC OKS "
          f"{mean(r['oks_dcc'], slice(-10, None)):.2f}, regression OKS {mean(r['oks_reg'], slice(-10, None)):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
