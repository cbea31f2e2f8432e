"""HybridEncoder (RT-DETR style neck as used by RTMO) in plain PyTorch.

``input_proj`` (1x1 conv + BN per level) -> one post-norm transformer encoder layer on the selected
levels (RTMO: the stride-32 map) with a 2-D sine-cosine position encoding -> top-down FPN and bottom-up
PAN fusion with CSPRepLayers -> selected outputs -> optional ``projector`` (1x1 conv + BN, the mmdet
``ChannelMapper`` layout).

Module and parameter names follow MMPose's ``HybridEncoder`` so the ``neck.*`` keys of an official
checkpoint load strictly. Inputs: a sequence of ``(B, C_i, H_i, W_i)`` maps with strides doubling from
one level to the next; outputs: a tuple of ``(B, C_out, H, W)`` maps for ``output_indices``.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ConvModule, SinePositionalEncoding, make_act

__all__ = ["HybridEncoder", "CSPRepLayer", "RepVGGBlock", "ChannelMapper", "TransformerEncoderLayer"]


class RepVGGBlock(nn.Module):
    """act(BN(conv3x3(x)) + BN(conv1x1(x))) (training layout; no identity branch)."""

    def __init__(self, in_channels: int, out_channels: int, act: str = "silu", bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        kw = dict(act=None, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.branch_3x3 = ConvModule(in_channels, out_channels, 3, padding=1, **kw)
        self.branch_1x1 = ConvModule(in_channels, out_channels, 1, padding=0, **kw)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.branch_3x3(x) + self.branch_1x1(x))


class CSPRepLayer(nn.Module):
    """conv3(bottlenecks(conv1(x)) + conv2(x)); hidden = int(out * widen_factor); conv3 = identity if equal."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 3, widen_factor: float = 1.0,
                 act: str = "silu", bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        hidden = int(out_channels * widen_factor)
        kw = dict(act=act, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.conv1 = ConvModule(in_channels, hidden, 1, **kw)
        self.conv2 = ConvModule(in_channels, hidden, 1, **kw)
        self.bottlenecks = nn.Sequential(*[RepVGGBlock(hidden, hidden, **kw) for _ in range(num_blocks)])
        self.conv3 = ConvModule(hidden, out_channels, 1, **kw) if hidden != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class _SelfAttention(nn.Module):
    """Self-attention with position added to query and key only, plus the residual (mmcv layout ``attn``)."""

    def __init__(self, embed_dims: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout, batch_first=True)

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
        qk = x if pos is None else x + pos
        out = self.attn(qk, qk, x, need_weights=False)[0]
        return x + out


class _FFN(nn.Module):
    """x + Linear(act(Linear(x))) with the mmcv key layout ``layers.0.0`` / ``layers.1``."""

    def __init__(self, embed_dims: int, feedforward_channels: int, act: str = "gelu", dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), make_act(act), nn.Dropout(dropout)),
            nn.Linear(feedforward_channels, embed_dims),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class TransformerEncoderLayer(nn.Module):
    """Post-norm DETR encoder layer: x = LN0(x + MHA(x+pos, x+pos, x)); x = LN1(x + FFN(x)). Tokens (B, T, C)."""

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int, dropout: float = 0.0,
                 ffn_act: str = "gelu", ln_eps: float = 1e-5) -> None:
        super().__init__()
        self.self_attn = _SelfAttention(embed_dims, num_heads, dropout)
        self.ffn = _FFN(embed_dims, feedforward_channels, ffn_act, dropout)
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dims, eps=ln_eps) for _ in range(2)])

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.norms[0](self.self_attn(x, pos))
        return self.norms[1](self.ffn(x))


class _TransformerEncoder(nn.Module):
    def __init__(self, num_layers: int, **layer_kw) -> None:
        super().__init__()
        self.layers = nn.ModuleList([TransformerEncoderLayer(**layer_kw) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, pos)
        return x


class ChannelMapper(nn.Module):
    """One 1x1 conv + BN (no activation) per input level (mmdet ``ChannelMapper`` with num_outs == inputs)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            ConvModule(c, out_channels, 1, act=None, bn_eps=bn_eps, bn_momentum=bn_momentum) for c in in_channels
        )

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        return tuple(conv(f) for conv, f in zip(self.convs, feats))


class HybridEncoder(nn.Module):
    """RT-DETR hybrid encoder.

    Args:
        in_channels: channels of the input levels (fine to coarse).
        hidden_dim: channels inside the neck (and the transformer width).
        use_encoder_idx: levels that go through the transformer encoder (RTMO: ``(2,)``).
        num_encoder_layers: encoder layers per selected level.
        num_heads, feedforward_channels, dropout, ffn_act: transformer settings.
        pe_temperature: temperature of the 2-D sine-cosine position encoding.
        widen_factor: hidden width of the CSPRepLayers relative to ``hidden_dim``.
        deepen_factor: RepVGG blocks per CSPRepLayer = ``round(3 * deepen_factor)``.
        output_indices: which of the PAN outputs (fine to coarse) to return; None = all.
        projector_out_channels: if set, a ChannelMapper maps every output to this width.
        bn_eps, bn_momentum, act: conv blocks' BatchNorm and activation (MMPose default BN: 1e-5, 0.1; SiLU).
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (512, 1024, 2048),
        hidden_dim: int = 256,
        use_encoder_idx: Sequence[int] = (2,),
        num_encoder_layers: int = 1,
        num_heads: int = 8,
        feedforward_channels: int = 1024,
        dropout: float = 0.0,
        ffn_act: str = "gelu",
        pe_temperature: float = 10000.0,
        widen_factor: float = 1.0,
        deepen_factor: float = 1.0,
        output_indices: Optional[Sequence[int]] = None,
        projector_out_channels: Optional[int] = None,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        act: str = "silu",
    ) -> None:
        super().__init__()
        if hidden_dim % 4:
            raise ValueError(f"HybridEncoder hidden_dim must be divisible by 4 (2-D sine encoding), got {hidden_dim}")
        if hidden_dim % num_heads:
            raise ValueError(f"HybridEncoder hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        n = len(in_channels)
        for i in use_encoder_idx:
            if not 0 <= i < n:
                raise ValueError(f"HybridEncoder use_encoder_idx entry {i} outside [0, {n - 1}]")
        self.in_channels = list(in_channels)
        self.hidden_dim = hidden_dim
        self.use_encoder_idx = list(use_encoder_idx)
        self.num_encoder_layers = num_encoder_layers
        self.output_indices = list(output_indices) if output_indices is not None else None
        conv_kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)

        self.input_proj = nn.ModuleList(ConvModule(c, hidden_dim, 1, act=None, **conv_kw) for c in in_channels)
        if self.use_encoder_idx:
            self.encoder = nn.ModuleList(
                _TransformerEncoder(num_encoder_layers, embed_dims=hidden_dim, num_heads=num_heads,
                                    feedforward_channels=feedforward_channels, dropout=dropout, ffn_act=ffn_act)
                for _ in self.use_encoder_idx
            )
        self.sincos_pos_enc = SinePositionalEncoding(hidden_dim // 2, temperature=pe_temperature)

        nblk = round(3 * deepen_factor)
        rep_kw = dict(num_blocks=nblk, widen_factor=widen_factor, act=act, **conv_kw)
        self.lateral_convs = nn.ModuleList(ConvModule(hidden_dim, hidden_dim, 1, act=act, **conv_kw)
                                           for _ in range(n - 1))
        self.fpn_blocks = nn.ModuleList(CSPRepLayer(hidden_dim * 2, hidden_dim, **rep_kw) for _ in range(n - 1))
        self.downsample_convs = nn.ModuleList(ConvModule(hidden_dim, hidden_dim, 3, stride=2, act=act, **conv_kw)
                                              for _ in range(n - 1))
        self.pan_blocks = nn.ModuleList(CSPRepLayer(hidden_dim * 2, hidden_dim, **rep_kw) for _ in range(n - 1))

        n_out = len(self.output_indices) if self.output_indices is not None else n
        self.projector = (ChannelMapper([hidden_dim] * n_out, projector_out_channels, **conv_kw)
                          if projector_out_channels is not None else None)
        self.out_channels = projector_out_channels if projector_out_channels is not None else hidden_dim

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"HybridEncoder expects {len(self.in_channels)} feature maps, got {len(inputs)}")
        feats = [proj(x) for proj, x in zip(self.input_proj, inputs)]

        if self.num_encoder_layers > 0:
            for enc, idx in zip(self.encoder, self.use_encoder_idx):
                b, c, h, w = feats[idx].shape
                tokens = feats[idx].flatten(2).transpose(1, 2)  # (B, H*W, C), row-major
                pos = self.sincos_pos_enc.encode_grid(h, w).to(tokens.dtype).unsqueeze(0)
                tokens = enc(tokens, pos)
                feats[idx] = tokens.transpose(1, 2).reshape(b, c, h, w)

        n = len(feats)
        # top-down: the lateral conv output of each coarse level is what the PAN later fuses with.
        laterals = [None] * n
        top = feats[-1]
        for k, lvl in enumerate(range(n - 1, 0, -1)):
            top = self.lateral_convs[k](top)
            laterals[lvl] = top
            up = F.interpolate(top, scale_factor=2.0, mode="nearest")
            top = self.fpn_blocks[k](torch.cat((up, feats[lvl - 1]), dim=1))
        outs = [top]
        for k in range(n - 1):
            down = self.downsample_convs[k](outs[-1])
            outs.append(self.pan_blocks[k](torch.cat((down, laterals[k + 1]), dim=1)))

        if self.output_indices is not None:
            outs = [outs[i] for i in self.output_indices]
        if self.projector is not None:
            return self.projector(outs)
        return tuple(outs)
