"""Export a posekit top-down model (:class:`~posekit.models.topdown.TopDownModel`) to ONNX plus a model card.

The file has the interface of the official RTMPose MMDeploy exports (the ``rtmpose-*`` built-in cards), so one
``kind: simcc`` / ``kind: heatmap`` card and :class:`~posekit.pipelines.topdown.TopDownPipeline` run both:

* input ``input`` ``(N, 3, H, W)`` float32 person crops, **already normalised** in the model's colour order
  (``RGB`` for every preset: MMPose's ``bgr_to_rgb=True``, ImageNet mean/std). Normalisation is *not* inside the
  graph, as in the official files; the card carries ``color``, ``mean`` and ``std``. ``H`` and ``W`` are fixed
  (the model's ``input_size``), ``N`` is dynamic;
* SimCC models (RTMPose): outputs ``simcc_x`` ``(N, K, W * split_ratio)`` and ``simcc_y`` ``(N, K, H *
  split_ratio)`` (the raw logits);
* heatmap models (SimpleBaseline, ViTPose, CPM, Hourglass, CPN): output ``heatmaps`` ``(N, K, h, w)`` (the last
  stage for multi-stage models; a CPM background channel is dropped).

``FILE.yaml`` beside ``FILE.onnx`` is the card: ``weights.path: FILE.onnx`` (relative to the card), ``resize: crop``,
box padding 1.25, the split ratio (SimCC) or ``udp`` (heatmaps), the keypoint schema.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ["TopDownExportWrapper", "topdown_card_dict", "export_topdown_onnx", "topdown_output_names",
           "schema_for_keypoints", "INPUT_NAME"]

INPUT_NAME = "input"
DEFAULT_OPSET = 17
_SCHEMAS = {17: "coco17", 14: "crowdpose14", 16: "mpii16", 18: "openpose18"}


def _check_topdown(model: nn.Module) -> None:
    from posekit.models.topdown import TopDownModel

    if not isinstance(model, TopDownModel):
        raise ValueError(f"expected a posekit TopDownModel (SimpleBaseline, ViTPose, RTMPose, CPM, ...), got "
                         f"{type(model).__name__}")


def _is_simcc(model: nn.Module, decoder: Optional[str]) -> bool:
    from posekit.codecs.simcc import SimCCCodec

    return isinstance(model.codec(decoder), SimCCCodec)


def topdown_output_names(model: nn.Module, decoder: Optional[str] = None) -> Tuple[str, ...]:
    """``("simcc_x", "simcc_y")`` for a SimCC model, ``("heatmaps",)`` for a heatmap model."""
    _check_topdown(model)
    return ("simcc_x", "simcc_y") if _is_simcc(model, decoder) else ("heatmaps",)


def schema_for_keypoints(k: int) -> str:
    """The built-in schema name with ``k`` keypoints (17 -> ``coco17``, 14, 16, 18)."""
    if k not in _SCHEMAS:
        raise ValueError(f"no built-in keypoint schema with {k} keypoints for the card; known: "
                         f"{sorted(_SCHEMAS)} (pass schema=)")
    return _SCHEMAS[k]


class TopDownExportWrapper(nn.Module):
    """``(N, 3, H, W)`` normalised crops -> ``heatmaps (N, K, h, w)`` or ``(simcc_x, simcc_y)``.

    Args:
        model: a :class:`~posekit.models.topdown.TopDownModel` (eval mode is the caller's business).
        decoder: the decoder of a multi-decoder model (None for a single head).
    """

    def __init__(self, model: nn.Module, decoder: Optional[str] = None) -> None:
        super().__init__()
        _check_topdown(model)
        self.model = model
        self.decoder = decoder
        model.codec(decoder)  # validates the decoder name
        self.simcc = _is_simcc(model, decoder)
        self.drop_background = bool(getattr(model.codec(decoder), "background", False))
        self.output_names = topdown_output_names(model, decoder)

    def forward(self, x: torch.Tensor):
        raw = self.model(x, self.decoder) if self.decoder is not None else self.model(x)
        if self.simcc:
            return raw["pred_x"], raw["pred_y"]
        hm = raw["heatmaps"]
        return hm[:, :-1] if self.drop_background else hm


def topdown_card_dict(model: nn.Module, onnx_file: str, name: str, decoder: Optional[str] = None,
                      schema: Optional[str] = None, box_padding: float = 1.25,
                      description: Optional[str] = None) -> dict:
    """The ``kind: simcc`` / ``kind: heatmap`` model card (a plain dict) for an exported top-down model.

    Args:
        model: the :class:`~posekit.models.topdown.TopDownModel` (codec, mean/std, colour order).
        onnx_file: ``weights.path`` (relative to the card file).
        name: card name.
        decoder: the decoder of a multi-decoder model.
        schema: keypoint schema name (default: the built-in schema with the model's number of keypoints).
        box_padding: the crops' box enlargement (1.25, MMPose's TopdownAffine).
    """
    _check_topdown(model)
    codec = model.codec(decoder)
    W, H = (int(v) for v in codec.input_size)
    simcc = _is_simcc(model, decoder)
    fi = model.flip_indices[model._key(decoder)]
    k = None
    if fi is not None:
        k = len(fi) - (1 if getattr(codec, "background", False) else 0)
    if schema is None:
        if k is None:
            raise ValueError("cannot tell the number of keypoints of this model: pass schema=")
        schema = schema_for_keypoints(k)
    mean = [float(f"{v:.6g}") for v in model.mean.flatten().tolist()]  # float32 buffers -> the config's values
    std = [float(f"{v:.6g}") for v in model.std.flatten().tolist()]
    color = "rgb" if model.bgr_to_rgb else "bgr"
    preset = getattr(model, "preset", None) or "custom"
    card = {
        "name": name,
        "kind": "simcc" if simcc else "heatmap",
        "description": description or (f"posekit top-down {preset} exported by posekit export; {W}x{H} (w x h) "
                                       f"crops, normalised {color.upper()} NCHW input (MMDeploy interface)"),
        "weights": {"path": str(onnx_file)},
        "input": {"name": INPUT_NAME, "size": [W, H], "layout": "NCHW", "color": color, "mean": mean, "std": std,
                  "resize": "crop"},
    }
    if simcc:
        r = float(codec.split_ratio)
        card["outputs"] = {"names": ["simcc_x", "simcc_y"],
                           "layouts": {"simcc_x": f"N,K,{int(round(W * r))}", "simcc_y": f"N,K,{int(round(H * r))}"}}
    else:
        w, h = codec.heatmap_size
        card["outputs"] = {"names": ["heatmaps"], "layouts": {"heatmaps": f"N,K,{h},{w}"}}
    card["schema"] = schema
    card["thresholds"] = {"score": 0.3, "nms": 0.65}
    if simcc:
        card["simcc"] = {"split_ratio": float(codec.split_ratio), "box_padding": float(box_padding)}
    else:
        card["heatmap"] = {"udp": codec.kind == "udp", "dark": bool(codec.unbiased),
                           "blur_kernel_size": int(codec.blur_kernel_size), "box_padding": float(box_padding)}
    return card


def export_topdown_onnx(model: nn.Module, out: str | Path, *, name: Optional[str] = None,
                        decoder: Optional[str] = None, schema: Optional[str] = None, opset: int = DEFAULT_OPSET,
                        write_card: bool = True, check: bool = True, atol: float = 1e-4
                        ) -> Tuple[Path, Optional[Path]]:
    """Write ``out`` (``.onnx``, the module docstring's interface) and its card ``out`` with suffix ``.yaml``.

    Args:
        model: a :class:`~posekit.models.topdown.TopDownModel` (exported in eval mode; weights unchanged).
        out: the ONNX file (parent folders are created).
        name: card name (default: the file's stem); decoder, schema: see :func:`topdown_card_dict`.
        opset: ONNX opset.
        write_card: also write the card.
        check: run the file in onnxruntime on a random batch of 2 crops and compare with PyTorch.
        atol: the largest allowed ``|onnx - torch| / max(1, max |torch|)`` of the check (absolute for outputs of
            magnitude <= 1, relative to the largest output beyond).

    Returns:
        ``(onnx_path, card_path or None)``.

    Raises:
        ValueError: not a top-down model, a bad file name; RuntimeError: the export fails or the check finds a
        difference above ``atol``.
    """
    import yaml

    _check_topdown(model)
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"output file must end in .onnx, got {out}")
    W, H = (int(v) for v in model.codec(decoder).input_size)
    wrapper = TopDownExportWrapper(model, decoder)
    names = list(wrapper.output_names)
    out.parent.mkdir(parents=True, exist_ok=True)
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    example = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, H, W)).astype(np.float32)).to(device)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, (example,), str(out), input_names=[INPUT_NAME], output_names=names,
                dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}},
                opset_version=int(opset), do_constant_folding=True, dynamo=False,
            )
    except ModuleNotFoundError as e:
        raise RuntimeError(f"ONNX export needs the {e.name!r} package (pip install onnx)") from None
    finally:
        model.train(was)
    card_path = None
    if write_card:
        card = topdown_card_dict(model, out.name, name or out.stem, decoder=decoder, schema=schema)
        card_path = out.with_suffix(".yaml")
        card_path.write_text(f"# written by posekit export: a kind '{card['kind']}' model card for {out.name}\n"
                             + yaml.safe_dump(card, sort_keys=False, default_flow_style=None, width=110))
    if check:
        err = max_abs_difference(model, out, decoder=decoder)
        if not err <= atol:
            raise RuntimeError(f"{out}: ONNX outputs differ from PyTorch by {err:.3g} (relative to max(1, the "
                               f"largest output)) > {atol}")
    return out, card_path


@torch.no_grad()
def torch_outputs(model: nn.Module, batch: np.ndarray, decoder: Optional[str] = None) -> dict:
    """The exported graph's computation in PyTorch: normalised ``(N, 3, H, W)`` -> ``{output name: array}``."""
    wrapper = TopDownExportWrapper(model, decoder)
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        y = wrapper(torch.as_tensor(np.asarray(batch, np.float32), device=device))
    finally:
        model.train(was)
    y = y if isinstance(y, tuple) else (y,)
    return {n: t.float().cpu().numpy() for n, t in zip(wrapper.output_names, y)}


def max_abs_difference(model: nn.Module, onnx_path: str | Path, batch: Optional[np.ndarray] = None,
                       decoder: Optional[str] = None, seed: int = 0) -> float:
    """Largest ``|onnx - torch| / max(1, max |torch|)`` over the outputs for ``batch`` (default: 2 random
    normalised crops)."""
    import onnxruntime as ort

    W, H = (int(v) for v in model.codec(decoder).input_size)
    if batch is None:
        batch = np.random.default_rng(seed).standard_normal((2, 3, H, W)).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    want = torch_outputs(model, batch, decoder)
    got = dict(zip(want, sess.run(list(want), {INPUT_NAME: batch})))
    err = 0.0
    for n in want:
        if got[n].shape != want[n].shape:
            return float("inf")
        scale = max(1.0, float(np.abs(want[n]).max()))
        err = max(err, float(np.abs(got[n] - want[n]).max()) / scale)
    return err
