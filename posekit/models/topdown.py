"""Top-down pose model: ``backbone -> [neck] -> head(s)`` plus a codec, with flip test and decoding.

``TopDownModel(backbone, head, codec, ...)`` runs on person crops of the codec's ``input_size = (W, H)``
(made with :func:`posekit.data.geometry.get_affine_matrix`; MMPose's TopdownAffine with bbox padding 1.25).

Input of :meth:`TopDownModel.forward`: ``(B, 3, H, W)`` float, **already normalised** in the network's channel
order (RGB with ImageNet mean/std for every preset); :meth:`TopDownModel.preprocess` makes it from BGR uint8
crops. Output: a dict with ``"backbone"`` (tuple of feature maps), ``"neck"`` (when there is a neck), and the
head outputs: ``"heatmaps"`` (B, K, h, w) for heatmap heads or ``"pred_x"`` (B, K, Wx) / ``"pred_y"``
(B, K, Wy) for SimCC heads.

:meth:`TopDownModel.decode` maps those to ``(keypoints (B, K, 2) in model-input pixels, scores (B, K))`` numpy
arrays; :meth:`TopDownModel.forward_flip` averages the outputs of the image and of its mirror (MMPose's flip
test: heatmaps are flipped back, channels swapped with ``flip_index`` and, for MSRA heatmaps, shifted one
column; SimCC x-vectors are reversed). :meth:`TopDownModel.predict` = forward (+ flip) + decode.

Several decoders on one backbone (ViTPose multi-dataset training): pass ``head`` (and ``codec``, optionally
``neck`` and ``flip_index``) as dicts keyed by decoder name; parameters are then ``head.<name>.*``. Select a
decoder with ``forward(x, decoder=name)``, or run several datasets' batches through the shared backbone in one
pass with :meth:`TopDownModel.forward_multi`.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from ..codecs.heatmap import HeatmapCodec
from ..codecs.simcc import SimCCCodec

__all__ = ["TopDownModel", "flip_heatmaps", "flip_simcc", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def flip_heatmaps(heatmaps: torch.Tensor, flip_index: Sequence[int], shift: bool = False) -> torch.Tensor:
    """Heatmaps predicted on a mirrored input mapped back: flip W, swap channels, optional 1-column shift.

    (B, K, H, W) -> (B, K, H, W). ``shift=True`` reproduces MMPose's ``shift_heatmap`` for MSRA heatmaps.
    """
    idx = torch.as_tensor(list(flip_index), dtype=torch.long, device=heatmaps.device)
    if idx.numel() != heatmaps.shape[1]:
        raise ValueError(f"flip_index has {idx.numel()} entries, heatmaps have {heatmaps.shape[1]} channels")
    out = heatmaps.flip(-1).index_select(1, idx)
    if shift:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
    return out


def flip_simcc(pred_x: torch.Tensor, pred_y: torch.Tensor, flip_index: Sequence[int]):
    """SimCC vectors of a mirrored input mapped back: swap keypoints, reverse the x bins (no shift)."""
    idx = torch.as_tensor(list(flip_index), dtype=torch.long, device=pred_x.device)
    if idx.numel() != pred_x.shape[1]:
        raise ValueError(f"flip_index has {idx.numel()} entries, SimCC outputs have {pred_x.shape[1]} keypoints")
    return pred_x.index_select(1, idx).flip(-1), pred_y.index_select(1, idx)


class TopDownModel(nn.Module):
    """Top-down pose estimator (see the module docstring).

    Args:
        backbone: module returning a tuple of feature maps.
        head: a head module (``HeatmapHead`` / ``RTMCCHead``) or a dict name -> head (several decoders).
        codec: :class:`HeatmapCodec` / :class:`SimCCCodec`, or a dict name -> codec matching ``head``.
        neck: optional module applied to the backbone tuple (ViTPose simple decoder), or a dict per decoder.
        flip_index: left/right permutation of the keypoints for the flip test (list, or dict per decoder);
            None disables the flip test.
        shift_heatmap: MMPose ``test_cfg.shift_heatmap`` (True for MSRA heatmaps, False for UDP).
        mean, std, bgr_to_rgb: preprocessing used by :meth:`preprocess`.
        preset, url: bookkeeping (preset name and official checkpoint URL).
    """

    def __init__(self, backbone: nn.Module, head: Union[nn.Module, Mapping[str, nn.Module]],
                 codec: Union[HeatmapCodec, SimCCCodec, Mapping[str, Any]],
                 neck: Union[None, nn.Module, Mapping[str, nn.Module]] = None,
                 flip_index: Union[None, Sequence[int], Mapping[str, Sequence[int]]] = None,
                 shift_heatmap: bool = False, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, bgr_to_rgb: bool = True, preset: Optional[str] = None,
                 url: Optional[str] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.multi = isinstance(head, Mapping)
        if self.multi:
            names = list(head)
            if not names:
                raise ValueError("TopDownModel: empty head dict")
            for what, d in (("codec", codec), ("neck", neck), ("flip_index", flip_index)):
                if isinstance(d, Mapping) and set(d) != set(names):
                    raise ValueError(f"TopDownModel: {what} keys {sorted(d)} differ from head keys {sorted(names)}")
            if not isinstance(codec, Mapping):
                raise ValueError("TopDownModel: several heads need a dict of codecs")
            self.head = nn.ModuleDict(dict(head))
            self.neck = nn.ModuleDict(dict(neck)) if isinstance(neck, Mapping) else neck
            self.codecs = dict(codec)
            self.flip_indices = (dict(flip_index) if isinstance(flip_index, Mapping)
                                 else {n: flip_index for n in names})
        else:
            if isinstance(codec, Mapping) or isinstance(neck, Mapping) or isinstance(flip_index, Mapping):
                raise ValueError("TopDownModel: codec/neck/flip_index dicts need a dict of heads")
            self.head = head
            self.neck = neck
            self.codecs = {None: codec}
            self.flip_indices = {None: flip_index}
        for name, c in self.codecs.items():
            if not isinstance(c, (HeatmapCodec, SimCCCodec)):
                raise ValueError(f"TopDownModel: codec {name!r} must be a HeatmapCodec or SimCCCodec, got "
                                 f"{type(c).__name__}")
        sizes = {c.input_size for c in self.codecs.values()}
        if len(sizes) != 1:
            raise ValueError(f"TopDownModel: all decoders must share one input size, got {sorted(sizes)}")
        self.input_size: Tuple[int, int] = sizes.pop()
        self.shift_heatmap = bool(shift_heatmap)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.bgr_to_rgb = bool(bgr_to_rgb)
        self.preset = preset
        self.url = url

    # ---------------------------------------------------------------------------------------------- helpers
    @property
    def decoders(self) -> list:
        """Decoder names (``[None]`` for a single-head model)."""
        return list(self.codecs)

    def codec(self, decoder: Optional[str] = None):
        """The codec of ``decoder`` (the only one for a single-head model)."""
        key = self._key(decoder)
        return self.codecs[key]

    def _key(self, decoder: Optional[str]):
        if not self.multi:
            if decoder is not None:
                raise KeyError(f"this TopDownModel has a single head; got decoder={decoder!r}")
            return None
        if decoder is None:
            raise KeyError(f"this TopDownModel has several decoders {list(self.codecs)}; pass decoder=<name>")
        if decoder not in self.codecs:
            raise KeyError(f"unknown decoder {decoder!r}; available: {list(self.codecs)}")
        return decoder

    def _parts(self, key):
        if key is None:
            return self.neck, self.head
        neck = self.neck[key] if isinstance(self.neck, nn.ModuleDict) else self.neck
        return neck, self.head[key]

    def preprocess(self, crops) -> torch.Tensor:
        """BGR uint8 crops ``(B, H, W, 3)`` (or one ``(H, W, 3)``) -> normalised ``(B, 3, H, W)`` float tensor."""
        arr = np.asarray(crops)
        if arr.ndim == 3:
            arr = arr[None]
        W, H = self.input_size
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"crops must be (B, H, W, 3) BGR images, got shape {arr.shape}")
        if arr.shape[1:3] != (H, W):
            raise ValueError(f"crops are {arr.shape[1]}x{arr.shape[2]} (HxW), the model expects {H}x{W}")
        x = torch.from_numpy(np.ascontiguousarray(arr)).to(self.mean.device).permute(0, 3, 1, 2).float()
        if self.bgr_to_rgb:
            x = x.flip(1)
        return (x - self.mean) / self.std

    # ---------------------------------------------------------------------------------------------- forward
    def _run_head(self, key, feats, out: dict) -> dict:
        neck, head = self._parts(key)
        if neck is not None:
            feats = neck(feats)
            out["neck"] = feats
        y = head(feats)
        if isinstance(y, Mapping):  # multi-stage heads (CPM, Hourglass, CPN): every named output
            out.update(y)
        elif isinstance(self.codecs[key], SimCCCodec):
            out["pred_x"], out["pred_y"] = y
        else:
            out["heatmaps"] = y
        return out

    def convert_official_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Called by :func:`posekit.models.weights.load_weights`: official layouts that differ from posekit's
        (MMPose 1.x) names are renamed — the official ViTPose repository's (``backbone.blocks.*``,
        ``keypoint_head.*``) for a ViT backbone, MMPose 0.x's ``keypoint_head.*`` → ``head.*`` for the others;
        other layouts pass through."""
        from .backbones.vit import VisionTransformer, convert_vitpose_official

        if isinstance(self.backbone, VisionTransformer):
            if any(k.startswith(("keypoint_head.", "backbone.blocks.")) for k in state_dict):
                return convert_vitpose_official(state_dict, num_patches=self.backbone.pos_embed.shape[1])
            return state_dict
        return {("head." + k[len("keypoint_head."):] if k.startswith("keypoint_head.") else k): v
                for k, v in state_dict.items()}

    def forward(self, x: torch.Tensor, decoder: Optional[str] = None) -> Dict[str, Any]:
        """Raw outputs for normalised crops ``x`` (B, 3, H, W) (see the module docstring). ``x`` may also be a dict
        ``{decoder: crops}``: then it is :meth:`forward_multi` (one backbone pass, each slice to its own decoder), so
        that a DistributedDataParallel wrapper sees a multi-dataset step as its forward."""
        if isinstance(x, Mapping):
            if decoder is not None:
                raise ValueError("pass either {decoder: crops} or crops with decoder=..., not both")
            return self.forward_multi(x)
        key = self._key(decoder)
        feats = self.backbone(x)
        if isinstance(feats, torch.Tensor):
            feats = (feats,)
        return self._run_head(key, tuple(feats), {"backbone": tuple(feats)})

    def forward_multi(self, batches: Mapping[str, torch.Tensor]) -> Dict[str, Dict[str, Any]]:
        """Multi-dataset step: ``{decoder: crops}`` -> ``{decoder: raw outputs}`` with ONE backbone pass over the
        concatenated crops, each slice going to its own decoder."""
        if not self.multi:
            raise RuntimeError("forward_multi needs a TopDownModel built with several decoders")
        names = list(batches)
        for n in names:
            self._key(n)
        sizes = [batches[n].shape[0] for n in names]
        feats = self.backbone(torch.cat([batches[n] for n in names], 0))
        if isinstance(feats, torch.Tensor):
            feats = (feats,)
        out, start = {}, 0
        for n, b in zip(names, sizes):
            part = tuple(f[start:start + b] for f in feats)
            out[n] = self._run_head(n, part, {"backbone": part})
            start += b
        return out

    def forward_flip(self, x: torch.Tensor, decoder: Optional[str] = None) -> Dict[str, Any]:
        """Flip-test outputs: the average of ``forward(x)`` and ``forward(x mirrored)`` mapped back."""
        key = self._key(decoder)
        fi = self.flip_indices[key]
        if fi is None:
            raise ValueError("flip test needs a flip_index (build the model with flip_index=schema.flip_index)")
        out = self.forward(x, decoder)
        flipped = self.forward(x.flip(-1), decoder)
        if "heatmaps" in out:
            shift = self.shift_heatmap
            out["heatmaps"] = 0.5 * (out["heatmaps"] + flip_heatmaps(flipped["heatmaps"], fi, shift))
        else:
            fx, fy = flip_simcc(flipped["pred_x"], flipped["pred_y"], fi)
            out["pred_x"] = 0.5 * (out["pred_x"] + fx)
            out["pred_y"] = 0.5 * (out["pred_y"] + fy)
        return out

    def decode(self, raw: Mapping[str, Any], decoder: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Raw outputs -> ``(keypoints (B, K, 2) float32 in model-input pixels, scores (B, K))``."""
        codec = self.codec(decoder)
        if isinstance(codec, SimCCCodec):
            if "pred_x" not in raw or "pred_y" not in raw:
                raise KeyError(f"SimCC decoding needs 'pred_x' and 'pred_y' in the raw outputs, got {sorted(raw)}")
            return codec.decode(raw["pred_x"], raw["pred_y"])
        if "heatmaps" not in raw:
            raise KeyError(f"heatmap decoding needs 'heatmaps' in the raw outputs, got {sorted(raw)}")
        return codec.decode(raw["heatmaps"])

    @torch.no_grad()
    def predict(self, x: torch.Tensor, flip_test: bool = True,
                decoder: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Forward (with the flip test when ``flip_test`` and a flip_index is set) and decode."""
        key = self._key(decoder)
        use_flip = flip_test and self.flip_indices[key] is not None
        raw = self.forward_flip(x, decoder) if use_flip else self.forward(x, decoder)
        return self.decode(raw, decoder)
