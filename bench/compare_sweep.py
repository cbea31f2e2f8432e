"""The scaling sweep of `posekit compare`, checked: the same canvas with N = 1..32 real people (crops of the
annotation file), one pipeline per paradigm, the thread count fixed and printed.

Checks (issue 13): the top-down fitted slope (ms per extra person, detector excluded) is within ±15 % of the pose
network's time for one crop measured alone with the same threads; the bottom-up and one-stage network time stays
within ±10 % from 1 to 32 people; the fits' R² are printed. Best of the repeats of every N is used for the checks
(the measurement least disturbed by other work on a shared machine); medians are printed beside it.

    python bench/compare_sweep.py [--threads 1] [--repeats 5] [--data ../shared/data/mmpose-coco]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from posekit.compare.build import build_estimator
from posekit.compare.spec import PipelineSpec
from posekit.compare.sweep import person_crops, run_sweep

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--data", default=str(SHARED / "data" / "mmpose-coco"))
    ap.add_argument("--counts", default="1,2,4,8,16,32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    counts = tuple(int(v) for v in args.counts.split(","))
    data = Path(args.data)
    w = SHARED / "weights"
    specs = [
        PipelineSpec("rtmpose-t-yolox", "rtmpose-t", weights="random", detector="yolox-nano-human",
                     detector_weights=str(w / "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx"), threads=args.threads),
        PipelineSpec("tfpose", "tfpose-mnv2", weights=str(w / "openpose_mobilenet_v2_small_432x368.onnx"),
                     threads=args.threads),
        # the same network made to see the canvas's small people (input height 736): association with people found
        PipelineSpec("tfpose-736", "tfpose-mnv2", weights=str(w / "openpose_mobilenet_v2_small_432x368.onnx"),
                     input_size=(768, 736), threads=args.threads),
        PipelineSpec("rtmo-t", "rtmo-t", weights="random", input_size=(416, 416), threads=args.threads),
    ]
    crops = person_crops(data / "person_keypoints.json", data / "images", max_crops=max(counts))
    print(f"threads {args.threads} (torch {torch.get_num_threads()}, onnxruntime intra-op {args.threads}); "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()}; repeats {args.repeats}; canvas 768x576")
    ok = True
    with_tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "posekit-compare-sweep"
    for spec in specs:
        t0 = time.perf_counter()
        est = build_estimator(spec, with_tmp)
        s = run_sweep(est, spec, crops, counts, repeats=args.repeats, progress=False)
        print(f"\n{spec.name} ({spec.paradigm}), {time.perf_counter() - t0:.0f} s")
        print(f"{'N':>4} {'median ms':>10} {'best ms':>8} {'network':>8} {'decode':>7} {'detector':>8} {'found':>6}")
        for r in s["rows"]:
            print(f"{r['n']:>4} {r['ms']:>10.1f} {r['ms_min']:>8.1f} {r['stages_min']['network']:>8.1f} "
                  f"{r['stages_min']['decode']:>7.2f} {r['stages_min']['detector']:>8.1f} {r['found']:>6}")
        f = s["fit_total"]
        print(f"fit total (every repeat, Theil-Sen): {f['slope']:+.2f} ms/person, intercept {f['intercept']:.1f}, "
              f"R² {f['r2']:.3f}")
        if "single_crop" in s:
            b = s["fit_pose_part_best"]
            sc = s["single_crop"]
            r = s["slope_vs_single_crop"]
            good = 0.85 <= r <= 1.15
            ok &= good
            print(f"pose part (detector excluded, best of repeats): {b['slope']:+.2f} ms/person, R² {b['r2']:.3f}; "
                  f"one crop alone: network {sc['network_ms_best']:.2f} ms (median {sc['network_ms']:.2f}); "
                  f"slope / one crop = {r:.3f} (medians: {s['slope_vs_single_crop_median']:.3f}) "
                  f"-> {'OK' if good else 'FAIL'} (±15 %)")
        else:
            d = s["fit_stages"]["decode"]
            good = s["network_flat"] <= 0.10
            ok &= good
            print(f"network spread 1..{counts[-1]} people: {100 * s['network_flat']:.1f} % best of repeats "
                  f"({100 * s['network_flat_median']:.1f} % medians) -> {'OK' if good else 'FAIL'} (±10 %); "
                  f"decode/association {d['slope']:+.3f} ms per person placed (R² {d['r2']:.2f})")
    print(f"\nload average after: {os.getloadavg()}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
