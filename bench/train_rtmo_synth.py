"""Train a reduced-width RTMO on easy synthetic people (CPU) and report COCO AP before/after, the MLE loss and the
predicted DCC sigma over training.

    python bench/train_rtmo_synth.py                       # the default run (configs/rtmo-tiny-synth.yaml sizes)
    python bench/train_rtmo_synth.py --epochs 60 --train 400 --threads 2 --out runs/rtmo_synth

Prints one line per logged step (loss, MLE, sigma) and a summary: AP at step 0 and at the end, first/last MLE loss
and sigma. Nothing is asserted here (tests/test_rtmo_training.py holds the bar).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: the reduced-width RTMO used for CPU training on synthetic data (an rtmo-s with a quarter of the widths, small
#: DCC): about 1.4 M parameters at 160-256 px inputs.
TINY_OVERRIDES = dict(
    widen_factor=0.25, neck_widen_factor=0.25, hidden_dim=64, num_heads=4, feedforward_channels=128,
    neck_out_channels=64, head_in_channels=128, head_widen_factor=0.25, cls_feat_channels=128,
    pose_vec_channels=64, dcc_feat_channels=32, num_bins=[48, 64], spe_channels=32, gau_s=32,
)


def synth_config(data: dict, out_dir, size: int = 160, epochs: int = 30, batch: int = 16, lr: float = 4e-3,
                 options: dict | None = None, task_options: dict | None = None, **top):
    """The training config of the synthetic RTMO run (a validated ``TrainConfig``)."""
    from posekit.training.config import config_from_dict

    d = {
        "task": "rtmo",
        "model": {"name": "rtmo-s", "overrides": dict(TINY_OVERRIDES)},
        "data": {**data, "input_size": [size, size],
                 "options": {"augment": True, "scale_range": [0.85, 1.15], "max_rotation": 10.0,
                             "max_translate": 0.05, **(options or {})}},
        "optim": {"name": "adamw", "lr": lr, "weight_decay": 0.05, "grad_clip": 10.0},
        "schedule": {"name": "cosine", "warmup_steps": 30, "min_lr_ratio": 0.05},
        "eval": {"every_epochs": 1000, "metric": "AP", "use_ema": False},
        "checkpoint": {"save_best": False},
        "task_options": dict(task_options or {}),
        "seed": 0, "epochs": epochs, "batch_size": batch, "workers": 0, "out_dir": str(out_dir), "device": "cpu",
        "progress": False, "log_every_steps": 10,
    }
    d.update(top)
    return config_from_dict(d).validate()


def series(out_dir, tag: str) -> list[tuple[int, float]]:
    from posekit.training.logging import read_csv_scalars

    rows = read_csv_scalars(Path(out_dir) / "scalars.csv")
    return [(int(r["step"]), float(r["value"])) for r in rows if r["tag"] == tag]


def main(argv=None) -> int:
    from posekit.training.tasks.openpose import make_synthetic_splits
    from posekit.training.tasks.rtmo import RTMOTask
    from posekit.training.trainer import seed_everything, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/rtmo_synth")
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--val", type=int, default=30)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--max-people", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; on a shared 2-core machine 1 is several times faster than 2")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = make_synthetic_splits(out / "data", num_train=args.train, num_val=args.val, size=(args.size, args.size),
                                 min_head_px=17.5, head_range=(17.5, 21.8), max_people=args.max_people, views="front",
                                 inside=True, background="plain", val_inside_only=False)
    cfg = synth_config(data, out / "run", size=args.size, epochs=args.epochs, batch=args.batch, lr=args.lr)
    task = RTMOTask()
    _, val = task.build_datasets(cfg)
    seed_everything(cfg.seed)
    ap0 = task.evaluate(task.build_model(cfg), val)["AP"]
    t0 = time.perf_counter()
    res = train(cfg, task=RTMOTask())
    dt = time.perf_counter() - t0
    mle, sig = series(cfg.out_dir, "train/loss_mle"), series(cfg.out_dir, "train/sigma_easy")
    for (s, m), (_, g) in zip(mle, sig):
        print(f"step {s:5d}  mle {m:7.3f}  sigma_easy {g:.4f}")
    ap1 = res["last_eval"].get("AP", float("nan"))
    print(f"RTMO tiny synthetic: {res['step']} steps in {dt:.0f} s ({dt / max(res['step'], 1):.2f} s/step), "
          f"AP {ap0:.3f} -> {ap1:.3f}, AP50 {res['last_eval'].get('AP50', float('nan')):.3f}; "
          f"MLE {mle[0][1]:.3f} -> {mle[-1][1]:.3f}; sigma_easy {sig[0][1]:.4f} -> {sig[-1][1]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
