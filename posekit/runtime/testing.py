"""Stand-in ONNX models with the exact interfaces of real exports and *known* outputs.

They find the brightest spot of their input (argmax of the channel sum) and report it, so a test can draw a white
dot in an image, run a pipeline, and check with numbers that the pre-processing (letterbox, crops, colour,
normalisation, layout) and the post-processing (input frame -> image frame, crop -> image) are right. They are
also handy to check a custom model card before the real weights are at hand.

* :func:`fake_rtmo` — ``input [1,3,S,S]`` -> ``dets [1,3,5]``, ``keypoints [1,3,K,3]``: instance 0 is a box
  ``dot -/+ (20, 30)`` with score 0.9 and keypoint k at ``dot + offsets[k]``; instance 1 is a duplicate shifted by
  2 px with score 0.8 (removed by NMS); instance 2 has score 0.05 (removed by the threshold). Input pixels.
* :func:`fake_simcc` — ``input [N,3,H,W]`` -> ``simcc_x [N,K,W*r]``, ``simcc_y [N,K,H*r]``: the x/y profiles of
  the channel sum (max over the other axis), repeated ``r`` times per pixel, times ``gains[k]`` — so the SimCC
  argmax of every keypoint is the dot and keypoint k's score is ``gains[k] * peak``.
* :func:`fake_heatmap` — ``input [N,3,H,W]`` -> ``heatmaps [N,K,H/4,W/4]``: 4x4 average pooling of the channel
  sum times ``gains[k]``.
"""

from __future__ import annotations

import numpy as np

from posekit.runtime.onnx_graph import GraphBuilder

__all__ = ["fake_rtmo", "fake_simcc", "fake_heatmap", "rtmo_offsets"]


def rtmo_offsets(k: int = 17) -> np.ndarray:
    """``(K, 2)`` keypoint offsets (input pixels) from the dot used by :func:`fake_rtmo`."""
    i = np.arange(k, dtype=np.float32)
    return np.stack([i - k // 2, 2 * (i - k // 2)], -1)


def _argmax_xy(g: GraphBuilder, x: str, h: int, w: int) -> str:
    """``[1, 2]`` float (x, y) of the max of the channel sum of NCHW ``x`` (batch 1)."""
    s = g.node("ReduceSum", [x, g.const([1], np.int64)], keepdims=0)            # [1,H,W]
    flat = g.node("Reshape", [s, g.const([1, h * w], np.int64)])                  # [1,H*W]
    idx = g.node("Cast", [g.node("ArgMax", [flat], axis=1, keepdims=1)], to=1)   # [1,1] float
    py = g.node("Floor", [g.node("Div", [idx, g.const(np.float32(w))])])
    px = g.node("Sub", [idx, g.node("Mul", [py, g.const(np.float32(w))])])
    return g.node("Concat", [px, py], axis=1)                                     # [1,2]


def fake_rtmo(size: int = 640, k: int = 17) -> bytes:
    """ONNX bytes of an RTMO stand-in (see the module doc)."""
    g = GraphBuilder()
    x = g.input("input", [1, 3, size, size])
    p = _argmax_xy(g, x, size, size)
    pp = g.node("Reshape", [g.node("Concat", [p, p], axis=1), g.const([1, 1, 4], np.int64)])  # [1,1,4]
    box_off = np.array([[[-20, -30, 20, 30], [-18, -28, 22, 32], [100, 100, 140, 160]]], np.float32)
    boxes = g.node("Add", [pp, g.const(box_off)])
    det_scores = g.const(np.array([[[0.9], [0.8], [0.05]]], np.float32))
    g.output(g.node("Concat", [boxes, det_scores], axis=2), "dets", [1, 3, 5])
    off = np.broadcast_to(rtmo_offsets(k)[None, None], (1, 3, k, 2)).astype(np.float32)
    kxy = g.node("Add", [g.node("Reshape", [p, g.const([1, 1, 1, 2], np.int64)]), g.const(off)])
    ksc = g.const(np.full((1, 3, k, 1), 0.8, np.float32))
    g.output(g.node("Concat", [kxy, ksc], axis=3), "keypoints", [1, 3, k, 3])
    return g.to_bytes()


def _upsample_last(g: GraphBuilder, v: str, r: int) -> str:
    """``[N, L]`` -> ``[N, L*r]`` repeating every value ``r`` times."""
    u = g.node("Unsqueeze", [v, g.const([2], np.int64)])
    u = g.node("Concat", [u] * r, axis=2)
    return g.node("Reshape", [u, g.const([0, -1], np.int64)])


def fake_simcc(input_size: tuple[int, int] = (192, 256), k: int = 17, split_ratio: int = 2,
               gains: np.ndarray | None = None) -> bytes:
    """ONNX bytes of a SimCC stand-in with dynamic batch (see the module doc)."""
    w, h = input_size
    gains = np.linspace(0.1, 0.15, k, dtype=np.float32) if gains is None else np.asarray(gains, np.float32)
    g = GraphBuilder()
    x = g.input("input", ["batch", 3, h, w])
    s = g.node("ReduceSum", [x, g.const([1], np.int64)], keepdims=0)         # [N,H,W]
    px = g.node("ReduceMax", [s], axes=[1], keepdims=0)                      # [N,W]
    py = g.node("ReduceMax", [s], axes=[2], keepdims=0)                      # [N,H]
    gk = g.const(gains.reshape(1, k, 1))
    outs = []
    for prof in (px, py):
        up = g.node("Unsqueeze", [_upsample_last(g, prof, split_ratio), g.const([1], np.int64)])  # [N,1,L]
        outs.append(g.node("Mul", [up, gk]))                                                    # [N,K,L]
    g.output(outs[0], "simcc_x", ["batch", k, w * split_ratio])
    g.output(outs[1], "simcc_y", ["batch", k, h * split_ratio])
    return g.to_bytes()


def fake_heatmap(input_size: tuple[int, int] = (192, 256), k: int = 17, gains: np.ndarray | None = None) -> bytes:
    """ONNX bytes of a heatmap stand-in (stride 4, dynamic batch)."""
    w, h = input_size
    gains = np.linspace(0.1, 0.15, k, dtype=np.float32) if gains is None else np.asarray(gains, np.float32)
    g = GraphBuilder()
    x = g.input("input", ["batch", 3, h, w])
    s = g.node("ReduceSum", [x, g.const([1], np.int64)], keepdims=1)         # [N,1,H,W]
    pooled = g.node("AveragePool", [s], kernel_shape=[4, 4], strides=[4, 4])  # [N,1,H/4,W/4]
    g.output(g.node("Mul", [pooled, g.const(gains.reshape(1, k, 1, 1))]), "heatmaps", ["batch", k, h // 4, w // 4])
    return g.to_bytes()
