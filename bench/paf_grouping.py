"""Speed of the PAF association alone (peaks + limb scores + matching + assembly), median of repeats.

1. Ideal synthetic maps with 1, 5, 10, 20, 40 people on 46x54 and 92x108 grids (no upsampling).
2. The real tf-pose outputs in ../shared/reference/tfpose_mnv2small_outputs_mmpose_coco.npz at posekit's default
   PafParams (association alone, and ``from_maps`` with the conversion to image pixels).
3. The end-to-end budget on the 4 mmpose-coco images at the default settings: network time vs
   pre-processing + decoding, as a ratio (target: total <= 1.10 x network).

    python bench/paf_grouping.py [--repeats 50] [--matching greedy|exact] [--cpu]

The network section always uses wall time (onnxruntime is multi-threaded).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from posekit.association.paf import associate
from posekit.association.synthetic import make_people, render_maps
from posekit.pipelines.bottomup import PafParams, PafPipeline, onnx_network

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


CPU = [False]  # --cpu: thread CPU time instead of wall time (robust when other jobs share the cores)


def median_ms(fn, repeats: int) -> float:
    clock = time.thread_time if CPU[0] else time.perf_counter
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    return 1e3 * float(np.median(ts))


def crowd(n: int, grid: tuple[int, int]) -> np.ndarray:
    """``n`` people on a regular layout filling the grid, each as tall as a layout cell (slightly jittered)."""
    h, w = grid
    cols = max(1, int(np.ceil(np.sqrt(n * w / h * 2.5))))
    rows = int(np.ceil(n / cols))
    ch, cw = h / rows, w / cols
    height = min(0.9 * ch, 2.2 * cw)
    rng = np.random.default_rng(n)
    idx = np.arange(n)
    centres = np.stack([(idx % cols + 0.5) * cw, (idx // cols + 0.5) * ch], 1) + rng.uniform(-0.3, 0.3, (n, 2))
    return make_people(centres, height, rng.uniform(-8, 8, n))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--matching", default="greedy", choices=["greedy", "exact"])
    ap.add_argument("--cpu", action="store_true", help="time with the thread's CPU clock instead of wall time")
    args = ap.parse_args(argv)
    CPU[0] = args.cpu
    d = PafParams(matching=args.matching)
    kw = dict(peak_threshold=d.peak_threshold, subpixel=d.subpixel, num_samples=d.paf_samples,
              sample_threshold=d.paf_sample_threshold, min_share=d.paf_min_share, length_prior=d.length_prior,
              sampling=d.sampling, matching=d.matching, min_parts=d.min_parts, min_mean_score=d.min_mean_score)

    print(f"association alone, ideal synthetic maps ({args.matching}), median of {args.repeats}")
    print(f"{'grid':>8s} {'people':>6s} {'found':>6s} {'peaks':>6s} {'ms':>8s}")
    for grid in ((46, 54), (92, 108)):
        for n in (1, 5, 10, 20, 40):
            people = crowd(n, grid)
            sigma = 1.0 if grid[0] > 46 else 0.7
            maps = render_maps(people, grid, sigma=sigma)
            hm, paf = np.ascontiguousarray(maps[..., :18]), np.ascontiguousarray(maps[..., 19:])
            res = associate(hm, paf, **kw)
            ms = median_ms(lambda: associate(hm, paf, **kw), args.repeats)
            print(f"{grid[0]:>3d}x{grid[1]:<4d} {n:6d} {len(res.scores):6d} {len(res.peaks.score):6d} {ms:8.2f}")

    npz = SHARED / "reference" / "tfpose_mnv2small_outputs_mmpose_coco.npz"
    if not npz.exists():
        print(f"(skipping the real-output sections: {npz} not found)")
        return 0
    outs = np.load(npz)
    pipe = PafPipeline(lambda b: None, d)
    print(f"\nreal tf-pose outputs (46x54x57), default PafParams, median of {args.repeats}")
    print(f"{'image':>14s} {'people':>6s} {'peaks':>6s} {'assoc ms':>9s} {'from_maps ms':>13s}")
    a_all, f_all = [], []
    for key in sorted(outs.files):
        m = outs[key]
        res = pipe.associate_maps(m)
        a = median_ms(lambda: pipe.associate_maps(m), args.repeats)
        f = median_ms(lambda: pipe.from_maps(m, (640, 480), (432, 368)), args.repeats)
        a_all.append(a)
        f_all.append(f)
        print(f"{key:>14s} {len(res.scores):6d} {len(res.peaks.score):6d} {a:9.2f} {f:13.2f}")
    print(f"{'median':>14s} {'':6s} {'':6s} {np.median(a_all):9.2f} {np.median(f_all):13.2f}")

    weights = SHARED / "weights" / "openpose_mobilenet_v2_small_432x368.onnx"
    run = onnx_network(str(weights))
    pipe = PafPipeline(run, d)
    print("\nend-to-end budget at the default settings (mmpose-coco images)")
    print(f"{'image':>18s} {'input':>9s} {'network ms':>11s} {'pre ms':>7s} {'decode ms':>10s} {'ratio':>6s}")
    ratios = []
    for path in sorted((SHARED / "data" / "mmpose-coco" / "images").glob("*.jpg")):
        img = cv2.imread(str(path))
        size = d.input_size_for((img.shape[1], img.shape[0]))
        x = pipe.preprocess(img, size)
        maps = run(x)[0]
        reps = max(5, args.repeats // 5)
        cpu, CPU[0] = CPU[0], False
        t_net = median_ms(lambda: run(x), reps)
        CPU[0] = cpu
        t_pre = median_ms(lambda: pipe.preprocess(img, size), reps)
        t_dec = median_ms(lambda: pipe.from_maps(maps, (img.shape[1], img.shape[0]), size), reps)
        ratio = (t_net + t_pre + t_dec) / t_net
        ratios.append(ratio)
        print(f"{path.name:>18s} {size[0]:4d}x{size[1]:<4d} {t_net:11.1f} {t_pre:7.2f} {t_dec:10.2f} {ratio:6.3f}")
    print(f"median ratio (network + pre + decode) / network: {np.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
