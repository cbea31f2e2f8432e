"""Exact resume: a run SIGKILLed mid-epoch and resumed ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from posekit.data.synthetic import make_synthetic_dataset
from posekit.training.checkpoint import load_checkpoint
from posekit.training.logging import read_csv_scalars
from posekit.training.trainer import STALL_ENV


def _config(root: Path) -> Path:
    make_synthetic_dataset(root / "train", 24, size=(96, 96), seed=1, min_people=1, max_people=2)
    make_synthetic_dataset(root / "val", 6, size=(96, 96), seed=2, min_people=1, max_people=2)
    cfg = {
        "task": "regression",
        "data": {"train_ann": str(root / "train/person_keypoints.json"), "train_images": str(root / "train/images"),
                 "val_ann": str(root / "val/person_keypoints.json"), "val_images": str(root / "val/images"),
                 "input_size": [32, 32]},
        # dropout draws from the torch RNG, augmentation from the per-sample generators: both must resume exactly
        "model": {"name": "tiny", "overrides": {"width": 8, "dropout": 0.2, "norm": "gn"}},
        "optim": {"name": "adamw", "lr": 3e-3, "grad_clip": 0.5},
        "schedule": {"name": "cosine", "warmup_steps": 3},
        "ema": {"enabled": True, "decay": 0.9, "warmup_steps": 4},
        "eval": {"every_epochs": 1},
        "checkpoint": {"every_steps": 2},
        "batch_size": 8, "epochs": 3, "workers": 2, "log_every_steps": 1, "progress": False, "seed": 3,
    }
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    env.pop(STALL_ENV, None)
    env.update(extra)
    return env


def _cmd(cfg: Path, out: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "posekit.cli", "train", str(cfg), "--set", f"out_dir={out}", *more]


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    cfg = _config(tmp_path)
    a, b = tmp_path / "A", tmp_path / "B"
    r = subprocess.run(_cmd(cfg, a), env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    # 24 images -> 38 person crops -> 4 steps per epoch, 12 steps. Checkpoints every 2 steps: the last one
    # before the kill is step 6; the kill comes after step 7 (mid epoch 2, one step past the checkpoint).
    proc = subprocess.Popen(_cmd(cfg, b), env=_env(**{STALL_ENV: "7"}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        for _ in range(2400):  # poll up to ~240 s (a wait limit, not a speed check)
            if (b / "stalled").exists():
                break
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            time.sleep(0.1)
        assert (b / "stalled").exists(), "the run never reached the stall step"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its data-loader workers
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed = load_checkpoint(b / "last.pt")
    assert killed["step"] == 6 and killed["epoch"] == 1
    assert not list(b.glob(".*.tmp*")), "a temporary checkpoint file was left behind"

    r = subprocess.run(_cmd(cfg, b, "--resume", str(b / "last.pt")), env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr and "at step 6" in r.stderr

    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ca["step"] == cb["step"] == 12
    init_moved = 0.0
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), f"model {k} differs after resume"
        init_moved = max(init_moved, float((v - killed["model"][k]).abs().max()))
    assert init_moved > 1e-4  # the resumed steps did change the weights
    for k, v in ca["ema"]["module"].items():
        assert torch.equal(v, cb["ema"]["module"][k]), f"EMA {k} differs after resume"
    assert ca["ema"]["updates"] == cb["ema"]["updates"] == 12
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert ca["best"] == cb["best"]
    assert torch.equal(ca["rng"][0]["torch"], cb["rng"][0]["torch"])

    # the logs agree too: every step once, same values (wall time and speed aside)
    def rows(p):
        return [(r["step"], r["tag"], r["value"]) for r in read_csv_scalars(p / "scalars.csv")
                if r["tag"] != "train/images_per_s"]

    ra, rb = rows(a), rows(b)
    assert len(ra) == len(rb) and ra == rb
    assert sorted({int(s) for s, t, _ in ra if t == "train/loss"}) == list(range(1, 13))
