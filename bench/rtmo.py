"""RTMO-s at 640 on the CPU: posekit PyTorch latency, posekit-ONNX pipeline latency (letterbox + onnxruntime + post-
processing through the rtmo-s runtime card) and the raw onnxruntime time of the same ONNX file, with ratios.

    python bench/rtmo.py [--threads 2] [--runs 10] [--size 640]

Random weights (latency does not depend on them); the ONNX file is posekit's own export (MMDeploy interface).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))


def main(argv=None) -> int:
    import onnxruntime as ort

    from posekit.export.rtmo import export_rtmo_onnx
    from posekit.models.rtmo import build_rtmo
    from posekit.pipelines.onestage import OneStagePipeline
    from posekit.runtime.cards import load_card
    from posekit.runtime.onnx import OnnxModel
    from posekit.training.tasks.rtmo import torch_rtmo_predict

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--size", type=int, default=640)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s = args.size
    model = build_rtmo("rtmo-s", input_size=(s, s)).eval()
    img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as d:
        path, _ = export_rtmo_onnx(model, Path(d) / "rtmo-s.onnx", write_card=False, check=False)
        card = load_card("rtmo-s").with_weights(path)
        if card.input_size != (s, s):
            card = card.__class__(**{**card.__dict__, "input_size": (s, s)})
        pipe = OneStagePipeline(card, model=OnnxModel(path, threads=args.threads, card=card))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(1).uniform(0, 255, (1, 3, s, s)).astype(np.float32)
        with torch.no_grad():
            t_torch = _time(lambda: torch_rtmo_predict(model, [img], (s, s)), args.runs)
        t_pipe = _time(lambda: pipe(img), args.runs)
        t_raw = _time(lambda: sess.run(None, {"input": x}), args.runs)
    print(f"RTMO-s {s}x{s}, {args.threads} threads, median of {args.runs} runs (ms per image):")
    print(f"  posekit PyTorch (letterbox + model.predict + back-projection): {t_torch:8.1f}")
    print(f"  posekit ONNX pipeline (OneStagePipeline, rtmo-s card):           {t_pipe:8.1f}")
    print(f"  raw onnxruntime session.run of the same file:                    {t_raw:8.1f}")
    print(f"  ratios: PyTorch / ONNX pipeline = {t_torch / t_pipe:.2f}, ONNX pipeline / raw onnxruntime = "
          f"{t_pipe / t_raw:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
