"""Export a trained posekit OpenPose model to ONNX with a model card that :mod:`posekit.runtime` reads.

:func:`export_openpose_onnx` writes two files side by side:

* ``FILE.onnx``: input ``image`` ``(N, 3, H, W)`` float32, **raw BGR 0..255** (the ``(x - mean) / std``
  normalisation of the model is baked into the graph), dynamic ``N``, ``H``, ``W``; output ``maps``
  ``(N, 19 + 38, ceil(H/8), ceil(W/8))``: the last stage's confidence maps (18 parts + background) then its 38
  PAF channels (CMU order);
* ``FILE.yaml``: a ``kind: paf`` model card (``weights.path: FILE.onnx``, relative to the card; ``layout: NCHW``,
  ``color: bgr``, ``mean: [0, 0, 0]``, ``std: [1, 1, 1]``, ``resize: keep-aspect-height`` at the training input
  height, part names, limbs, PAF channel map, ``to_coco17`` and the association parameters).

``PoseEstimator("FILE.yaml")`` then runs the file through :class:`posekit.pipelines.bottomup.PafPipeline`, the same
association that :func:`posekit.pipelines.bottomup.torch_paf_pipeline` uses on the PyTorch model (through
:func:`torch_maps`, this graph's computation in PyTorch).

Uses ``torch.onnx.export`` with the TorchScript exporter (``dynamo=False``), which needs the ``onnx`` package.
"""

from __future__ import annotations

import warnings
from dataclasses import fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from posekit.models.checkpoints import check_openpose_model

__all__ = [
    "MapsExportWrapper",
    "export_openpose_onnx",
    "openpose_card_dict",
    "torch_maps",
    "DEFAULT_OPSET",
]

DEFAULT_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "maps"


class MapsExportWrapper(nn.Module):
    """``(N, 3, H, W)`` raw BGR 0..255 -> ``(N, num_heatmaps + num_pafs, h, w)`` maps of an OpenPose model.

    The model's ``(x - mean) / std`` is applied inside, so the exported graph takes plain pixels.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(model.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(model.std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.model((x - self.mean) * self.inv_std)
        return torch.cat([raw["heatmaps"], raw["pafs"]], dim=1)


def _paf_params_dict(params) -> dict:
    """``PafParams`` (or a mapping of its fields) -> plain YAML-able dict (only fields that differ from the
    defaults, tuples as lists)."""
    from posekit.association.params import PafParams

    if params is None:
        return {}
    p = params if isinstance(params, PafParams) else PafParams.from_dict(dict(params), "params")
    default = PafParams()
    out = {}
    for f in fields(PafParams):
        v = getattr(p, f.name)
        if v != getattr(default, f.name) and f.name not in ("input_mode", "input_size", "target_height"):
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def openpose_card_dict(model: nn.Module, onnx_file: str, name: str, input_size: Sequence[int],
                       params=None, description: str | None = None) -> dict:
    """The ``kind: paf`` model card (a plain dict) for an exported OpenPose model.

    Args:
        model: the OpenPose model (its codec gives limbs and PAF channels, its schema the part names).
        onnx_file: ``weights.path`` (relative to the card file).
        name: card name.
        input_size: ``(w, h)``: the card's ``input.size``; images are resized to height ``h`` keeping the aspect
            ratio (width a multiple of the stride).
        params: :class:`~posekit.association.params.PafParams` (or a dict of its fields) for the association;
            written to ``paf.params`` (the input-size fields are taken from ``input``).
    """
    from posekit.schema import COCO17_TO_OPENPOSE18_INDEX

    check_openpose_model(model)
    codec = model.codec
    w, h = (int(v) for v in input_size)
    parts = list(model.schema.keypoints)
    to_coco = list(COCO17_TO_OPENPOSE18_INDEX) if len(parts) == 18 else []
    return {
        "name": name,
        "kind": "paf",
        "description": description or (f"posekit OpenPose ({getattr(model, 'preset', None) or 'custom'}) exported "
                                       f"by posekit export; raw BGR 0..255 NCHW input, normalisation in the graph"),
        "weights": {"path": str(onnx_file)},
        "input": {
            "name": INPUT_NAME,
            "size": [w, h],
            "layout": "NCHW",
            "color": "bgr",
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "resize": "keep-aspect-height",
            "size_multiple": int(model.stride),
        },
        "outputs": {
            "names": [OUTPUT_NAME],
            "layouts": {OUTPUT_NAME: f"N,{model.num_heatmaps}+{model.num_pafs},H/{model.stride},W/{model.stride} "
                                     f"(part maps incl. background, then PAF channels)"},
        },
        "schema": "coco17" if to_coco else model.schema.name,
        "thresholds": {"score": 0.05, "nms": 0.65},
        "paf": {
            "part_names": parts,
            "limbs": [list(map(int, l)) for l in codec.limbs],
            "paf_channels": [list(map(int, c)) for c in codec.paf_channels],
            "heatmap_channels": [0, int(model.num_heatmaps)],
            "paf_offset": int(model.num_heatmaps),
            "stride": int(model.stride),
            **({"to_coco17": to_coco} if to_coco else {}),
            "params": _paf_params_dict(params),
        },
    }


def export_openpose_onnx(model: nn.Module, out: str | Path, *, input_size: Sequence[int] = (192, 192),
                         params=None, name: str | None = None, opset: int = DEFAULT_OPSET,
                         check: bool = True, atol: float = 1e-4) -> tuple[Path, Path]:
    """Write ``out`` (``.onnx``) and its model card ``out`` with suffix ``.yaml``.

    Args:
        model: a posekit OpenPose model (put in eval mode; its weights are not changed).
        out: the ONNX file to write (parent folders are created).
        input_size: ``(w, h)`` of the example input and the card's ``input.size`` (dims stay dynamic).
        params: association parameters for the card (``PafParams`` or dict); None: the pipeline's defaults.
        name: card name (default: the file's stem).
        opset: ONNX opset.
        check: run the file in onnxruntime on a random image and compare with PyTorch.
        atol: the largest allowed ``|onnx - torch|`` of the check.

    Returns:
        ``(onnx_path, card_path)``.

    Raises:
        RuntimeError: the export fails or the check finds a difference above ``atol``.
    """
    import yaml

    check_openpose_model(model)
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"output file must end in .onnx, got {out}")
    w, h = (int(v) for v in input_size)
    if w < 1 or h < 1:
        raise ValueError(f"input_size must be positive (w, h), got {list(input_size)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    wrapper = MapsExportWrapper(model).eval()
    device = next(model.parameters()).device
    example = torch.full((1, 3, h, w), 128.0, device=device)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper, (example,), str(out), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                              OUTPUT_NAME: {0: "batch", 2: "map_height", 3: "map_width"}},
                opset_version=int(opset), do_constant_folding=True, dynamo=False,
            )
    except ModuleNotFoundError as e:
        raise RuntimeError(f"ONNX export needs the {e.name!r} package (pip install onnx)") from None
    finally:
        model.train(was_training)
    card = openpose_card_dict(model, out.name, name or out.stem, (w, h), params=params)
    card_path = out.with_suffix(".yaml")
    card_path.write_text("# written by posekit export: a kind 'paf' model card for " + out.name + "\n"
                         + yaml.safe_dump(card, sort_keys=False, default_flow_style=None, width=110))
    if check:
        err = max_abs_difference(model, out, (w + 5, h + 3))
        if not err <= atol:
            raise RuntimeError(f"{out}: ONNX maps differ from PyTorch by {err:.3g} > {atol}")
    return out, card_path


def max_abs_difference(model: nn.Module, onnx_path: str | Path, input_size: Sequence[int], seed: int = 0) -> float:
    """Largest ``|onnx - torch|`` of the maps on a random ``(w, h)`` BGR image (raw 0..255)."""
    import onnxruntime as ort

    w, h = (int(v) for v in input_size)
    x = np.random.default_rng(seed).uniform(0, 255, (1, 3, h, w)).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    want = torch_maps(model, x)
    if got.shape != want.shape:
        return float("inf")
    return float(np.abs(got - want).max())


def torch_maps(model: nn.Module, batch: np.ndarray) -> np.ndarray:
    """The exported graph's computation in PyTorch: ``(N, 3, H, W)`` raw BGR float -> ``(N, C, h, w)`` maps."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            y = MapsExportWrapper(model).to(device)(torch.as_tensor(np.asarray(batch, np.float32), device=device))
    finally:
        model.train(was_training)
    return y.float().cpu().numpy()
