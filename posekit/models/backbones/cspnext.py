"""CSPNeXt backbone (RTMDet / RTMPose), with mmdet's parameter names (``stem.*``, ``stage{1..4}.*``).

``CSPNeXt(...)`` takes ``(B, 3, H, W)`` and returns a tuple of the outputs selected by ``out_indices``
(0 = stem, stride 2; 1..4 = stages, strides 4, 8, 16, 32). Architecture (arch "P5"):

* stem: three 3x3 ConvModules (stride 2, 1, 1) to ``C0/2, C0/2, C0``;
* each stage: 3x3 stride-2 ConvModule; in the last stage an SPP bottleneck (5/9/13 max-pools); a CSP layer
  ``final_conv(attention(cat[blocks(main_conv(x)), short_conv(x)]))`` whose blocks are CSPNeXt blocks
  (3x3 ConvModule -> depthwise-separable 5x5) with identity except in the last stage, and whose channel attention
  is ``x * hardsigmoid(fc(avgpool(x)))``.

Channel and depth scaling: ``int(c * widen_factor)`` and ``max(round(n * deepen_factor), 1)``.
BatchNorm eps/momentum are arguments: RTMPose's configs use SyncBN defaults (1e-5, 0.1), not CSPNeXt's own
(1e-3, 0.03).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn as nn

from ..layers import ConvModule, DepthwiseSeparableConvModule
from .cspdarknet import SPPBottleneck

__all__ = ["CSPNeXt", "CSPNeXtBlock", "CSPNeXtLayer", "ChannelAttention", "DepthwiseSeparableConvModule",
           "CSPNEXT_ARCH", "cspnext_out_channels"]

#: (in, out, num_blocks, add_identity, use_spp) per stage at widen = deepen = 1.
CSPNEXT_ARCH = {
    "P5": [(64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
           (512, 1024, 3, False, True)],
    "P6": [(64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
           (512, 768, 3, True, False), (768, 1024, 3, False, True)],
}


def cspnext_out_channels(widen_factor: float, arch: str = "P5") -> list:
    """Channels of every output index (0 = stem) without building the network."""
    a = CSPNEXT_ARCH[arch]
    return [int(a[0][0] * widen_factor)] + [int(s[1] * widen_factor) for s in a]


class ChannelAttention(nn.Module):
    """``x * hardsigmoid(fc(mean_hw(x)))`` with ``fc`` a 1x1 conv with bias; hardsigmoid = relu6(x + 3) / 6."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.act(self.fc(self.global_avgpool(x)))


class CSPNeXtBlock(nn.Module):
    """3x3 ConvModule (``conv1``) -> depthwise-separable 5x5 (``conv2``), plus the input when ``add_identity``."""

    def __init__(self, in_channels: int, out_channels: int, expansion: float = 1.0, add_identity: bool = True,
                 kernel_size: int = 5, **kw) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvModule(in_channels, hidden, 3, **kw)
        self.conv2 = DepthwiseSeparableConvModule(hidden, out_channels, kernel_size, **kw)
        self.add_identity = add_identity and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPNeXtLayer(nn.Module):
    """CSP layer with CSPNeXt blocks and optional channel attention (mmdet ``CSPLayer`` key layout)."""

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: float = 0.5, num_blocks: int = 1,
                 add_identity: bool = True, channel_attention: bool = True, **kw) -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvModule(in_channels, mid, 1, **kw)
        self.short_conv = ConvModule(in_channels, mid, 1, **kw)
        self.final_conv = ConvModule(2 * mid, out_channels, 1, **kw)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, mid, 1.0, add_identity, **kw) for _ in range(num_blocks)])
        self.attention = ChannelAttention(2 * mid) if channel_attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1)
        if self.attention is not None:
            y = self.attention(y)
        return self.final_conv(y)


class CSPNeXt(nn.Module):
    """CSPNeXt backbone.

    Args:
        arch: ``"P5"`` (4 stages) or ``"P6"``.
        deepen_factor, widen_factor: depth / width multipliers.
        expand_ratio: CSP layer hidden ratio (0.5).
        out_indices: outputs returned (0 = stem, 1.. = stages); RTMPose uses ``(4,)``. Stages after the last one
            asked for are not built.
        channel_attention: use :class:`ChannelAttention` in every CSP layer.
        spp_kernel_sizes: max-pool sizes of the last stage's SPP bottleneck.
        act: activation name (``"silu"``).
        bn_eps, bn_momentum: BatchNorm settings (see the module docstring).

    Attributes:
        out_channels: channels of every output index.
    """

    def __init__(self, arch: str = "P5", deepen_factor: float = 1.0, widen_factor: float = 1.0,
                 expand_ratio: float = 0.5, out_indices: Sequence[int] = (2, 3, 4), channel_attention: bool = True,
                 spp_kernel_sizes: Sequence[int] = (5, 9, 13), act: str = "silu", bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        if arch not in CSPNEXT_ARCH:
            raise ValueError(f"CSPNeXt arch must be one of {sorted(CSPNEXT_ARCH)}, got {arch!r}")
        settings = CSPNEXT_ARCH[arch]
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or any(i < 0 or i > len(settings) for i in out_indices):
            raise ValueError(f"CSPNeXt out_indices must be in 0..{len(settings)}, got {out_indices}")
        self.out_indices = out_indices
        kw = dict(act=act, bn_eps=bn_eps, bn_momentum=bn_momentum)
        c0 = int(settings[0][0] * widen_factor)
        self.stem = nn.Sequential(
            ConvModule(3, c0 // 2, 3, stride=2, **kw),
            ConvModule(c0 // 2, c0 // 2, 3, **kw),
            ConvModule(c0 // 2, c0, 3, **kw),
        )
        self.layers = ["stem"]
        for i, (cin, cout, n, add_identity, use_spp) in enumerate(settings[:max(out_indices)]):
            cin, cout = int(cin * widen_factor), int(cout * widen_factor)
            n = max(round(n * deepen_factor), 1)
            stage = [ConvModule(cin, cout, 3, stride=2, **kw)]
            if use_spp:
                stage.append(SPPBottleneck(cout, cout, kernel_sizes=tuple(spp_kernel_sizes), **kw))
            stage.append(CSPNeXtLayer(cout, cout, expand_ratio, n, add_identity, channel_attention, **kw))
            self.add_module(f"stage{i + 1}", nn.Sequential(*stage))
            self.layers.append(f"stage{i + 1}")
        self.out_channels = cspnext_out_channels(widen_factor, arch)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
