"""The controlled scaling sweep: one canvas of fixed size with N = 1, 2, 4, ... people pasted from real person
crops of the annotation file, so that cost versus people is measured with the image size and everything else
fixed."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from posekit.compare.run import COST_STAGES, timed_call
from posekit.compare.stats import percentiles, robust_line_fit

__all__ = ["person_crops", "compose_canvas", "run_sweep", "single_crop_ms"]


def person_crops(ann_file: str | Path, image_dir: str | Path, max_crops: int = 32, min_height: float = 80.0,
                 min_keypoints: int = 8) -> list[np.ndarray]:
    """Crops (``HxWx3`` uint8) of the best-labelled non-crowd people of a COCO file (their boxes, 10 % padding),
    largest first; repeated when the file has fewer than ``max_crops``."""
    from posekit.data.io import read_image
    from posekit.pipelines.coco_runner import load_coco_images

    data, images = load_coco_images(ann_file)
    by_id = {int(im["id"]): im for im in images}
    anns = [a for a in data.get("annotations", []) if not a.get("iscrowd", 0)
            and int(a.get("num_keypoints", 0)) >= min_keypoints and float(a["bbox"][3]) >= min_height
            and int(a["image_id"]) in by_id]
    if not anns:
        raise ValueError(f"{ann_file}: no non-crowd person with >= {min_keypoints} keypoints and a box at least "
                         f"{min_height:g} px high to compose the sweep canvases from")
    anns.sort(key=lambda a: (-float(a["bbox"][3]), int(a["id"])))
    crops, cache = [], {}
    for a in anns[:max_crops]:
        iid = int(a["image_id"])
        if iid not in cache:
            cache[iid] = read_image(Path(image_dir) / by_id[iid]["file_name"])
        img = cache[iid]
        x, y, w, h = (float(v) for v in a["bbox"])
        px, py = 0.1 * w, 0.1 * h
        x0, y0 = max(int(x - px), 0), max(int(y - py), 0)
        x1, y1 = min(int(math.ceil(x + w + px)), img.shape[1]), min(int(math.ceil(y + h + py)), img.shape[0])
        crops.append(img[y0:y1, x0:x1].copy())
    while len(crops) < max_crops:
        crops.append(crops[len(crops) % len(anns)])
    return crops


def compose_canvas(crops: list[np.ndarray], n: int, canvas: tuple[int, int] = (768, 576), max_people: int = 32,
                   background: int = 114) -> tuple[np.ndarray, np.ndarray]:
    """``(image HxWx3, boxes (n, 4) xyxy)``: the first ``n`` crops, each scaled to fit one cell of the grid that
    holds ``max_people`` (so a person has the same size for every ``n``), cells filled row by row."""
    import cv2

    W, H = canvas
    if n > max_people:
        raise ValueError(f"n={n} people do not fit a grid made for max_people={max_people}")
    cols = max(1, round(math.sqrt(max_people * W / (0.5 * H))))  # cells about twice as high as wide
    rows = int(math.ceil(max_people / cols))
    cw, ch = W // cols, H // rows
    img = np.full((H, W, 3), background, np.uint8)
    boxes = []
    for i in range(n):
        c = crops[i % len(crops)]
        s = min(cw / c.shape[1], ch / c.shape[0]) * 0.95
        w, h = max(int(c.shape[1] * s), 1), max(int(c.shape[0] * s), 1)
        r, q = divmod(i, cols)
        x0 = q * cw + (cw - w) // 2
        y0 = r * ch + (ch - h) // 2
        img[y0:y0 + h, x0:x0 + w] = cv2.resize(c, (w, h), interpolation=cv2.INTER_AREA)
        boxes.append([x0, y0, x0 + w - 1, y0 + h - 1])
    return img, np.array(boxes, np.float32).reshape(-1, 4)


def single_crop_ms(est, image: np.ndarray, box: np.ndarray, repeats: int = 5) -> dict:
    """The top-down pose network's time for ONE crop measured alone (same threads): median ms of the network stage
    and of the whole pose part (crop + network + decode) over ``repeats`` calls after one warm-up (run_sweep
    measures it once per repeat, interleaved with the canvases, so that both see the same machine load)."""
    b = np.asarray(box, np.float32).reshape(1, 4)
    s = np.ones(1, np.float32)
    timed_call(est, image, b, s)
    net, tot = [], []
    for _ in range(repeats):
        _, ms, st = timed_call(est, image, b, s)
        net.append(st["network"])
        tot.append(ms)
    return {"network_ms": float(np.median(net)), "network_min_ms": float(min(net)), "pose_ms": float(np.median(tot)),
            "repeats": repeats}


def run_sweep(est, spec, crops: list[np.ndarray], counts=(1, 2, 4, 8, 16, 32), canvas=(768, 576), repeats: int = 3,
              progress: bool = True, save_dir: str | Path | None = None) -> dict:
    """Cost versus the number of people on the same canvas.

    Top-down pipelines get the canvas's person boxes (so exactly N crops run); when the pipeline has a detector
    (``boxes: model``) the detector runs on the canvas too and is timed separately (its time is part of the total).
    Bottom-up and one-stage pipelines run on the canvas as they are.

    Returns ``{"counts", "rows": [{"n", "ms", "stages", "found"} median over repeats], "points": every repeat,
    "fit_total", "fit_stages": {stage: LineFit} (every repeat), "network_flat": (max - min) / min over N of the
    best-of-repeats network time ("network_flat_median": of the medians), "single_crop": (top-down) one crop alone,
    "slope_vs_single_crop": the slope of the best-of-repeats pose time (detector excluded) / the best single-crop
    network time ("..._median": the same with medians)}``. Best-of-repeats is the measurement least disturbed by
    other work on a shared machine.
    """
    from tqdm import tqdm

    counts = tuple(int(c) for c in counts)
    topdown = est.card.is_topdown
    has_detector = topdown and spec.boxes == "model" and est.pipeline.box_source is not None
    points = []
    canvases = {n: compose_canvas(crops, n, canvas, max(counts)) for n in counts}
    if save_dir is not None:
        from posekit.data.io import write_image

        for n in (min(counts), max(counts)):
            write_image(Path(save_dir) / f"sweep_canvas_{n}.jpg", canvases[n][0])
    # warm-up on the largest canvas (allocates the biggest batch once)
    img, boxes = canvases[max(counts)]
    if topdown:
        timed_call(est, img, boxes, np.ones(len(boxes), np.float32))
    else:
        timed_call(est, img)
    single = []  # top-down: one crop alone, measured in every repeat (the same machine load as the sweep)
    for rep in tqdm(range(repeats), desc=f"sweep {spec.name}", disable=not progress, file=sys.stderr, leave=False):
        if topdown:
            img1, boxes1 = canvases[min(counts)]
            single.append(single_crop_ms(est, img1, boxes1[0], repeats=3))
        for n in counts:
            img, boxes = canvases[n]
            det_ms, det_found = 0.0, None
            if has_detector:
                t0 = time.perf_counter()
                db, _ = est.pipeline.box_source(img)
                det_ms = 1e3 * (time.perf_counter() - t0)
                det_found = int(len(db))
            if topdown:
                people, ms, st = timed_call(est, img, boxes, np.ones(len(boxes), np.float32))
            else:
                people, ms, st = timed_call(est, img)
            st = dict(st)
            st["detector"] += det_ms
            points.append({"n": n, "rep": rep, "ms": ms + det_ms, "stages": st, "found": len(people),
                           "detector_found": det_found})
    rows = []
    for n in counts:
        pts = [p for p in points if p["n"] == n]
        rows.append({"n": n, "ms": float(np.median([p["ms"] for p in pts])),
                     "stages": {k: float(np.median([p["stages"][k] for p in pts])) for k in COST_STAGES},
                     "ms_min": float(min(p["ms"] for p in pts)),
                     "stages_min": {k: float(min(p["stages"][k] for p in pts)) for k in COST_STAGES},
                     "found": int(np.median([p["found"] for p in pts])),
                     "detector_found": pts[0]["detector_found"]})
    x = [p["n"] for p in points]
    out = {"counts": list(counts), "canvas": list(canvas), "repeats": repeats, "rows": rows, "points": points,
           "fit_total": robust_line_fit(x, [p["ms"] for p in points]).to_dict(),
           "fit_stages": {k: robust_line_fit(x, [p["stages"][k] for p in points]).to_dict() for k in COST_STAGES},
           "fit_pose_part": robust_line_fit(x, [p["ms"] - p["stages"]["detector"] for p in points]).to_dict()}
    # the checks use the best of the repeats of every N (the least disturbed by other work on the machine)
    out["fit_pose_part_best"] = robust_line_fit(counts, [r["ms_min"] - r["stages_min"]["detector"]
                                                         for r in rows]).to_dict()
    net = [r["stages_min"]["network"] for r in rows]
    out["network_flat"] = float((max(net) - min(net)) / min(net)) if min(net) > 0 else float("nan")
    net = [r["stages"]["network"] for r in rows]
    out["network_flat_median"] = float((max(net) - min(net)) / min(net)) if min(net) > 0 else float("nan")
    out["network_ms"] = percentiles([p["stages"]["network"] for p in points])
    if topdown:
        out["single_crop"] = {"network_ms": float(np.median([d["network_ms"] for d in single])),
                              "pose_ms": float(np.median([d["pose_ms"] for d in single])),
                              "network_ms_best": float(min(d["network_min_ms"] for d in single)),
                              "repeats": 3 * len(single)}
        out["slope_vs_single_crop"] = out["fit_pose_part_best"]["slope"] / out["single_crop"]["network_ms_best"]
        out["slope_vs_single_crop_median"] = out["fit_pose_part"]["slope"] / out["single_crop"]["network_ms"]
    return out
