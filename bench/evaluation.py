"""COCO keypoint evaluation speed: posekit's fast backend vs pycocotools on a val2017-sized set, same stats.

The set: the 538 real val2017 annotated images of ``../shared/data/annotations`` (2,213 annotations: crowd regions,
people without keypoints, every size) tiled to 5,000 images with fresh image and annotation ids (20,498 ground
truths, as many as val2017's person annotations), and results made from the ground truth: size-scaled keypoint
noise, dropped keypoints, missed people, false positives, varied scores (a different draw for every copy).

Three evaluators, alternated in every round (so that the ratios hold on a busy machine), each from the json files
on disk to the ten stats: posekit's default ``fast`` backend and its ``pycocotools`` backend through
``evaluate_coco_keypoints`` (reading, validation, evaluation, summary), and pycocotools called the plain way
(``COCO(path)``, ``loadRes(path)``, ``evaluate``, ``accumulate``, ``summarize``). ``--cli`` also times the
``posekit evaluate`` command in fresh processes (interpreter start and imports included).

    python bench/evaluation.py [--images 5000] [--repeats 3] [--cli]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VAL = SHARED / "data" / "annotations" / "coco-val2017-538images-person_keypoints.json"


def val_sized_set(n_images: int = 5000, seed: int = 0) -> tuple[dict, list[dict]]:
    """``(ground truth dict, results list)``: the shared 538 val images tiled to ``n_images`` images."""
    from posekit.evaluation.results import perturbed_results

    base = json.loads(VAL.read_text())
    rng = np.random.default_rng(seed)
    by_image: dict[int, list[dict]] = {}
    for a in base["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images, anns = [], []
    next_ann = 1
    for i in range(n_images):
        src = base["images"][i % len(base["images"])]
        new_id = i + 1
        images.append(dict(src, id=new_id))
        for a in by_image.get(src["id"], []):
            anns.append(dict(a, id=next_ann, image_id=new_id))
            next_ann += 1
    gt = {"images": images, "annotations": anns, "categories": base["categories"]}
    return gt, perturbed_results(anns, rng, fp_rate=0.55)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cli", action="store_true", help="also time `posekit evaluate` in fresh processes")
    args = ap.parse_args()
    from posekit.evaluation.coco import evaluate_coco_keypoints

    gt, res = val_sized_set(args.images)
    n_gt = len(gt["annotations"])
    n_people = sum(1 for a in gt["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"])
    print(f"set: {len(gt['images'])} images, {n_gt} ground truths ({n_people} people with keypoints), "
          f"{len(res)} results; load average before: {os.getloadavg()[0]:.2f}")
    tmp = tempfile.TemporaryDirectory()
    gt_path, res_path = Path(tmp.name) / "gt.json", Path(tmp.name) / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(res))

    def direct():
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(gt_path))
            ev = COCOeval(coco, coco.loadRes(str(res_path)), iouType="keypoints")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return dict(zip(stats_names, ev.stats.tolist()))

    from posekit.evaluation.coco import COCO_STAT_NAMES as stats_names

    runs = {
        "posekit fast": lambda: evaluate_coco_keypoints(gt_path, res_path, backend="fast"),
        "posekit pycocotools": lambda: evaluate_coco_keypoints(gt_path, res_path, backend="pycocotools"),
        "pycocotools direct": direct,
        # in memory (a training loop's evaluation): no json parsing
        "fast, dicts": lambda: evaluate_coco_keypoints(gt, res, backend="fast"),
        "pycocotools, dicts": lambda: evaluate_coco_keypoints(gt, res, backend="pycocotools"),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    stats = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            stats[name] = fn()
            times[name].append(time.perf_counter() - t0)
    # the default sigmas of pycocotools differ from COCO17's in the last bit: compare the two posekit runs exactly
    diff = max(max(abs(stats["posekit fast"][k] - stats["posekit pycocotools"][k]),
                   abs(stats["fast, dicts"][k] - stats["pycocotools, dicts"][k])) for k in stats_names)
    diff_direct = max(abs(stats["posekit fast"][k] - stats["pycocotools direct"][k]) for k in stats_names)
    print(f"stats: AP {stats['posekit fast']['AP']:.4f}; max |fast - pycocotools| over the 10 stats: {diff:.3g} "
          f"(same sigmas), {diff_direct:.3g} (pycocotools' own default sigmas)")
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"from the json files (median of {args.repeats}, alternated):")
    for name in list(runs)[:3]:
        print(f"  {name:<20} {med[name]:7.3f} s   {med[name] / med['posekit fast']:5.2f}x the fast backend")
    print("from loaded dicts (results in memory, as a training loop evaluates):")
    for name in list(runs)[3:]:
        print(f"  {name:<20} {med[name]:7.3f} s   {med[name] / med['fast, dicts']:5.2f}x the fast backend")
    if args.cli:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cli: dict[str, list[float]] = {"fast": [], "pycocotools": []}
        for _ in range(args.repeats):
            for backend in cli:
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "posekit.cli", "evaluate", "--annotations", str(gt_path),
                                "--results", str(res_path), "--quiet", "--backend", backend],
                               check=True, env=env, capture_output=True)
                cli[backend].append(time.perf_counter() - t0)
        f, r = float(np.median(cli["fast"])), float(np.median(cli["pycocotools"]))
        print(f"  `posekit evaluate --backend fast` {f:6.2f} s, `--backend pycocotools` {r:6.2f} s: {r / f:5.2f}x "
              f"(fresh processes)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
