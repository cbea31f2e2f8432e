"""INT8 vs FP32 on the real networks of ../shared and on posekit exports: speed-up and accuracy cost.

* tfpose-mnv2: INT8 calibrated on coco-mini-train (28 images); speed-up at 1 and 2 threads; AP on mmpose-coco and
  coco-mini-train (pycocotools through posekit evaluate's code);
* yolox-nano-human: INT8 calibrated on coco-mini-train; speed-up; person-box recall at IoU 0.5 on both sets;
* rtmo-s, rtmpose-m, simplebaseline-r50 exported by posekit with random weights (--random-init, seed 0): speed-up
  and the keypoint difference FP32 vs INT8 on the real images (top-down: the ground-truth boxes' crops; RTMO: people
  matched by box IoU).

Speed: FP32 and INT8 sessions run alternately (A, B, A, B ...) on the same input, median of ``--repeats`` each.

    python bench/quantize.py [--repeats 20] [--only tfpose,yolox,rtmo,rtmpose,heatmap] [--keep-fp32 PATTERN]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
SETS = {"mmpose-coco": SHARED / "data/mmpose-coco", "coco-mini-train": SHARED / "data/coco-mini-train"}
CALIB = SETS["coco-mini-train"] / "person_keypoints.json"


def alternate(run_a, run_b, repeats: int) -> tuple[float, float]:
    """Median ms of two callables run alternately A, B, A, B (one warm-up each)."""
    run_a(), run_b()
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_a()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_b()
        tb.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ta)), 1e3 * float(np.median(tb))


def speed(fp32_path, int8_path, card, batch, repeats) -> dict:
    from posekit.runtime.onnx import OnnxModel

    out = {}
    for threads in (1, 2):
        a = OnnxModel(fp32_path, threads=threads, card=card)
        b = OnnxModel(int8_path, threads=threads, card=card)
        ta, tb = alternate(lambda: a.run(batch), lambda: b.run(batch), repeats)
        out[threads] = (ta, tb)
    return out


def print_speed(name, s):
    for t, (a, b) in s.items():
        print(f"  {name:<22} {t} thread(s): FP32 {a:7.2f} ms  INT8 {b:7.2f} ms  speed-up {a / b:4.2f}x", flush=True)


def ap(card, weights, set_name) -> float:
    from posekit.evaluation.coco import evaluate_coco_keypoints
    from posekit.pipelines.coco_runner import predict_coco
    from posekit.pipelines.estimator import PoseEstimator

    root = SETS[set_name]
    est = PoseEstimator(card, weights=weights, threads=2)
    res = predict_coco(est, root / "person_keypoints.json", root / "images", progress=False)
    return float(evaluate_coco_keypoints(root / "person_keypoints.json", res)["AP"]) if res else 0.0


def gt_boxes(set_name):
    from posekit.data.io import read_json

    data = read_json(SETS[set_name] / "person_keypoints.json")
    boxes = {}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0):
            x, y, w, h = a["bbox"]
            boxes.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
    return [(SETS[set_name] / "images" / im["file_name"], np.asarray(boxes.get(im["id"], []), np.float32).reshape(-1, 4))
            for im in data["images"]]


def bench_tfpose(tmp, args):
    from posekit.data.io import read_image
    from posekit.pipelines.estimator import PoseEstimator
    from posekit.quantization import QuantizeSettings, quantize_model
    from posekit.runtime.cards import load_card

    fp32 = SHARED / "weights/openpose_mobilenet_v2_small_432x368.onnx"
    print(f"tfpose-mnv2 (calibration: {CALIB.parent.name}, {args.method}, keep_fp32={args.keep_fp32 or 'none'})")
    q, card8, rep = quantize_model(fp32, "tfpose-mnv2", CALIB, tmp / "tfpose-int8.onnx",
                                   QuantizeSettings(method=args.method, keep_fp32=tuple(args.keep_fp32)), threads=2)
    print(f"  output SQNR {rep['errors'][load_card('tfpose-mnv2').output_names[0]]['sqnr_db']} dB")
    est = PoseEstimator("tfpose-mnv2", weights=fp32)
    image = read_image(SETS["mmpose-coco"] / "images/000000196141.jpg")
    recorded = []
    orig = est.model.run
    est.model.run = lambda b, *a, **k: (recorded.append(b), orig(b, *a, **k))[1]
    est(image)
    # the output SQNR above is dominated by the background map (channel 18, about 1 everywhere): the part maps
    # and PAFs alone tell whether the network still works
    from posekit.runtime.onnx import OnnxModel

    name = load_card("tfpose-mnv2").output_names[0]
    a = OnnxModel(fp32, threads=2).run(recorded[0])[name].astype(np.float64)
    b = OnnxModel(q, threads=2).run(recorded[0])[name].astype(np.float64)
    a, b = np.delete(a, 18, axis=-1), np.delete(b, 18, axis=-1)
    print(f"  part maps + PAFs without the background map (one mmpose-coco image): SQNR "
          f"{10 * np.log10((a ** 2).sum() / ((a - b) ** 2).sum()):.2f} dB, max |FP32| {np.abs(a).max():.3f}, "
          f"max |INT8| {np.abs(b).max():.3f}", flush=True)
    print_speed("tfpose-mnv2", speed(fp32, q, load_card("tfpose-mnv2"), recorded[0], args.repeats))
    for s in SETS:
        print(f"  AP {s:<16} FP32 {ap('tfpose-mnv2', fp32, s):.4f}  INT8 {ap(card8, None, s):.4f}", flush=True)


def bench_yolox(tmp, args):
    from posekit.boxes import box_iou
    from posekit.data.io import read_image
    from posekit.detectors import PersonDetector
    from posekit.quantization import QuantizeSettings, quantize_model
    from posekit.runtime.cards import load_card
    from posekit.runtime.preprocess import prepare_image

    fp32 = SHARED / "weights/yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx"
    print(f"yolox-nano-human (calibration: {CALIB.parent.name}, {args.method})")
    q, card8, rep = quantize_model(fp32, "yolox-nano-human", CALIB, tmp / "yolox-int8.onnx",
                                   QuantizeSettings(method=args.method), threads=2)
    card = load_card("yolox-nano-human")
    image = read_image(SETS["mmpose-coco"] / "images/000000196141.jpg")
    print_speed("yolox-nano-human", speed(fp32, q, card, prepare_image(image, card)[0], args.repeats))
    d32, d8 = PersonDetector(card, fp32, threads=2), PersonDetector(card8, threads=2)
    for s in SETS:
        hits = {"FP32": 0, "INT8": 0}
        total = 0
        for path, gt in gt_boxes(s):
            img = read_image(path)
            total += len(gt)
            for k, det in (("FP32", d32), ("INT8", d8)):
                b, _ = det(img)
                if len(gt) and len(b):
                    hits[k] += int((box_iou(gt, b).max(1) >= 0.5).sum())
        print(f"  box recall@0.5 {s:<16} FP32 {hits['FP32'] / total:.3f}  INT8 {hits['INT8'] / total:.3f} "
              f"({total} non-crowd person boxes)", flush=True)


def _keypoint_diffs(est32, est8, topdown):
    """Per-keypoint pixel distances FP32 vs INT8 over the two sets (top-down: on the ground-truth boxes)."""
    from posekit.boxes import box_iou
    from posekit.data.io import read_image

    d = []
    for s in SETS:
        for path, gt in gt_boxes(s):
            img = read_image(path)
            if topdown:
                if not len(gt):
                    continue
                a, b = est32(img, boxes=gt), est8(img, boxes=gt)
                pairs = list(zip(a, b))
            else:
                a, b = est32(img), est8(img)
                if not a or not b:
                    continue
                iou = box_iou(np.stack([p.box for p in a]), np.stack([p.box for p in b]))
                pairs = [(a[i], b[int(iou[i].argmax())]) for i in range(len(a)) if iou[i].max() >= 0.5]
            for p, r in pairs:
                d.append(np.linalg.norm(p.keypoints[:, :2] - r.keypoints[:, :2], axis=1))
    return np.concatenate(d) if d else np.zeros(0)


def bench_export(tmp, args, preset):
    import torch

    from posekit.export.rtmo import export_rtmo_onnx
    from posekit.export.topdown import export_topdown_onnx
    from posekit.models.presets import build_model
    from posekit.pipelines.estimator import PoseEstimator
    from posekit.quantization import QuantizeSettings, quantize_model
    from posekit.runtime.cards import load_card
    from posekit.runtime.preprocess import prepare_crops, prepare_image
    from posekit.data.io import read_image

    torch.manual_seed(0)
    model = build_model(preset).eval()
    out = tmp / f"{preset}.onnx"
    if preset.startswith("rtmo"):
        fp32, card_path = export_rtmo_onnx(model, out, check=False)
    else:
        fp32, card_path = export_topdown_onnx(model, out)
    print(f"{preset} (posekit export, random weights; calibration: {CALIB.parent.name}, {args.method})")
    q, card8, rep = quantize_model(fp32, card_path, CALIB, tmp / f"{preset}-int8.onnx",
                                   QuantizeSettings(method=args.method, max_images=16), threads=2)
    print("  output SQNR: " + ", ".join(f"{k} {v['sqnr_db']} dB" for k, v in rep["errors"].items()))
    card = load_card(card_path)
    image = read_image(SETS["mmpose-coco"] / "images/000000196141.jpg")
    topdown = card.is_topdown
    batch = (prepare_crops(image, gt_boxes("mmpose-coco")[2][1][:1], card)[0] if topdown
             else prepare_image(image, card)[0])
    print_speed(preset, speed(fp32, q, card, batch, args.repeats))
    est32 = PoseEstimator(card_path, threads=2, score_thr=None)
    est8 = PoseEstimator(card8, threads=2, score_thr=None)
    d = _keypoint_diffs(est32, est8, topdown)
    if len(d):
        print(f"  keypoint |FP32 - INT8| px over {len(d)} keypoints: median {np.median(d):.2f}, 90th percentile "
              f"{np.percentile(d, 90):.2f}, max {d.max():.1f}", flush=True)
    else:
        print("  no people matched between FP32 and INT8", flush=True)


def main():
    ap_ = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap_.add_argument("--repeats", type=int, default=20)
    ap_.add_argument("--only", default="tfpose,yolox,rtmo,rtmpose,heatmap")
    ap_.add_argument("--method", default="minmax")
    ap_.add_argument("--keep-fp32", action="append", default=[], help="tfpose only")
    args = ap_.parse_args()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} cores; median of "
          f"{args.repeats} alternating runs", flush=True)
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="posekit-bench-quant-") as t:
        tmp = Path(t)
        if "tfpose" in only:
            bench_tfpose(tmp, args)
        if "yolox" in only:
            bench_yolox(tmp, args)
        for key, preset in (("rtmo", "rtmo-s"), ("rtmpose", "rtmpose-m"), ("heatmap", "simplebaseline-r50")):
            if key in only:
                bench_export(tmp, args, preset)
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
