"""One pipeline over a COCO-format set: results, accuracy (AP, crowd levels, box recall) and cost (per image, per
stage, versus the number of people found)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from posekit.compare.stats import CROWD_BINS, box_recall, crowd_bin, percentiles, robust_line_fit

__all__ = ["COST_STAGES", "run_on_dataset", "accuracy", "gt_per_image", "timed_call", "stage_split"]

#: the cost split of the report, and the timer stages each one sums.
COST_STAGES = {
    "detector": ("detector",),
    "preprocess": ("preprocess",),
    "network": ("network",),
    "decode": ("postprocess", "grouping"),  # decoding / association (bottom-up: its resize too)
}


def stage_split(before: dict, after: dict) -> dict:
    """Milliseconds per report stage between two ``StageTimer.totals`` snapshots."""
    return {k: 1e3 * sum(after.get(n, 0.0) - before.get(n, 0.0) for n in names) for k, names in COST_STAGES.items()}


def timed_call(est, image: np.ndarray, boxes=None, box_scores=None):
    """``(people, total_ms, {stage: ms})`` of one call (boxes given: the top-down pipeline on those boxes)."""
    before = dict(est.timer.totals)
    t0 = time.perf_counter()
    if boxes is None:
        people = est(image)
    else:
        people = est.pipeline.predict_boxes(image, boxes, box_scores)
    total = 1e3 * (time.perf_counter() - t0)
    return people, total, stage_split(before, dict(est.timer.totals))


def gt_per_image(data: dict, category_id: int) -> dict[int, dict]:
    """``{image_id: {"boxes" (N,4) xyxy non-crowd, "scores", "num_people", "crowd_index"}}``."""
    out: dict[int, dict] = {int(im["id"]): {"boxes": [], "crowd_index": im.get("crowdIndex")}
                            for im in data["images"]}
    for a in data.get("annotations", []):
        if a.get("iscrowd", 0) or a.get("category_id", category_id) != category_id:
            continue
        iid = int(a["image_id"])
        if iid not in out:
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        out[iid]["boxes"].append([x, y, x + w, y + h])
    for v in out.values():
        v["boxes"] = np.array(v["boxes"], np.float32).reshape(-1, 4)
        v["scores"] = np.ones(len(v["boxes"]), np.float32)
        v["num_people"] = len(v["boxes"])
    return out


def run_on_dataset(est, spec, ann_file: str | Path, image_dir: str | Path, warmup: int = 1,
                   max_images: int | None = None, progress: bool = True) -> dict:
    """Run ``est`` over the images of ``ann_file``.

    Box source (top-down): ``spec.boxes`` = ``"model"`` (the detector), ``"gt"`` or a detections json, exactly as
    :func:`posekit.pipelines.coco_runner.predict_coco`. The first ``warmup`` images are run once more, untimed,
    before timing starts. Image decoding is not timed.

    Returns:
        ``{"results": [...], "per_image": [{"image_id", "ms", "stages": {...}, "found", "gt_people",
        "recall": (matched, total) | None}], "category_id"}``.
    """
    from tqdm import tqdm

    from posekit.data.io import read_image
    from posekit.pipelines.coco_runner import load_coco_images

    data, images = load_coco_images(ann_file)
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    cats = data.get("categories") or [{"id": 1}]
    category_id = int(cats[0].get("id", 1))
    gts = gt_per_image(data, category_id)
    if max_images is not None:
        images = images[: int(max_images)]
    per_image_boxes = None
    if spec.boxes == "gt":
        per_image_boxes = {k: (v["boxes"], v["scores"]) for k, v in gts.items()}
    elif spec.boxes != "model":
        from posekit.pipelines.topdown import load_detections

        per_image_boxes = load_detections(spec.boxes, category_id=category_id)
    topdown = est.card.is_topdown

    def boxes_of(iid):
        if per_image_boxes is None:
            return None, None
        return per_image_boxes.get(iid, (np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))

    for im in images[: max(int(warmup), 0)]:  # warm-up: caches, allocator, lazy detector
        b, s = boxes_of(int(im["id"]))
        if b is None or len(b):
            timed_call(est, read_image(image_dir / im["file_name"]), b, s)
    est.timer.reset()
    results, rows = [], []
    for im in tqdm(images, desc=f"{spec.name}", disable=not progress, file=sys.stderr, leave=False):
        iid = int(im["id"])
        image = read_image(image_dir / im["file_name"])
        b, s = boxes_of(iid)
        if b is not None and len(b) == 0:  # predict_coco skips these images too
            people, ms, st = [], 0.0, {k: 0.0 for k in COST_STAGES}
        else:
            people, ms, st = timed_call(est, image, b, s)
        results.extend(p.to_coco(iid, category_id) for p in people)
        rec = None
        if topdown:
            used = np.array([p.box for p in people], np.float32).reshape(-1, 4) if b is None else b
            rec = box_recall(gts[iid]["boxes"], used)
        rows.append({"image_id": iid, "file_name": im["file_name"], "ms": ms, "stages": st, "found": len(people),
                     "gt_people": gts[iid]["num_people"], "crowd_index": gts[iid]["crowd_index"], "recall": rec,
                     "timed": not (b is not None and len(b) == 0)})
    return {"results": results, "per_image": rows, "category_id": category_id}


def cost_summary(per_image: list[dict]) -> dict:
    """Median / p90 of the per-image time and of every stage, and the robust fit of time against people found."""
    rows = [r for r in per_image if r["timed"]]
    out = {"total": percentiles([r["ms"] for r in rows]),
           "stages": {k: percentiles([r["stages"][k] for r in rows]) for k in COST_STAGES}}
    x = [r["found"] for r in rows]
    out["fit_total_vs_found"] = robust_line_fit(x, [r["ms"] for r in rows]).to_dict()
    out["fit_stages_vs_found"] = {k: robust_line_fit(x, [r["stages"][k] for r in rows]).to_dict()
                                  for k in COST_STAGES}
    return out


def accuracy(ann_file: str | Path, results_path: str | Path, per_image: list[dict], dataset: str = "coco") -> dict:
    """AP etc. of the results file (:func:`~posekit.evaluation.coco.evaluate_coco_keypoints`, the numbers of
    ``posekit evaluate``), AP by crowd level (images binned by annotated people; CrowdPose's crowd index bins when
    every image has one) and the person-box recall (top-down)."""
    import warnings

    from posekit.data.io import read_json
    from posekit.evaluation.coco import evaluate_coco_keypoints

    gt = read_json(Path(ann_file), "annotation file")
    stats = dict(evaluate_coco_keypoints(ann_file, str(results_path), dataset=dataset))
    by_crowd = {}
    for label, lo, hi in CROWD_BINS:
        ids = [r["image_id"] for r in per_image if r["gt_people"] and crowd_bin(r["gt_people"]) == label]
        if not ids:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = evaluate_coco_keypoints(gt, str(results_path), image_ids=ids, dataset="coco")
        by_crowd[label] = {"images": len(ids), "people": int(sum(r["gt_people"] for r in per_image
                                                               if r["image_id"] in set(ids))),
                           "AP": float(s["AP"]), "AR": float(s["AR"])}
    by_crowd_index = {}
    if per_image and all(r["crowd_index"] is not None for r in per_image):
        for label, lo, hi in (("easy <0.2", 0.0, 0.2), ("medium <0.8", 0.2, 0.8), ("hard", 0.8, 1e9)):
            ids = [r["image_id"] for r in per_image if lo <= float(r["crowd_index"]) < hi]
            if ids:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    s = evaluate_coco_keypoints(gt, str(results_path), image_ids=ids, dataset="coco")
                by_crowd_index[label] = {"images": len(ids), "AP": float(s["AP"]), "AR": float(s["AR"])}
    out = {"stats": stats, "by_crowd": by_crowd, "by_crowd_index": by_crowd_index}
    recs = [r["recall"] for r in per_image if r["recall"] is not None]
    if recs:
        m, t = sum(r[0] for r in recs), sum(r[1] for r in recs)
        out["box_recall"] = {"matched": int(m), "total": int(t), "recall": (m / t) if t else float("nan"),
                             "iou_thr": 0.5}
    return out
