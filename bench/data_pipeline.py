"""Training data pipeline speed: samples per second per loader worker, before vs after, on real COCO images.

Three pipelines on the 28 real COCO train2017 images of ``../shared/data/coco-mini-train`` (86 people):

* ``topdown``   RTMPose-m recipe geometry: decode, flip, half body, box jitter, affine crop 192x256, SimCC targets,
                batch normalisation (the ``topdown`` task's dataset + ``collate``);
* ``topdown-hm`` the same for SimpleBaseline-R50 (MSRA heatmap targets 48x64);
* ``paf``       OpenPose-CMU: decode, random affine to 368x368 (+ flip), confidence maps + PAFs + mask at stride 8;
* ``mosaic``    RTMO-s stage 1: two 4-image mosaics (mosaic + mixup), affine to 640x640, flip, targets.

"Before" is the package as of ``--before`` (default: the merge-base with ``main``), extracted with ``git archive``;
"after" is this working tree. Each measurement runs in its own process with one thread (one loader worker is one
single-threaded process), alternating before, after, before, after... and the median of ``--reps`` is printed. The
pipelines use only options both versions know (the recipe's photometric set is timed separately, after only).

"Loader share": the time to load a batch of 8 over (load + one training step of the recipe's model on a batch of 8
on this CPU, 1 thread), i.e. the share of a step spent loading when loading runs in the training process
(``workers: 0``). On a GPU the step is far shorter; docs/data-pipeline.md turns samples/s per worker into workers per
GPU.

    OMP_NUM_THREADS=1 python bench/data_pipeline.py [--reps 3] [--samples 48] [--before REV] [--step]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MINI = REPO.parent / "shared" / "data" / "coco-mini-train"

PIPELINES = {
    "topdown": dict(task="topdown", model={"name": "rtmpose-m"}, data={"input_size": [192, 256], "options": {
        "flip_prob": 0.5, "half_body_prob": 0.3, "scale_range": [0.6, 1.4], "rot_factor": 80.0}}),
    "topdown-hm": dict(task="topdown", model={"name": "simplebaseline-r50"}, data={"input_size": [192, 256],
                                                                                     "options": {}}),
    "paf": dict(task="openpose", model={"name": "openpose-cmu-coco"}, data={"input_size": [368, 368], "options": {
        "scale_range": [0.5, 1.1], "max_rotation": 40.0, "max_translate": 0.1087}}),
    "mosaic": dict(task="rtmo", model={"name": "rtmo-s"}, data={"input_size": [640, 640], "options": {
        "mosaic_prob": 1.0, "mixup_prob": 1.0, "scale_range": [0.75, 1.0], "max_rotation": 10.0,
        "max_translate": 0.1}}),
}
PHOTOMETRIC = {"hsv_aug": True, "blur_prob": 0.1, "median_blur_prob": 0.1, "coarse_dropout_prob": 1.0}


def _worker(name: str, n: int, batch: int, step: bool, extra: dict) -> dict:
    """Runs inside the measuring process: returns samples/s (and the CPU step time)."""
    import cv2
    import numpy as np
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from posekit.training.config import config_from_dict
    from posekit.training.tasks import get_task

    spec = json.loads(json.dumps(PIPELINES[name]))
    spec["data"]["options"].update(extra)
    spec["data"].update(train_ann=str(MINI / "person_keypoints.json"), train_images=str(MINI / "images"))
    cfg = config_from_dict({**spec, "seed": 0})
    task = get_task(cfg.task)
    train, _ = task.build_datasets(cfg)
    model = task.build_model(cfg)
    order = np.random.default_rng(0).permutation(np.arange(max(n + batch, len(train))) % len(train))
    task.collate([train[int(i)] for i in order[:batch]])  # warm-up
    t0 = time.perf_counter()
    done = 0
    while done < n:
        idx = order[done:done + batch]
        task.collate([train[int(i)] for i in idx])
        done += len(idx)
    out = {"samples_per_s": done / (time.perf_counter() - t0)}
    if step:
        b = task.collate([train[int(i)] for i in order[:batch]])
        model.train()
        loss, _ = task.compute_loss(model, b)
        loss.backward()  # warm-up
        t0 = time.perf_counter()
        loss, _ = task.compute_loss(model, b)
        loss.backward()
        out["step_s"] = time.perf_counter() - t0
    return out


def _measure(pythonpath: str, name: str, n: int, batch: int, step: bool, extra: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--samples", str(n), "--batch",
           str(batch), "--extra", json.dumps(extra)] + (["--step"] if step else [])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"{name} with PYTHONPATH={pythonpath} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _extract(rev: str, dest: Path) -> None:
    data = subprocess.run(["git", "archive", rev, "posekit"], cwd=REPO, capture_output=True, check=True).stdout
    tar = dest / "src.tar"
    tar.write_bytes(data)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--samples", type=int, default=48, help="samples per measurement")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--before", default=None, help="git revision of 'before' (default: merge-base with main)")
    ap.add_argument("--pipelines", default=",".join(PIPELINES))
    ap.add_argument("--step", action="store_true", help="also time a CPU training step (loader share)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--extra", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.samples, args.batch, args.step, json.loads(args.extra))))
        return 0
    if not MINI.is_dir():
        print(f"needs {MINI}", file=sys.stderr)
        return 2
    rev = args.before or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=REPO, capture_output=True,
                                        text=True, check=True).stdout.strip()
    names = [p for p in args.pipelines.split(",") if p]
    load = os.getloadavg()
    print(f"before = {rev[:10]}, after = working tree; {args.samples} samples x {args.reps} reps per cell, batches "
          f"of {args.batch}, 1 thread per process; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        before_dir = Path(tmp)
        _extract(rev, before_dir)
        res: dict = {n: {"before": [], "after": [], "photometric": [], "step": None} for n in names}
        for rep in range(args.reps):
            for n in names:
                step = args.step and rep == 0
                b = _measure(str(before_dir), n, args.samples, args.batch, False, {})
                a = _measure(str(REPO), n, args.samples, args.batch, step, {})
                res[n]["before"].append(b["samples_per_s"])
                res[n]["after"].append(a["samples_per_s"])
                if step:
                    res[n]["step"] = a["step_s"]
                if n.startswith("topdown") and rep == 0:
                    res[n]["photometric"].append(
                        _measure(str(REPO), n, args.samples, args.batch, False, PHOTOMETRIC)["samples_per_s"])
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    print(f"\n{'pipeline':<12} {'before':>10} {'after':>10} {'speed-up':>9}   (samples/s per worker, median)")
    for n in names:
        b, a = med(res[n]["before"]), med(res[n]["after"])
        line = f"{n:<12} {b:>10.1f} {a:>10.1f} {a / b:>8.2f}x"
        if res[n]["photometric"]:
            line += f"   + RTMPose photometric set: {res[n]['photometric'][0]:.1f}"
        print(line)
    if args.step:
        print(f"\n{'pipeline':<12} {'load 8 (s)':>11} {'CPU step 8 (s)':>15} {'loader share':>13}   (workers: 0, after)")
        for n in names:
            load8 = args.batch / med(res[n]["after"])
            st = res[n]["step"]
            print(f"{n:<12} {load8:>11.3f} {st:>15.3f} {load8 / (load8 + st):>12.1%}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
