"""The multi-stage study of `posekit compare --stages`, timed: a model stopped after stage t costs more network time
for every stage it keeps (CPM, Hourglass, OpenPose-light; random weights, one thread, small widths so that it
runs in seconds). Prints the network ms (median) of each stage count and the ratio to the stage before; the check
is that every ratio is above 1. (The test suite checks the rows, files and plot; the time check lives here.)

    python bench/compare_stages.py [--threads 1] [--data ../shared/data/mmpose-coco]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from posekit.compare.core import run_compare
from posekit.compare.spec import CompareConfig, PipelineSpec

SHARED = Path(__file__).resolve().parents[2] / "shared"
CPM_TINY = {"num_stages": 3, "feat_channels": 16, "middle_channels": 16, "stem_channels": [8, 8, 16, 16, 32, 32],
            "middle_widths": [8, 8, 16]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default=str(SHARED / "data" / "mmpose-coco"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    specs = [PipelineSpec("cpm", "cpm", weights="random", boxes="gt", overrides=CPM_TINY, stages=True,
                          threads=args.threads),
             PipelineSpec("hg", "hourglass-52", weights="random", boxes="gt", stages=True, threads=args.threads,
                          overrides={"num_stacks": 2, "stage_channels": [16] * 6, "feat_channel": 16,
                                     "stem_channels": [8, 16]}),
             PipelineSpec("opl", "openpose-light", weights="random", input_size=(256, 256), stages=True,
                          threads=args.threads, overrides={"num_stages": 3})]
    print(f"threads {args.threads}; load average {os.getloadavg()[0]:.2f}")
    ok = True
    with tempfile.TemporaryDirectory() as out:
        rep = run_compare(CompareConfig(str(data / "person_keypoints.json"), str(data / "images"), specs,
                                        out_dir=out, stages=True, progress=False))
    for name, study in rep["stages"].items():
        ms = [r["network_ms_median"] for r in study["rows"]]
        ratios = [b / a for a, b in zip(ms, ms[1:])]
        ok &= all(r > 1.0 for r in ratios)
        print(f"{name:>4}: network ms by stage {[round(m, 2) for m in ms]}; stage t / stage t-1 "
              f"{[round(r, 2) for r in ratios]} {'(grows)' if all(r > 1.0 for r in ratios) else '(DOES NOT GROW)'}")
    print(f"load average after {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
