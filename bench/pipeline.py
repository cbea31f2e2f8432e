"""End-to-end latency of posekit pipelines beside the raw onnxruntime time of the same ONNX file.

For each model: the pipeline call on a decoded image (preprocessing + network + post-processing, excluding image
decoding and drawing) vs. ``session.run`` on the same preprocessed input, as a ratio (target <= 1.10x). The two run
alternately (raw, pipeline, pipeline, raw, raw, ...), so that a busy machine slows both alike and the ratio holds.
Models: the tf-pose card, both YOLOX detectors, and any RTMO / RTMPose file already in the cache.
``--spinning on|off|both`` sets onnxruntime's ``session.intra_op.allow_spinning`` (raw and pipeline always share
one session, so both sides of a ratio use the same setting); ``--stages`` adds the detectors' per-stage medians.

    python bench/pipeline.py [--threads 2] [--repeats 20] [--spinning both|on|off|default] [--stages]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from posekit.data.io import read_image
from posekit.runtime.cards import load_card
from posekit.runtime.download import posekit_home

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _alternate_ms(raw_fn, pipe_fn, repeats):
    """Median ms of ``raw_fn`` and ``pipe_fn`` run alternately, one warm-up each. The order flips every round
    (A, B, B, A, A, B ...) so that neither side always runs right after the other (on a busy machine the call
    that follows the other one's run measured up to 2x slower, which an A, B, A, B order turns into a bias)."""
    raw_fn(), pipe_fn()
    raw, pipe = [], []
    for i in range(repeats):
        for fn, into in ((raw_fn, raw), (pipe_fn, pipe))[::-1 if i % 2 else 1]:
            t0 = time.perf_counter()
            fn()
            into.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(raw)), 1e3 * float(np.median(pipe))


def bench_one(name, card, weights, image, threads, repeats, spinning=None):
    from posekit.detectors import PersonDetector
    from posekit.pipelines.estimator import PoseEstimator
    from posekit.runtime.onnx import OnnxModel
    from posekit.runtime.preprocess import prepare_crops, prepare_image

    if card.kind == "detector":
        pipe = PersonDetector(card, weights, threads=threads, spinning=spinning)
        session, batch = pipe.model.session, prepare_image(image, card)[0]
        call = lambda: pipe(image)  # noqa: E731
    else:
        est = PoseEstimator(card, weights=weights, threads=threads,
                            detector=(lambda img: (np.array([[100, 50, 400, 450]], np.float32), np.ones(1)))
                            if card.is_topdown else None)
        call = lambda: est(image)  # noqa: E731
        model = est.model if card.kind == "paf" else est.pipeline.model
        if spinning is not None:  # the pipeline's own OnnxModel, re-opened with the spinning setting
            model.session = OnnxModel(weights, threads=threads, spinning=spinning).session
        if card.kind == "paf":
            session = est.model.session
            batch = est.pipeline.preprocess(image, _paf_size(est, image))
        elif card.kind == "rtmo":
            session, batch = est.pipeline.model.session, prepare_image(image, card)[0]
        else:
            session = est.pipeline.model.session
            batch = prepare_crops(image, np.array([[100, 50, 400, 450]], np.float32), card)[0]
    feed = {card.input_name: batch}
    raw, end = _alternate_ms(lambda: session.run(None, feed), call, repeats)
    return name, end, raw


def stage_ms(card, weights, image, threads, repeats, spinning=None):
    """Per-stage medians (ms) of a detector: ``preprocess`` / ``network`` / ``postprocess`` inside real calls (its
    own StageTimer, so the cost of running right after onnxruntime is included), then the steps of pre- and
    post-processing timed alone (blur, resize, tensor = padding + HWC->CHW float conversion, decode, NMS)."""
    import cv2

    from posekit.detectors import PersonDetector, decode_yolox_raw, nms
    from posekit.pipelines.estimator import StageTimer
    from posekit.runtime.preprocess import _canvas_tensor, prepare_image
    from posekit.data.geometry import letterbox_layout

    timer = StageTimer()
    det = PersonDetector(card, weights, threads=threads, spinning=spinning, timer=timer)
    det(image)
    per = {}
    for _ in range(repeats):
        timer.reset()
        det(image)
        for k, v in timer.totals.items():
            per.setdefault(k, []).append(v)
    out = {k: 1e3 * float(np.median(v)) for k, v in per.items()}

    def alone(fn, n=max(repeats, 50)):
        fn()
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return 1e3 * float(np.median(ts))

    (nw, nh), offset, M, _ = letterbox_layout(image.shape, card.input_size)
    blurred = cv2.GaussianBlur(image, (3, 3), 0, borderType=cv2.BORDER_REFLECT_101)
    resized = cv2.resize(blurred, (nw, nh), interpolation=cv2.INTER_LINEAR)
    if card.interpolation == "antialias":
        out["  blur"] = alone(lambda: cv2.GaussianBlur(image, (3, 3), 0, borderType=cv2.BORDER_REFLECT_101))
    out["  resize"] = alone(lambda: cv2.resize(blurred, (nw, nh), interpolation=cv2.INTER_LINEAR))
    out["  tensor"] = alone(lambda: _canvas_tensor(resized, card.input_size, offset, card))
    out["  preprocess alone"] = alone(lambda: prepare_image(image, card))
    res = det.model.run(prepare_image(image, card)[0])
    if card.detector.decode == "yolox-raw":
        raw = res[card.output_names[0]][0]
        args = (card.input_size, card.detector.strides, card.detector.class_id)
        out["  decode"] = alone(lambda: decode_yolox_raw(raw, *args, score_thr=det.score_thr))
        boxes, scores = decode_yolox_raw(raw, *args, score_thr=det.score_thr)
        out["  nms"] = alone(lambda: nms(boxes, scores, det.nms_thr))
    out["  postprocess alone"] = alone(lambda: det.postprocess(res, M, image.shape))
    return out


def _paf_size(est, image):
    p = est.pipeline.params
    if p.input_mode == "fixed":
        return tuple(p.input_size)
    h, w = image.shape[:2]
    th, m = p.target_height, p.size_multiple
    tw = int(np.ceil(w * th / h / m) * m)
    return (min(tw, p.max_width) if p.max_width else tw, th)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--image", default=str(SHARED / "data/mmpose-coco/images/000000196141.jpg"))
    ap.add_argument("--spinning", choices=("default", "on", "off", "both"), default="both",
                    help="onnxruntime intra-op thread spinning: default (onnxruntime's, on), on, off, or both "
                         "(the default: each model with spinning on and with it off)")
    ap.add_argument("--stages", action="store_true", help="also print the detectors' per-stage medians")
    args = ap.parse_args()
    spins = {"default": [None], "on": [True], "off": [False], "both": [True, False]}[args.spinning]
    image = read_image(args.image)
    todo = [
        ("tfpose-mnv2", SHARED / "weights/openpose_mobilenet_v2_small_432x368.onnx"),
        ("yolox-nano-human", SHARED / "weights/yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx"),
        ("yolox-nano-coco", SHARED / "weights/yolox_nano_coco80_416x416.onnx"),
    ]
    for n in [f"rtmo-{s}" for s in "tsml"] + [f"rtmpose-{s}" for s in "tsml"]:
        f = posekit_home() / load_card(n).weights.cache_name
        if f.is_file():
            todo.append((n, f))
    import os

    print(f"image {Path(args.image).name} {image.shape[1]}x{image.shape[0]}, threads {args.threads}, "
          f"median of {args.repeats} alternating runs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'model':<18} {'spinning':>8} {'pipeline ms':>12} {'onnxruntime ms':>15} {'ratio':>7}")
    for name, w in todo:
        if not Path(w).is_file():
            print(f"{name:<18} (weights not found: {w})")
            continue
        for sp in spins:
            n, end, raw = bench_one(name, load_card(name), w, image, args.threads, args.repeats, sp)
            tag = {None: "default", True: "on", False: "off"}[sp]
            print(f"{n:<18} {tag:>8} {end:>12.2f} {raw:>15.2f} {end / raw:>6.3f}x")
    if args.stages:
        for name, w in todo:
            card = load_card(name)
            if card.kind != "detector" or not Path(w).is_file():
                continue
            for sp in spins:
                tag = {None: "default", True: "on", False: "off"}[sp]
                st = stage_ms(card, w, image, args.threads, args.repeats, sp)
                print(f"{name} stages (spinning {tag}), median ms: "
                      + ", ".join(f"{k.strip()} {v:.3f}" for k, v in st.items()))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
