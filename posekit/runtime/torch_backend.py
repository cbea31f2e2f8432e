"""Run PyTorch models through the same pipelines as ONNX files.

:class:`TorchModel` has the interface of :class:`posekit.runtime.onnx.OnnxModel` (``run(batch, outputs=None) ->
{name: array}``, ``input_name``, ``output_names``, ``fixed_batch``, ``check(card)``). It runs a module that has
the interface of an exported file: the **export wrapper** of the model's family, so the PyTorch computation is
exactly the exported graph's:

==========  ============================================================  =====================================
family      wrapper                                                       card kind (input)
==========  ============================================================  =====================================
top-down    :class:`posekit.export.topdown.TopDownExportWrapper`           ``simcc`` / ``heatmap`` (normalised)
OpenPose    :class:`posekit.export.onnx.MapsExportWrapper`                 ``paf`` (raw BGR 0..255, NCHW)
RTMO        :class:`posekit.export.rtmo.RTMOExportWrapper`                 ``rtmo`` (raw BGR 0..255, letterbox)
==========  ============================================================  =====================================

Weights come from :func:`posekit.models.checkpoints.load_preset` (every family's checkpoints);
:func:`card_for_model` builds the card the exporter would write; :func:`torch_runner` wraps a model for a card
(checking that the card fits it). ``PoseEstimator`` uses them for ``.pth`` / ``.pt`` weights (see
docs/inference.md).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from posekit.models.checkpoints import model_family
from posekit.runtime.cards import ModelCard, card_from_dict

__all__ = ["TorchModel", "torch_runner", "card_for_model", "card_fits_model"]

class TorchModel:
    """An :class:`~posekit.runtime.onnx.OnnxModel` look-alike that runs a PyTorch module.

    Args:
        module: ``batch tensor -> tensor | tuple of tensors | dict name -> tensor`` (an export wrapper); put in
            eval mode.
        input_name: the name the card expects (``input``, ``image``).
        output_names: names of the module's outputs, in order (for tensor / tuple outputs).
        device: torch device (default: the module's).
        threads: ``torch.set_num_threads`` (process-wide in PyTorch); None leaves it.
        max_batch: run batches larger than this in chunks (None: in one go).

    Attributes: input_name, input_names, input_shape (``[None] * 4``), output_names, fixed_batch (None),
    providers (``["torch:<device>"]``), path, module.
    """

    def __init__(self, module, input_name: str = "input", output_names: Sequence[str] = ("output",),
                 device=None, threads: Optional[int] = None, max_batch: Optional[int] = None,
                 path: str = "<torch>") -> None:
        import torch

        if not isinstance(module, torch.nn.Module):
            raise ValueError(f"TorchModel needs a torch.nn.Module, got {type(module).__name__}")
        if threads is not None:
            if int(threads) < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(int(threads))
        if device is None:
            p = next(module.parameters(), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.input_name = str(input_name)
        self.input_names = [self.input_name]
        self.input_shape = [None, None, None, None]
        self.output_names = [str(n) for n in output_names]
        self.fixed_batch = None
        self.max_batch = None if max_batch is None else int(max_batch)
        self.providers = [f"torch:{self.device}"]
        self.path = path

    def check(self, card: ModelCard) -> None:
        """The card must read this runner's input and outputs."""
        if card.input_name != self.input_name:
            raise ValueError(f"model card '{card.name}' ({card.source}) expects input {card.input_name!r}; the "
                             f"PyTorch runner takes {self.input_name!r}")
        missing = [n for n in card.output_names if n not in self.output_names]
        if missing:
            raise ValueError(f"model card '{card.name}' ({card.source}) reads outputs {missing}; the PyTorch "
                             f"runner gives {self.output_names}")

    def _forward(self, x) -> dict:
        y = self.module(x)
        if isinstance(y, Mapping):
            return dict(y)
        if not isinstance(y, (tuple, list)):
            y = (y,)
        if len(y) != len(self.output_names):
            raise RuntimeError(f"the PyTorch module returned {len(y)} outputs, the runner names "
                               f"{len(self.output_names)}: {self.output_names}")
        return dict(zip(self.output_names, y))

    def run(self, batch: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run on a float32 batch (the card's layout); returns ``{output name: float32 array}``."""
        import torch

        batch = np.ascontiguousarray(batch, dtype=np.float32)
        names = list(outputs) if outputs else list(self.output_names)
        step = self.max_batch or max(len(batch), 1)
        parts: list[dict] = []
        with torch.inference_mode():
            for s in range(0, max(len(batch), 1), step):
                x = torch.from_numpy(batch[s:s + step]).to(self.device)
                y = self._forward(x)
                missing = [n for n in names if n not in y]
                if missing:
                    raise KeyError(f"the PyTorch module has no outputs {missing}; it gives {sorted(y)}")
                parts.append({n: y[n].detach().float().cpu().numpy() for n in names})
        if len(parts) == 1:
            return parts[0]
        return {n: np.concatenate([p[n] for p in parts], axis=0) for n in names}

    def __repr__(self) -> str:
        return (f"TorchModel({type(self.module).__name__}, input={self.input_name}, outputs={self.output_names}, "
                f"device={self.device})")


# ---------------------------------------------------------------------------------------------- cards
def card_for_model(model, name: Optional[str] = None, input_size: Optional[Sequence[int]] = None,
                   paf_params=None, weights_path: str = "<torch>") -> ModelCard:
    """The card :mod:`posekit.export` would write for ``model`` (top-down, RTMO or OpenPose).

    Args:
        model: the PyTorch model.
        name: card name (default: ``model.preset``, else ``"torch-model"``).
        input_size: ``(w, h)``: OpenPose (default 192x192, the exporter's) and RTMO (default
            ``model.config.input_size``); top-down models use their codec's size.
        paf_params: OpenPose association parameters for ``paf.params``.
        weights_path: ``weights.path`` of the card (not read by the PyTorch backend).
    """
    family = model_family(model)
    name = name or getattr(model, "preset", None) or "torch-model"
    if family == "topdown":
        from posekit.export.topdown import topdown_card_dict

        d = topdown_card_dict(model, weights_path, name)
    elif family == "rtmo":
        from posekit.export.rtmo import rtmo_card_dict

        size = tuple(input_size or model.config.input_size)
        d = rtmo_card_dict(model, weights_path, name, size, model.config.score_thr, model.config.nms_thr)
    else:
        from posekit.export.onnx import openpose_card_dict

        d = openpose_card_dict(model, weights_path, name, tuple(input_size or (192, 192)), params=paf_params)
    return card_from_dict(d, source=f"<card generated for PyTorch model {name!r}>")


def _close(a, b) -> bool:
    return len(a) == len(b) and all(abs(float(x) - float(y)) <= 1e-3 * max(1.0, abs(float(y))) for x, y in zip(a, b))


def card_fits_model(card: ModelCard, model) -> Optional[str]:
    """None when ``card`` describes ``model``'s export interface, else the reason it does not."""
    from posekit.schema import get_schema

    family = model_family(model)
    if card.input_layout != "NCHW":
        return f"input.layout is {card.input_layout}, the PyTorch model takes NCHW"
    if family == "topdown":
        from posekit.export.topdown import topdown_output_names

        kind = "simcc" if topdown_output_names(model) == ("simcc_x", "simcc_y") else "heatmap"
        if card.kind != kind:
            return f"kind is {card.kind!r}, the model is a {kind!r} model"
        codec = model.codec(None) if not model.multi else None
        if codec is None:
            return "the model has several decoders (build the card with posekit.export.topdown.topdown_card_dict)"
        if tuple(card.input_size) != tuple(codec.input_size):
            return f"input.size is {list(card.input_size)}, the model's input is {list(codec.input_size)}"
        color = "rgb" if model.bgr_to_rgb else "bgr"
        mean, std = model.mean.flatten().tolist(), model.std.flatten().tolist()
        if card.color != color or not _close(card.mean, mean) or not _close(card.std, std):
            return (f"input is {card.color} mean {list(card.mean)} std {list(card.std)}, the model takes {color} "
                    f"mean {[round(v, 3) for v in mean]} std {[round(v, 3) for v in std]}")
        if kind == "simcc" and abs(card.simcc.split_ratio - float(codec.split_ratio)) > 1e-9:
            return f"simcc.split_ratio is {card.simcc.split_ratio}, the model's is {codec.split_ratio}"
        if kind == "heatmap" and card.heatmap.udp != (codec.kind == "udp"):
            return f"heatmap.udp is {card.heatmap.udp}, the model's codec is {codec.kind!r}"
        if kind == "heatmap" and (card.heatmap.dark != bool(codec.unbiased)
                                  or card.heatmap.blur_kernel_size != codec.blur_kernel_size):
            return (f"heatmap.dark/blur_kernel_size are {card.heatmap.dark}/{card.heatmap.blur_kernel_size}, the "
                    f"model's codec has unbiased={codec.unbiased}, blur_kernel_size={codec.blur_kernel_size}")
        fi = model.flip_indices[None]
        k = None if fi is None else len(fi) - (1 if getattr(codec, "background", False) else 0)
        if k is not None and get_schema(card.schema).num_keypoints != k:
            return f"schema {card.schema!r} has {get_schema(card.schema).num_keypoints} keypoints, the model {k}"
        return None
    raw = card.color == "bgr" and not card.needs_normalisation
    if family == "rtmo":
        if card.kind != "rtmo":
            return f"kind is {card.kind!r}, the model is an 'rtmo' model"
        if not raw:
            return "an RTMO model takes raw BGR 0..255 (color bgr, mean 0, std 1)"
        if card.input_size[0] % 32 or card.input_size[1] % 32:
            return f"input.size {list(card.input_size)} is not a multiple of 32"
        if get_schema(card.schema).num_keypoints != int(model.config.num_keypoints):
            return f"schema {card.schema!r} does not have the model's {model.config.num_keypoints} keypoints"
        return None
    if card.kind != "paf":
        return f"kind is {card.kind!r}, the model is an OpenPose ('paf') model"
    if not raw:
        return "an exported OpenPose model takes raw BGR 0..255 (color bgr, mean 0, std 1)"
    codec = model.codec
    if [tuple(l) for l in card.paf.limbs] != [tuple(l) for l in codec.limbs] \
            or [tuple(c) for c in card.paf.paf_channels] != [tuple(c) for c in codec.paf_channels]:
        return "paf.limbs / paf.paf_channels differ from the model's"
    if card.paf.num_parts != codec.num_parts or card.paf.paf_offset != model.num_heatmaps:
        return "paf part count / paf_offset differ from the model's"
    return None


def torch_runner(model, card: ModelCard, device=None, threads: Optional[int] = None,
                 max_batch: Optional[int] = None) -> TorchModel:
    """A :class:`TorchModel` that runs ``model`` through its family's export wrapper with ``card``'s interface.

    Raises:
        ValueError: the card does not fit the model (:func:`card_fits_model`'s reason).
    """
    why = card_fits_model(card, model)
    if why is not None:
        raise ValueError(f"model card '{card.name}' ({card.source}) does not fit the PyTorch model "
                         f"{getattr(model, 'preset', None) or type(model).__name__}: {why}")
    family = model_family(model)
    model.eval()
    if family == "topdown":
        from posekit.export.topdown import TopDownExportWrapper

        wrapper = TopDownExportWrapper(model)
    elif family == "rtmo":
        from posekit.export.rtmo import RTMOExportWrapper

        wrapper = RTMOExportWrapper(model, card.input_size)
    else:
        from posekit.export.onnx import MapsExportWrapper

        wrapper = MapsExportWrapper(model)
    p = next(model.parameters(), None)
    if device is None and p is not None:
        device = p.device
    return TorchModel(wrapper.eval(), card.input_name, card.output_names, device=device, threads=threads,
                      max_batch=max_batch, path=f"<torch {getattr(model, 'preset', None) or type(model).__name__}>")
