"""``torchrun --nproc_per_node 2`` (gloo, CPU) equals one process with the same global batch.

The model has no BatchNorm (the tiny regressor with GroupNorm) and no dropout, so per-rank halves of each
global batch with DDP's gradient averaging compute the same update as one process with the whole batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from posekit.data.synthetic import make_synthetic_dataset
from posekit.training.checkpoint import load_checkpoint
from posekit.training.distributed import GlobalBatchSampler
from posekit.training.logging import read_csv_scalars
from posekit.training.trainer import STALL_ENV


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop(STALL_ENV, None)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


@pytest.mark.parametrize("world", [2, 4])
def test_global_batch_sampler_splits_the_same_global_batches(world):
    one = list(GlobalBatchSampler(37, 8, 0, 1, seed=5, epoch=2))
    ranks = [list(GlobalBatchSampler(37, 8, r, world, seed=5, epoch=2)) for r in range(world)]
    assert len(one) == 4 and all(len(r) == 4 for r in ranks)
    for i, batch in enumerate(one):
        parts = [ranks[r][i] for r in range(world)]
        assert all(len(p) == 8 // world for p in parts)
        assert sum(parts, []) == batch  # rank slices, in rank order, are the global batch
    assert len({i for b in one for i in b}) == 32  # no repeats within an epoch
    # resuming at batch 3 yields exactly the remaining batches; another epoch is another order
    assert list(GlobalBatchSampler(37, 8, 0, 1, seed=5, epoch=2, start_batch=3)) == one[3:]
    assert list(GlobalBatchSampler(37, 8, 0, 1, seed=5, epoch=3)) != one
    with pytest.raises(ValueError, match="not divisible"):
        GlobalBatchSampler(37, 6, 0, 4)


def test_torchrun_two_processes_equal_one_process(tmp_path: Path):
    make_synthetic_dataset(tmp_path / "train", 20, size=(96, 96), seed=4, min_people=1, max_people=2)
    cfg = {
        "task": "regression",
        "data": {"train_ann": str(tmp_path / "train/person_keypoints.json"),
                 "train_images": str(tmp_path / "train/images"), "input_size": [32, 32]},
        "model": {"name": "tiny", "overrides": {"width": 8, "norm": "gn", "dropout": 0.0}},
        "optim": {"name": "adamw", "lr": 5e-3, "grad_clip": 1.0},
        "schedule": {"name": "cosine", "warmup_steps": 2},
        "ema": {"enabled": True, "decay": 0.8, "warmup_steps": 0},
        "eval": {"every_epochs": 0},
        "batch_size": 8, "max_steps": 6, "workers": 1, "log_every_steps": 1, "progress": False, "seed": 11,
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    one, two = tmp_path / "one", tmp_path / "two"
    r = subprocess.run([sys.executable, "-m", "posekit.cli", "train", str(path), "--set", f"out_dir={one}"],
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "posekit.cli", "train", str(path), "--set", f"out_dir={two}"],
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]

    c1, c2 = load_checkpoint(one / "last.pt"), load_checkpoint(two / "last.pt")
    assert c1["step"] == c2["step"] == 6 and c2["world_size"] == 2 and len(c2["rng"]) == 2
    worst = 0.0
    for k, v in c1["model"].items():
        worst = max(worst, float((v - c2["model"][k]).abs().max()))
    for k, v in c1["ema"]["module"].items():
        worst = max(worst, float((v - c2["ema"]["module"][k]).abs().max()))
    print(f"max |params(1 process) - params(2 processes)| after 6 steps: {worst:.3g}")
    assert worst <= 1e-6
    # the comparison is not vacuous: the head starts at std 1e-3 and training moved it far beyond the tolerance
    assert float(c1["model"]["head.weight"].abs().max()) > 1e-2
    # only rank 0 logged: one row per step and tag, one event file
    rows = [(r["step"], r["tag"]) for r in read_csv_scalars(two / "scalars.csv")]
    assert len(rows) == len(set(rows)) and {s for s, t in rows if t == "train/loss"} == {str(i) for i in range(1, 7)}
    assert len(list((two / "tb").glob("events.out.tfevents.*"))) == 1
    # the logged loss is the mean over the processes, i.e. the loss of the whole global batch
    l1 = {r["step"]: float(r["value"]) for r in read_csv_scalars(one / "scalars.csv") if r["tag"] == "train/loss"}
    l2 = {r["step"]: float(r["value"]) for r in read_csv_scalars(two / "scalars.csv") if r["tag"] == "train/loss"}
    assert all(abs(l1[s] - l2[s]) <= 1e-5 for s in l1)
