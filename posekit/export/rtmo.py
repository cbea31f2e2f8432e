"""Export a posekit RTMO to ONNX with the interface of the official MMDeploy export, plus a model card.

The official RTMO ONNX files (MMDeploy ``pose-detection_rtmo_onnxruntime_dynamic.py``, rewriting
``RTMOHead.forward``) and :func:`export_rtmo_onnx` share one interface, so one ``kind: rtmo`` card
(:mod:`posekit.runtime.cards`) and :class:`~posekit.pipelines.onestage.OneStagePipeline` run both:

* input ``input`` ``(B, 3, H, W)`` float32, **BGR, raw 0..255** (no mean/std), the image letterboxed top-left into
  ``H x W`` with pad value 114; ``H``, ``W`` fixed at export (multiples of 32), ``B`` dynamic;
* output ``dets`` ``(B, N, 5)`` = ``x1, y1, x2, y2, score`` in input pixels (boxes not clamped) and ``keypoints``
  ``(B, N, K, 3)`` = ``x, y, visibility score`` in input pixels.

Inside the graph, as MMDeploy does it: scores ``sigmoid(cls)``, boxes decoded from every prior, the ``pre_top_k``
best priors kept (2000; a no-op at 640 px), then ONNX ``NonMaxSuppression`` (score > ``score_thr``, IoU >
``nms_thr`` suppressed, at most ``max_output_boxes_per_class`` = 200 kept), the DCC on the survivors only, one
all-zero row appended and the rows sorted by score; the first ``keep_top_k`` (50) are returned, so ``N =
min(keep_top_k, kept + 1)`` and rows with score 0 are padding (the runtime drops them with its score threshold).
``score_thr``/``nms_thr`` default to the model config's test settings (0.1 / 0.65, as the official export takes
them from the MMPose ``test_cfg``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ["RTMOExportWrapper", "export_rtmo_onnx", "rtmo_card_dict", "INPUT_NAME",
           "OUTPUT_NAMES"]

INPUT_NAME = "input"
OUTPUT_NAMES = ("dets", "keypoints")
DEFAULT_OPSET = 17


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (``center_point_box = 0``) with a PyTorch forward of the same semantics: per image
    (one class), boxes with score > ``score_thr`` by descending score, greedy IoU > ``iou_thr`` suppression, at most
    ``max_out`` kept. Returns ``(M, 3)`` int64 rows ``[batch, class, box]`` (images in order, descending score)."""

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, max_out: int, iou_thr: float,
                score_thr: float) -> torch.Tensor:
        from posekit.boxes import nms

        rows = []
        bx = boxes.detach().cpu().numpy()
        sc = scores.detach().cpu().numpy()
        for b in range(bx.shape[0]):
            s = sc[b, 0]
            idx = np.nonzero(s > score_thr)[0]
            if idx.size:
                idx = idx[nms(bx[b, idx], s[idx], iou_thr)][:max_out]
            rows.append(np.stack((np.full_like(idx, b), np.zeros_like(idx), idx), axis=1).reshape(-1, 3))
        out = np.concatenate(rows) if rows else np.zeros((0, 3), np.int64)
        return torch.from_numpy(out.astype(np.int64)).to(boxes.device)

    @staticmethod
    def symbolic(g, boxes, scores, max_out, iou_thr, score_thr):
        return g.op("NonMaxSuppression", boxes, scores,
                    g.op("Constant", value_t=torch.tensor([int(max_out)], dtype=torch.long)),
                    g.op("Constant", value_t=torch.tensor([float(iou_thr)], dtype=torch.float32)),
                    g.op("Constant", value_t=torch.tensor([float(score_thr)], dtype=torch.float32)))


class RTMOExportWrapper(nn.Module):
    """``(B, 3, H, W)`` raw BGR -> ``dets (B, N, 5)``, ``keypoints (B, N, K, 3)`` (the module docstring's graph).

    Runs the same computation in PyTorch (NMS through :func:`posekit.models.heads.rtmo.nms_xyxy`) as the exported
    ONNX graph in onnxruntime. The priors are fixed for ``input_size = (W, H)``.
    """

    def __init__(self, model: nn.Module, input_size: Sequence[int], score_thr: Optional[float] = None,
                 nms_thr: Optional[float] = None, max_output_boxes_per_class: int = 200, pre_top_k: int = 2000,
                 keep_top_k: int = 50) -> None:
        super().__init__()
        from posekit.models.heads.rtmo import mlvl_priors

        self.model = model
        w, h = (int(v) for v in input_size)
        if w % 32 or h % 32 or w <= 0 or h <= 0:
            raise ValueError(f"RTMO export input_size must be positive multiples of 32, got {[w, h]}")
        self.input_size = (w, h)
        head = model.head
        sizes = [(h // s, w // s) for s in head.featmap_strides]
        priors, strides = mlvl_priors(sizes, head.featmap_strides)
        self.register_buffer("priors", priors, persistent=False)
        self.register_buffer("strides", strides, persistent=False)
        cfg = model.config
        self.score_thr = float(cfg.score_thr if score_thr is None else score_thr)
        self.nms_thr = float(cfg.nms_thr if nms_thr is None else nms_thr)
        self.max_out = int(max_output_boxes_per_class)
        self.pre_top_k = int(pre_top_k)
        self.keep_top_k = int(keep_top_k)
        if min(self.max_out, self.keep_top_k) < 1:
            raise ValueError("max_output_boxes_per_class and keep_top_k must be >= 1")

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        from posekit.models.heads.rtmo import bbox_xyxy_to_cs

        head = self.model.head
        raw = self.model(x, with_kpt_offsets=False)
        scores = head.flatten_levels(raw["cls_scores"]).sigmoid().max(dim=-1).values  # (B, P)
        boxes = head.decode_boxes(head.flatten_levels(raw["bbox_preds"]), self.priors, self.strides)
        vis = head.flatten_levels(raw["kpt_vis"]).sigmoid()
        pose = head.flatten_levels(raw["pose_feats"])
        B = x.shape[0]
        priors = self.priors[None].expand(B, -1, -1)
        if 0 < self.pre_top_k < self.priors.shape[0]:
            top = scores.topk(self.pre_top_k, dim=1).indices  # (B, T)
            bidx = torch.arange(B, device=x.device)[:, None]
            scores, boxes, vis, pose, priors = (scores[bidx, top], boxes[bidx, top], vis[bidx, top],
                                                pose[bidx, top], priors[bidx, top])
        sel = _NonMaxSuppression.apply(boxes, scores[:, None, :], self.max_out, self.nms_thr, self.score_thr)
        bi, pi = sel[:, 0], sel[:, 2]
        det_boxes = boxes[bi, pi]
        dets = torch.cat((det_boxes, scores[bi, pi][:, None]), dim=1)  # (M, 5)
        cs = bbox_xyxy_to_cs(det_boxes, head.bbox_padding)
        # the DCC without its "no boxes" shortcut: a Python branch would be traced for whichever case the export's
        # example input happens to give (a trained model finds nobody in the random example), fixing it in the graph
        kxy = head.dcc.decode(*head.dcc.probabilities(pose[bi, pi], cs, priors[bi, pi]), cs)  # (M, K, 2)
        kpts = torch.cat((kxy, vis[bi, pi][..., None]), dim=-1)  # (M, K, 3)
        # one row per selected box in every image (zero where it belongs to another image), one zero row
        own = (bi[None, :] == torch.arange(B, device=x.device)[:, None]).to(dets.dtype)  # (B, M)
        dets_b = torch.cat((dets[None] * own[..., None], dets.new_zeros((B, 1, 5))), dim=1)
        kpts_b = torch.cat((kpts[None] * own[..., None, None], kpts.new_zeros((B, 1) + tuple(kpts.shape[1:]))),
                           dim=1)
        order = torch.argsort(dets_b[..., 4], dim=1, descending=True)[:, : self.keep_top_k]
        bidx = torch.arange(B, device=x.device)[:, None]
        return dets_b[bidx, order], kpts_b[bidx, order]


def rtmo_card_dict(model: nn.Module, onnx_file: str, name: str, input_size: Sequence[int],
                   score_thr: float, nms_thr: float, description: Optional[str] = None) -> dict:
    """The ``kind: rtmo`` model card (a plain dict) of an exported RTMO: the official cards' interface, with
    ``weights.path`` (relative to the card) and ``nms_inside: true``."""
    w, h = (int(v) for v in input_size)
    k = int(model.config.num_keypoints)
    schema = {17: "coco17", 14: "crowdpose14", 16: "mpii16", 18: "openpose18"}.get(k)
    if schema is None:
        raise ValueError(f"no built-in keypoint schema with {k} keypoints for the card; known: 14, 16, 17, 18")
    return {
        "name": name,
        "kind": "rtmo",
        "description": description or f"posekit RTMO ({k} keypoints, {w}x{h}) exported by posekit; MMDeploy interface",
        "weights": {"path": str(onnx_file)},
        "input": {"name": INPUT_NAME, "size": [w, h], "layout": "NCHW", "color": "bgr", "mean": [0, 0, 0],
                  "std": [1, 1, 1], "resize": "letterbox", "pad_value": 114},
        "outputs": {"names": list(OUTPUT_NAMES),
                    "layouts": {"dets": "B,N,5 (x1,y1,x2,y2,score in input pixels)",
                                "keypoints": "B,N,K,3 (x,y,score in input pixels)"}},
        "schema": schema,
        "thresholds": {"score": float(score_thr), "nms": float(nms_thr), "nms_inside": True},
    }


def export_rtmo_onnx(model: nn.Module, path: str | Path, input_size: Optional[Sequence[int]] = None, *,
                     score_thr: Optional[float] = None, nms_thr: Optional[float] = None,
                     max_output_boxes_per_class: int = 200, pre_top_k: int = 2000, keep_top_k: int = 50,
                     opset: int = DEFAULT_OPSET, name: Optional[str] = None, write_card: bool = True,
                     check: bool = True, atol: float = 1e-3) -> Tuple[Path, Optional[Path]]:
    """Write an RTMO ONNX file with the MMDeploy interface (module docstring) and its model card.

    Args:
        model: a :class:`~posekit.models.rtmo.RTMO` (its weights are not changed; exported in eval mode).
        path: the ``.onnx`` file (parent folders are created); the card goes to the same path with ``.yaml``.
        input_size: ``(W, H)``, multiples of 32 (default: ``model.config.input_size``).
        score_thr, nms_thr: the in-graph thresholds (default: ``model.config.score_thr`` / ``nms_thr``).
        max_output_boxes_per_class, pre_top_k, keep_top_k: MMDeploy's post-processing settings (200, 2000, 50).
        opset: ONNX opset (NonMaxSuppression needs >= 11).
        name: card name (default: the file's stem).
        write_card: also write the ``kind: rtmo`` card.
        check: run the file in onnxruntime on a random image and compare with the PyTorch wrapper.
        atol: the largest allowed ``|onnx - torch|`` on ``dets`` and ``keypoints`` for ``check`` (plus 1e-6 of the
            value, for the huge boxes of untrained weights).

    Returns:
        ``(onnx_path, card_path or None)``.

    Raises:
        ValueError: bad arguments; RuntimeError: the export fails or ``check`` finds a difference above ``atol``.
    """
    import yaml

    if not hasattr(model, "head") or not hasattr(model, "config") or not hasattr(model.head, "dcc"):
        raise ValueError(f"export_rtmo_onnx expects a posekit RTMO model, got {type(model).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"output file must end in .onnx, got {path}")
    if int(opset) < 11:
        raise ValueError(f"opset must be >= 11 (NonMaxSuppression), got {opset}")
    size = tuple(int(v) for v in (input_size or model.config.input_size))
    was = model.training
    model.eval()
    wrapper = RTMOExportWrapper(model, size, score_thr, nms_thr, max_output_boxes_per_class, pre_top_k,
                                keep_top_k).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    example = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (1, 3, size[1], size[0]))
                               .astype(np.float32)).to(device)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, (example,), str(path), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                dynamic_axes={INPUT_NAME: {0: "batch"}, "dets": {0: "batch", 1: "num_dets"},
                              "keypoints": {0: "batch", 1: "num_dets"}},
                opset_version=int(opset), do_constant_folding=True, dynamo=False,
            )
    except ModuleNotFoundError as e:
        raise RuntimeError(f"ONNX export needs the {e.name!r} package (pip install onnx)") from None
    finally:
        model.train(was)
    card_path = None
    if write_card:
        card = rtmo_card_dict(model, path.name, name or path.stem, size, wrapper.score_thr, wrapper.nms_thr)
        card_path = path.with_suffix(".yaml")
        card_path.write_text("# written by posekit export: a kind 'rtmo' model card for " + path.name + "\n"
                             + yaml.safe_dump(card, sort_keys=False, default_flow_style=None, width=110))
    if check:
        err = max_abs_difference(wrapper, path, rtol=1e-6)
        if not err <= atol:
            raise RuntimeError(f"{path}: ONNX dets/keypoints differ from PyTorch by {err:.3g} > {atol} "
                               f"(+ 1e-6 relative)")
    return path, card_path


@torch.no_grad()
def max_abs_difference(wrapper: RTMOExportWrapper, onnx_path: str | Path, batch: Optional[np.ndarray] = None,
                       seed: int = 0, rtol: float = 0.0) -> float:
    """Largest ``|onnx - torch| - rtol |torch|`` over ``dets`` and ``keypoints`` for ``batch`` (default: one random
    BGR image), rows paired by their dets. Different output shapes count as infinity."""
    import onnxruntime as ort

    w, h = wrapper.input_size
    if batch is None:
        batch = np.random.default_rng(seed).uniform(0, 255, (1, 3, h, w)).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
    dev = next(wrapper.parameters()).device
    was = wrapper.training
    wrapper.eval()
    try:
        ref = [t.cpu().numpy() for t in wrapper(torch.from_numpy(batch).to(dev))]
    finally:
        wrapper.train(was)
    return _matched_error(got[0], got[1], ref[0], ref[1], rtol)


def _matched_error(d1: np.ndarray, k1: np.ndarray, d2: np.ndarray, k2: np.ndarray, rtol: float = 0.0,
                   tie_tol: float = 1e-5) -> float:
    """Largest ``|a - b| - rtol |b|`` between two ``(dets, keypoints)`` outputs, rows paired per image by their
    dets (rows of near-equal score may come in either order); infinity when the shapes differ.

    Ties at the ``keep_top_k`` cut: when more boxes share the lowest kept score than places are left (random
    weights give many equal scores), onnxruntime and PyTorch may keep different ones of them. Rows whose score is
    within ``tie_tol`` of that lowest score are therefore only required to exist in equal number with that score in
    both outputs; every row above it must be paired."""
    if d1.shape != d2.shape or k1.shape != k2.shape:
        return float("inf")
    err = 0.0
    for b in range(d1.shape[0]):
        p1, p2 = d1[b, :, 4] > 0, d2[b, :, 4] > 0
        if p1.sum() != p2.sum() or np.any(d1[b][~p1]) or np.any(d2[b][~p2]) or np.any(k1[b][~p1]) \
                or np.any(k2[b][~p2]):
            return float("inf")
        a, c, ka, kc = d1[b][p1], d2[b][p2], k1[b][p1], k2[b][p2]
        if not len(a):
            continue
        # a cut by keep_top_k: the last row is not the appended zero row; rows tied with the lowest kept score
        # may differ between the two runtimes
        if d1.shape[1] and d1[b, -1, 4] > 0:
            low = min(a[:, 4].min(), c[:, 4].min())
            t1, t2 = a[:, 4] <= low + tie_tol, c[:, 4] <= low + tie_tol
            if t1.sum() != t2.sum():
                return float("inf")
            err = max(err, float(np.abs(np.sort(a[t1, 4]) - np.sort(c[t2, 4])).max()) if t1.any() else 0.0)
            a, ka, c, kc = a[~t1], ka[~t1], c[~t2], kc[~t2]
            if not len(a):
                continue
        j = np.abs(a[:, None, :] - c[None, :, :]).max(-1).argmin(1)
        if len(set(j.tolist())) != len(j):
            return float("inf")
        dd = np.abs(a - c[j]) - rtol * np.abs(c[j])
        dk = np.abs(ka - kc[j]) - rtol * np.abs(kc[j])
        err = max(err, float(dd.max()), float(dk.max()))
    return err
