"""Top-down pipeline speed: crops/s batched vs one by one, and per-image time vs number of people.

    python bench/topdown.py [--model rtmpose-t] [--threads 2] [--repeats 3] [--backends onnx torch]

The model is the preset at 256x192 with random weights (speed does not depend on the weights), exported to ONNX in
a temporary folder; the torch backend runs the same preset through posekit.runtime.torch_backend. Part 1 times the
network alone on N normalised crops: one batched call vs N calls of one crop (ratio = batched crops/s over
one-by-one crops/s). Part 2 times ``TopDownPipeline.predict_boxes`` (crops, network, decoding, back-projection;
no detector) on a real image of ../shared with 1, 5, 10, 20 and 40 person boxes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT.parent / "shared" / "data" / "mmpose-coco" / "images" / "000000196141.jpg"


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rtmpose-t", help="top-down preset (default rtmpose-t)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for onnxruntime and torch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--crops", type=int, default=20, help="crops of part 1")
    ap.add_argument("--people", type=int, nargs="+", default=[1, 5, 10, 20, 40])
    ap.add_argument("--backends", nargs="+", default=["onnx", "torch"], choices=["onnx", "torch"])
    args = ap.parse_args()

    from posekit.export.topdown import export_topdown_onnx
    from posekit.pipelines.topdown import TopDownPipeline
    from posekit.runtime.cards import load_card
    from posekit.runtime.onnx import OnnxModel
    from posekit.models.presets import build_model
    from posekit.runtime.torch_backend import torch_runner

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = build_model(args.model).eval()
    # A fresh CSPNeXt's activations fade to ~1e-11 and below: denormal floats make PyTorch's CPU kernels many
    # times slower on real crops. Kaiming-normal weights keep trained-model-like activation magnitudes.
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    tmp = Path(tempfile.mkdtemp(prefix="posekit-bench-"))
    onnx_path, card_path = export_topdown_onnx(model, tmp / f"{args.model}.onnx")
    card = load_card(card_path)
    runners = {}
    if "onnx" in args.backends:
        runners["onnx"] = OnnxModel(onnx_path, threads=args.threads, card=card)
    if "torch" in args.backends:
        runners["torch"] = torch_runner(model, card, threads=args.threads)
    W, H = card.input_size
    print(f"{args.model}: {W}x{H} (w x h) crops, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, "
          f"{args.threads} thread(s), best of {args.repeats}")

    # part 1: the network on N crops, batched vs one by one
    n = args.crops
    x = np.random.default_rng(0).standard_normal((n, 3, H, W)).astype(np.float32)
    print(f"\n[1] network only, {n} crops")
    print(f"{'backend':<8} {'batched crops/s':>16} {'1-by-1 crops/s':>15} {'ratio':>7}")
    for name, r in runners.items():
        tb = best_of(lambda: r.run(x), args.repeats)
        t1 = best_of(lambda: [r.run(x[i:i + 1]) for i in range(n)], args.repeats)
        print(f"{name:<8} {n / tb:>16.1f} {n / t1:>15.1f} {t1 / tb:>6.2f}x")

    # part 2: per-image pipeline time vs number of people
    img = cv2.imread(str(IMAGE))
    if img is None:
        raise FileNotFoundError(f"benchmark image not found: {IMAGE}")
    Hi, Wi = img.shape[:2]
    rng = np.random.default_rng(1)
    most = max(args.people)
    cx, cy = rng.uniform(0.2 * Wi, 0.8 * Wi, most), rng.uniform(0.2 * Hi, 0.8 * Hi, most)
    bw, bh = rng.uniform(40, 160, most), rng.uniform(80, 320, most)
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
    print(f"\n[2] pipeline per image (crops + network + decode + back-projection), {Wi}x{Hi} image")
    print(f"{'backend':<8} {'people':>6} {'ms/image':>9} {'ms/person':>10}")
    for name, r in runners.items():
        pipe = TopDownPipeline(card, model=r)
        for k in args.people:
            t = best_of(lambda: pipe.predict_boxes(img, boxes[:k]), args.repeats)
            print(f"{name:<8} {k:>6d} {1e3 * t:>9.1f} {1e3 * t / k:>10.2f}")


if __name__ == "__main__":
    main()
