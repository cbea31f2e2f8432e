"""Generic building blocks shared by posekit networks.

The module and parameter names follow the OpenMMLab layout (``conv`` / ``bn`` / ``activate`` inside a
conv block, ``uv`` / ``o`` / ``ln.g`` / ``res_scale.scale`` / ``gamma`` / ``beta`` inside a gated attention
unit) so that official checkpoints load strictly without a key mapping.

Shapes: convolution blocks take and return ``(B, C, H, W)`` tensors; token blocks take ``(..., T, C)``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "make_act",
    "ConvModule",
    "DepthwiseSeparableConvModule",
    "ScaleNorm",
    "ChannelWiseScale",
    "Scale",
    "SinePositionalEncoding",
    "GAU",
]


def make_act(name: Optional[str]) -> nn.Module:
    """An activation module from its name: ``silu`` (= ``swish``), ``relu``, ``gelu`` or None (identity)."""
    if name is None:
        return nn.Identity()
    key = name.lower()
    if key in ("silu", "swish"):
        return nn.SiLU()
    if key == "relu":
        return nn.ReLU()
    if key == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}; expected 'silu', 'swish', 'relu', 'gelu' or None")


class ConvModule(nn.Module):
    """Conv2d -> BatchNorm2d -> activation (the mmcv ``ConvModule`` layout: ``conv``, ``bn``, ``activate``).

    The convolution has no bias when a norm follows (``norm=True``) and a bias otherwise.
    ``padding`` defaults to ``kernel_size // 2`` ("same" for odd kernels at stride 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: Optional[int] = None,
        groups: int = 1,
        norm: bool = True,
        act: Optional[str] = "silu",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups, bias=not norm
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum) if norm else None
        self.activate = make_act(act) if act is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


class DepthwiseSeparableConvModule(nn.Module):
    """Depthwise kxk ConvModule (``depthwise_conv``, carrying the stride) then pointwise 1x1 ConvModule
    (``pointwise_conv``): mmcv's ``DepthwiseSeparableConvModule`` layout."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, **kw) -> None:
        super().__init__()
        self.depthwise_conv = ConvModule(in_channels, in_channels, kernel_size, stride=stride, groups=in_channels,
                                         **kw)
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class ScaleNorm(nn.Module):
    """x / max(||x||_2 * dim**-0.5, eps) * g over the last axis; one learnable scalar ``g``."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = dim ** -0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class ChannelWiseScale(nn.Module):
    """Multiply the last axis by a learnable vector ``scale`` of length ``dim`` (initialised to ``init``)."""

    def __init__(self, dim: int, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Scale(nn.Module):
    """Multiply by one learnable scalar ``scale`` (a 0-d parameter, as mmcv's ``Scale``)."""

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class SinePositionalEncoding(nn.Module):
    """Sine-cosine encoding with frequencies ``dim_t = temperature ** (arange(C/2) / (C/2))``.

    ``encode_1d(p)``: ``(...,)`` positions -> ``(..., C)`` = ``[cos(p / dim_t), sin(p / dim_t)]``.
    ``encode_grid(h, w)``: ``(h*w, 2C)`` for a row-major grid of integer coordinates,
    ``[cos(row/dim_t), sin(row/dim_t), cos(col/dim_t), sin(col/dim_t)]``.

    ``dim_t`` is a persistent buffer (it is stored in official checkpoints).
    """

    def __init__(self, out_channels: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"SinePositionalEncoding out_channels must be even, got {out_channels}")
        if temperature <= 0:
            raise ValueError(f"SinePositionalEncoding temperature must be > 0, got {temperature}")
        half = out_channels // 2
        self.out_channels = out_channels
        self.temperature = float(temperature)
        self.register_buffer("dim_t", self.temperature ** (torch.arange(half, dtype=torch.float32) / half))

    def encode_1d(self, position: torch.Tensor) -> torch.Tensor:
        freq = position.unsqueeze(-1) / self.dim_t
        return torch.cat((freq.cos(), freq.sin()), dim=-1)

    def encode_grid(self, h: int, w: int) -> torch.Tensor:
        dev = self.dim_t.device
        rows = torch.arange(h, dtype=torch.float32, device=dev).repeat_interleave(w)
        cols = torch.arange(w, dtype=torch.float32, device=dev).repeat(h)
        return torch.cat((self.encode_1d(rows), self.encode_1d(cols)), dim=-1)

    def forward(self, position: torch.Tensor) -> torch.Tensor:
        return self.encode_1d(position)


class GAU(nn.Module):
    """Gated Attention Unit (Hua et al., "Transformer Quality in Linear Time"), single head, over tokens.

    For ``x`` of shape ``(..., T, C_in)``::

        xn = ScaleNorm(x)
        u, v, base = split(act(uv(xn)), [e, e, s])          # e = C_in * expansion_factor
        q = base * gamma[0] + beta[0] (+ pos_enc);  k = base * gamma[1] + beta[1] (+ pos_enc)
        kernel = relu(q k^T / sqrt(s)) ** 2                  # (..., T, T)
        y = o(u * (kernel @ v))                              # (..., T, C_out)
        y = res_scale * x + y                                # only when C_in == C_out

    ``pos_enc`` (``(T, s)``, optional) is added to q and k (the "add" mode); ``mask`` (``(..., T, T)``,
    optional) multiplies the kernel. Parameter names match mmpose's ``GAUEncoder``.
    """

    def __init__(
        self,
        in_dims: int,
        out_dims: int,
        expansion_factor: float = 2,
        s: int = 128,
        eps: float = 1e-5,
        act: str = "silu",
        bias: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.s = int(s)
        self.e = int(in_dims * expansion_factor)
        self.uv = nn.Linear(in_dims, 2 * self.e + self.s, bias=bias)
        self.o = nn.Linear(self.e, out_dims, bias=bias)
        self.gamma = nn.Parameter(torch.rand(2, self.s))
        self.beta = nn.Parameter(torch.rand(2, self.s))
        self.ln = ScaleNorm(in_dims, eps=eps)
        self.act_fn = make_act(act)
        self.shortcut = in_dims == out_dims
        if self.shortcut:
            self.res_scale = ChannelWiseScale(in_dims)
        self.sqrt_s = math.sqrt(self.s)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        nn.init.xavier_uniform_(self.uv.weight)

    def forward(
        self, x: torch.Tensor, pos_enc: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        xn = self.ln(x)
        uv = self.act_fn(self.uv(xn))
        u, v, base = torch.split(uv, [self.e, self.e, self.s], dim=-1)
        q = base * self.gamma[0] + self.beta[0]
        k = base * self.gamma[1] + self.beta[1]
        if pos_enc is not None:
            q = q + pos_enc
            k = k + pos_enc
        kernel = torch.square(F.relu(torch.matmul(q, k.transpose(-1, -2)) / self.sqrt_s))
        if mask is not None:
            kernel = kernel * mask
        if self.dropout is not None:
            kernel = self.dropout(kernel)
        out = self.o(u * torch.matmul(kernel, v))
        if self.shortcut:
            out = self.res_scale(x) + out
        return out
