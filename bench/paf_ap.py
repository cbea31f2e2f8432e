"""COCO keypoint AP of the tf-pose MobileNetV2-small network + posekit's PAF association.

Evaluates ``../shared/data/mmpose-coco`` and ``../shared/data/coco-mini-train`` separately with pycocotools
(iouType 'keypoints') and prints AP, AP50 and AR per set for tf-pose's input (432x368, aspect not kept) and for
posekit's defaults, then an ablation table (one knob changed from the defaults per row).

    python bench/paf_ap.py            # full table
    python bench/paf_ap.py --quick    # the two headline rows only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from dataclasses import replace
from pathlib import Path

import cv2

from posekit.pipelines.bottomup import PafParams, PafPipeline, onnx_network

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights" / "openpose_mobilenet_v2_small_432x368.onnx"
SETS = {"mmpose-coco": SHARED / "data" / "mmpose-coco", "coco-mini-train": SHARED / "data" / "coco-mini-train"}


def load_set(root: Path):
    gt = json.loads((root / "person_keypoints.json").read_text())
    images = [(im["id"], cv2.imread(str(root / "images" / im["file_name"]))) for im in gt["images"]]
    for (iid, img), im in zip(images, gt["images"]):
        if img is None:
            raise FileNotFoundError(root / "images" / im["file_name"])
    return root / "person_keypoints.json", images


def coco_ap(ann_file: Path, results: list[dict]) -> tuple[float, float, float]:
    """(AP, AP50, AR) with pycocotools; 0 when there are no results."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return 0.0, 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1]), float(ev.stats[5])


class CachedNetwork:
    """``run_network`` that memoises outputs by input bytes (the ablation re-decodes the same inputs)."""

    def __init__(self, run):
        self.run = run
        self.cache: dict = {}

    def __call__(self, batch):
        key = (batch.shape, hash(batch.tobytes()))
        if key not in self.cache:
            self.cache[key] = self.run(batch)
        return self.cache[key]


def evaluate(pipe: PafPipeline, ann_file: Path, images) -> tuple[float, float, float]:
    results = []
    for iid, img in images:
        results += [p.to_coco(iid) for p in pipe(img)]
    return coco_ap(ann_file, results)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the tf-pose input and the defaults")
    args = ap.parse_args(argv)
    net = CachedNetwork(onnx_network(str(WEIGHTS)))
    data = {name: load_set(root) for name, root in SETS.items()}
    d = PafParams()
    rows = [("tf-pose input 432x368 (fixed)", PafParams.tfpose()), ("posekit defaults", d)]
    if not args.quick:
        rows += [
            ("keep-aspect h=368", replace(d, target_height=368)),
            ("keep-aspect h=496", replace(d, target_height=496)),
            ("scales (1.0, 1.25)", replace(d, scales=(1.0, 1.25))),
            ("scales (1.0, 0.75)", replace(d, scales=(1.0, 0.75))),
            ("upsample x2", replace(d, upsample=2)),
            ("upsample x4", replace(d, upsample=4)),
            ("upsample x8", replace(d, upsample=8)),
            ("upsample x4 + smooth sigma 2", replace(d, upsample=4, smooth_sigma=2.0)),
            ("smooth sigma 1", replace(d, smooth_sigma=1.0)),
            ("subpixel none", replace(d, subpixel="none")),
            ("subpixel centroid", replace(d, subpixel="centroid")),
            ("peak threshold 0.03", replace(d, peak_threshold=0.03)),
            ("peak threshold 0.1 (OpenPose)", replace(d, peak_threshold=0.1)),
            ("paf samples 5", replace(d, paf_samples=5)),
            ("paf samples 20", replace(d, paf_samples=20)),
            ("sampling nearest", replace(d, sampling="nearest")),
            ("paf min share 0.8 (OpenPose)", replace(d, paf_min_share=0.8)),
            ("paf sample threshold 0.1", replace(d, paf_sample_threshold=0.1)),
            ("no length prior", replace(d, length_prior=0.0)),
            ("matching exact", replace(d, matching="exact")),
            ("min parts 3", replace(d, min_parts=3)),
            ("min parts 6", replace(d, min_parts=6)),
            ("min mean score 0.2", replace(d, min_mean_score=0.2)),
            ("instance score mean", replace(d, instance_score="mean")),
            ("instance score mean_x_sqrt_share", replace(d, instance_score="mean_x_sqrt_share")),
            ("tf-pose input + exact", PafParams.tfpose(matching="exact")),
            ("tf-pose input + upsample x4", PafParams.tfpose(upsample=4)),
            ("tf-pose input + OpenPose thresholds", PafParams.tfpose(peak_threshold=0.1, paf_min_share=0.8)),
        ]
    header = f"{'setting':40s} " + " ".join(f"{n[:15]:>15s} AP  AP50    AR" for n in data)
    print(header)
    for label, params in rows:
        pipe = PafPipeline(net, params)
        cells = []
        for name, (ann, imgs) in data.items():
            a, a50, ar = evaluate(pipe, ann, imgs)
            cells.append(f"{'':>12s}{a:6.3f} {a50:5.3f} {ar:5.3f}")
        print(f"{label:40s} " + " ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
