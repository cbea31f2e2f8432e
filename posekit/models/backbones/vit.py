"""Plain Vision Transformer backbone of ViTPose, with mmpretrain's parameter names.

``VisionTransformer(...)`` takes ``(B, 3, H, W)`` and returns a 1-tuple with the feature map ``(B, C, H', W')``
(tokens reshaped row-major), ``H' = (H + 2p - P) // P + 1`` for patch size ``P`` and patch padding ``p``.

Computation (mmpretrain ``VisionTransformer`` with ``with_cls_token=False, out_type="featmap"``):
``x = patch_embed(img) + pos_embed`` (pos_embed bicubically resized when the token grid differs from the one
of ``img_size``); each layer ``x += attn(LN1(x)); x += FFN(LN2(x))`` (qkv with bias, scale ``head_dim**-0.5``,
exact GELU, LayerNorm eps 1e-6); a final LayerNorm ``ln1``. Drop-path (stochastic depth, linearly increasing
to ``drop_path_rate``) is active in training only.

Keys: ``pos_embed``, ``patch_embed.projection``, ``layers.{i}.ln1|attn.qkv|attn.proj|ln2|ffn.layers.0.0|
ffn.layers.1``, ``ln1``. :func:`convert_vitpose_official` maps the official ViTPose repository's names
(``patch_embed.proj``, ``blocks.{i}.norm1|attn|norm2|mlp.fc1|mlp.fc2``, ``last_norm``, a cls position at index
0 that is *added* to every patch position, as the official forward does).
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["VisionTransformer", "VIT_ARCH", "convert_vitpose_official", "resize_pos_embed", "DropPath"]

#: ViTPose backbone sizes: embed_dims, num_layers, num_heads, feedforward_channels.
VIT_ARCH = {
    "s": dict(embed_dims=384, num_layers=12, num_heads=12, feedforward_channels=1536),
    "b": dict(embed_dims=768, num_layers=12, num_heads=12, feedforward_channels=3072),
    "l": dict(embed_dims=1024, num_layers=24, num_heads=16, feedforward_channels=4096),
    "h": dict(embed_dims=1280, num_layers=32, num_heads=16, feedforward_channels=5120),
}


class DropPath(nn.Module):
    """Stochastic depth: zero whole samples with probability ``p`` in training, rescale the rest."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class PatchEmbed(nn.Module):
    """``projection``: Conv2d(in, C, P, stride P, padding p); returns tokens (B, N, C) and the grid (h, w)."""

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int, padding: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(in_channels, embed_dims, patch_size, patch_size, padding)

    def forward(self, x: torch.Tensor):
        x = self.projection(x)
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw


class MultiheadAttention(nn.Module):
    """Fused ``qkv`` linear, scaled dot-product attention over heads, ``proj`` linear."""

    def __init__(self, embed_dims: int, num_heads: int, qkv_bias: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims {embed_dims} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.out_drop = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out_drop(self.proj(y.transpose(1, 2).reshape(B, N, C)))


class FFN(nn.Module):
    """``layers = [[Linear(C, F), GELU, Dropout], Linear(F, C), Dropout]``; returns ``identity + drop_path(out)``."""

    def __init__(self, embed_dims: int, feedforward_channels: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), nn.GELU(), nn.Dropout(0.0)),
            nn.Linear(feedforward_channels, embed_dims), nn.Dropout(0.0))
        self.dropout_layer = DropPath(drop_path)

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return identity + self.dropout_layer(self.layers(x))


class TransformerEncoderLayer(nn.Module):
    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int, qkv_bias: bool = True,
                 drop_path: float = 0.0, ln_eps: float = 1e-6) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dims, eps=ln_eps)
        self.attn = MultiheadAttention(embed_dims, num_heads, qkv_bias, drop_path)
        self.ln2 = nn.LayerNorm(embed_dims, eps=ln_eps)
        self.ffn = FFN(embed_dims, feedforward_channels, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return self.ffn(self.ln2(x), identity=x)


def resize_pos_embed(pos_embed: torch.Tensor, src_hw: Tuple[int, int], dst_hw: Tuple[int, int]) -> torch.Tensor:
    """(1, h*w, C) positions on grid ``src_hw`` -> (1, H*W, C) on ``dst_hw`` (bicubic, align_corners False)."""
    if tuple(src_hw) == tuple(dst_hw):
        return pos_embed
    C = pos_embed.shape[-1]
    grid = pos_embed.reshape(1, src_hw[0], src_hw[1], C).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(dst_hw), mode="bicubic", align_corners=False)
    return grid.flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """ViTPose's plain ViT encoder (see the module docstring).

    Args:
        arch: ``"s" | "b" | "l" | "h"`` (see :data:`VIT_ARCH`) or a dict with ``embed_dims``, ``num_layers``,
            ``num_heads``, ``feedforward_channels``.
        img_size: ``(H, W)`` the position embedding is laid out for (ViTPose: (256, 192)).
        patch_size, patch_padding: patch embedding conv (16, 2).
        qkv_bias: bias on the qkv projection.
        drop_path_rate: maximum stochastic-depth rate (last layer), linear from 0.
        ln_eps: LayerNorm eps (1e-6).
    """

    def __init__(self, arch="b", img_size: Sequence[int] = (256, 192), patch_size: int = 16, patch_padding: int = 2,
                 in_channels: int = 3, qkv_bias: bool = True, drop_path_rate: float = 0.0,
                 ln_eps: float = 1e-6) -> None:
        super().__init__()
        if isinstance(arch, str):
            if arch.lower() not in VIT_ARCH:
                raise ValueError(f"ViT arch must be one of {sorted(VIT_ARCH)} or a dict, got {arch!r}")
            arch = VIT_ARCH[arch.lower()]
        need = ("embed_dims", "num_layers", "num_heads", "feedforward_channels")
        missing = [k for k in need if k not in arch]
        if missing:
            raise ValueError(f"ViT arch dict lacks {missing}")
        C, L = int(arch["embed_dims"]), int(arch["num_layers"])
        self.embed_dims = C
        self.out_channels = [C]
        self.patch_size, self.patch_padding = patch_size, patch_padding
        h, w = (int(v) for v in img_size)
        self.patch_resolution = ((h + 2 * patch_padding - patch_size) // patch_size + 1,
                                 (w + 2 * patch_padding - patch_size) // patch_size + 1)
        self.patch_embed = PatchEmbed(in_channels, C, patch_size, patch_padding)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_resolution[0] * self.patch_resolution[1], C))
        dpr = torch.linspace(0, drop_path_rate, L).tolist() if L > 1 else [drop_path_rate]
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(C, int(arch["num_heads"]), int(arch["feedforward_channels"]), qkv_bias, dpr[i],
                                    ln_eps) for i in range(L))
        self.ln1 = nn.LayerNorm(C, eps=ln_eps)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        B = x.shape[0]
        x, hw = self.patch_embed(x)
        x = x + resize_pos_embed(self.pos_embed, self.patch_resolution, hw)
        for layer in self.layers:
            x = layer(x)
        x = self.ln1(x)
        return (x.reshape(B, hw[0], hw[1], -1).permute(0, 3, 1, 2).contiguous(),)


_OFFICIAL_RULES = [
    (re.compile(r"^patch_embed\.proj\."), "patch_embed.projection."),
    (re.compile(r"^blocks\.(\d+)\.norm1\."), r"layers.\1.ln1."),
    (re.compile(r"^blocks\.(\d+)\.norm2\."), r"layers.\1.ln2."),
    (re.compile(r"^blocks\.(\d+)\.attn\."), r"layers.\1.attn."),
    (re.compile(r"^blocks\.(\d+)\.mlp\.fc1\."), r"layers.\1.ffn.layers.0.0."),
    (re.compile(r"^blocks\.(\d+)\.mlp\.fc2\."), r"layers.\1.ffn.layers.1."),
    (re.compile(r"^last_norm\."), "ln1."),
]


def convert_vitpose_official(state_dict: Dict[str, torch.Tensor], prefix: str = "backbone.",
                             head_prefix: str = "keypoint_head.", num_patches: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Rename an official ViTPose (ViTAE-Transformer/ViTPose) state_dict to posekit / MMPose 1.x names.

    ``backbone.*`` keys are mapped with the rules in the module docstring; ``keypoint_head.*`` becomes
    ``head.*``. A ``pos_embed`` with one more position than ``num_patches`` (or, when ``num_patches`` is None,
    any ``pos_embed`` whose length minus one is a product of the usual grids) has its first (cls) position added
    to the others, reproducing the official forward ``x + pos[:, 1:] + pos[:, :1]``.
    """
    out: Dict[str, torch.Tensor] = {}
    for key, val in state_dict.items():
        if key.startswith(prefix):
            sub = key[len(prefix):]
            for pat, rep in _OFFICIAL_RULES:
                if pat.match(sub):
                    sub = pat.sub(rep, sub)
                    break
            if sub == "pos_embed":
                n = val.shape[1]
                if (num_patches is not None and n == num_patches + 1) or (num_patches is None and n % 2 == 1):
                    val = val[:, 1:] + val[:, :1]
            out["backbone." + sub] = val
        elif key.startswith(head_prefix):
            out["head." + key[len(head_prefix):]] = val
        else:
            out[key] = val
    return out
