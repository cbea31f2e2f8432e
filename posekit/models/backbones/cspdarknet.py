"""CSPDarknet, the YOLOX backbone (as used by RTMO), in plain PyTorch.

Layout and parameter names follow MMDetection/MMPose's ``CSPDarknet`` (``stem``, ``stage1`` ..
``stage4``), so the ``backbone.*`` part of an official checkpoint loads strictly.

Input ``(B, 3, H, W)`` (H, W divisible by 32); outputs a tuple of feature maps for ``out_indices``
(0 = stem at stride 2, i = stage i at stride 2**(i+1); RTMO uses (2, 3, 4) = strides 8, 16, 32).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn as nn

from ..layers import ConvModule, DepthwiseSeparableConvModule

__all__ = ["CSPDarknet", "CSPLayer", "DarknetBottleneck", "SPPBottleneck", "Focus", "cspdarknet_out_channels"]

# [in, out, num_blocks, add_identity, use_spp] per stage, before the widen/deepen factors.
_ARCH = {
    "P5": [[64, 128, 3, True, False], [128, 256, 9, True, False], [256, 512, 9, True, False],
           [512, 1024, 3, False, True]],
    "P6": [[64, 128, 3, True, False], [128, 256, 9, True, False], [256, 512, 9, True, False],
           [512, 768, 3, True, False], [768, 1024, 3, False, True]],
}


def cspdarknet_out_channels(widen_factor: float, out_indices: Sequence[int] = (2, 3, 4), arch: str = "P5"):
    """Channels of the selected outputs, without building the network."""
    chans = [int(_ARCH[arch][0][0] * widen_factor)] + [int(s[1] * widen_factor) for s in _ARCH[arch]]
    return [chans[i] for i in out_indices]


class Focus(nn.Module):
    """Space-to-depth (2x2 -> channels, order TL, BL, TR, BR) followed by a conv block."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, **conv_kw) -> None:
        super().__init__()
        self.conv = ConvModule(in_channels * 4, out_channels, kernel_size, **conv_kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), dim=1)
        return self.conv(x)


class SPPBottleneck(nn.Module):
    """1x1 conv to C/2, concat [x, maxpool_k(x) for k in kernel_sizes] (stride 1, same size), 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes=(5, 9, 13), **conv_kw) -> None:
        super().__init__()
        mid = in_channels // 2
        self.conv1 = ConvModule(in_channels, mid, 1, **conv_kw)
        self.poolings = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv2 = ConvModule(mid * (len(kernel_sizes) + 1), out_channels, 1, **conv_kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [p(x) for p in self.poolings], dim=1))


class DarknetBottleneck(nn.Module):
    """1x1 conv -> 3x3 conv (depthwise-separable with ``use_depthwise``), plus the input when ``add_identity``
    and channels match."""

    def __init__(self, in_channels: int, out_channels: int, expansion: float = 1.0, add_identity: bool = True,
                 use_depthwise: bool = False, **conv_kw) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvModule(in_channels, hidden, 1, **conv_kw)
        conv = DepthwiseSeparableConvModule if use_depthwise else ConvModule
        self.conv2 = conv(hidden, out_channels, 3, **conv_kw)
        self.add_identity = add_identity and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return x + out if self.add_identity else out


class CSPLayer(nn.Module):
    """Cross Stage Partial layer: final_conv(cat[blocks(main_conv(x)), short_conv(x)])."""

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: float = 0.5, num_blocks: int = 1,
                 add_identity: bool = True, use_depthwise: bool = False, **conv_kw) -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvModule(in_channels, mid, 1, **conv_kw)
        self.short_conv = ConvModule(in_channels, mid, 1, **conv_kw)
        self.final_conv = ConvModule(2 * mid, out_channels, 1, **conv_kw)
        self.blocks = nn.Sequential(
            *[DarknetBottleneck(mid, mid, 1.0, add_identity, use_depthwise, **conv_kw) for _ in range(num_blocks)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_short = self.short_conv(x)
        x_main = self.blocks(self.main_conv(x))
        return self.final_conv(torch.cat((x_main, x_short), dim=1))


class CSPDarknet(nn.Module):
    """YOLOX CSPDarknet.

    Args:
        deepen_factor: multiplies the number of bottlenecks per stage (``max(round(n * d), 1)``).
        widen_factor: multiplies every channel count (``int(c * w)``).
        out_indices: which of (stem, stage1, ..., stageN) to return.
        spp_kernel_sizes: max-pool kernels of the SPP block in the last stage.
        arch: ``"P5"`` (4 stages, RTMO/YOLOX) or ``"P6"`` (5 stages).
        bn_eps, bn_momentum: BatchNorm settings (YOLOX: 1e-3, 0.03).
        act: activation (``"silu"`` = Swish).
        use_depthwise: depthwise-separable 3x3 convs in the stage downsampling and the bottlenecks (YOLOX-nano;
            the stem and SPP keep plain convs).
    """

    def __init__(
        self,
        deepen_factor: float = 1.0,
        widen_factor: float = 1.0,
        out_indices: Sequence[int] = (2, 3, 4),
        spp_kernel_sizes: Sequence[int] = (5, 9, 13),
        arch: str = "P5",
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.03,
        act: str = "silu",
        use_depthwise: bool = False,
    ) -> None:
        super().__init__()
        if arch not in _ARCH:
            raise ValueError(f"CSPDarknet arch must be one of {sorted(_ARCH)}, got {arch!r}")
        setting = _ARCH[arch]
        n_levels = len(setting) + 1
        for i in out_indices:
            if not 0 <= i < n_levels:
                raise ValueError(f"CSPDarknet out_indices entry {i} outside [0, {n_levels - 1}] for arch {arch}")
        self.out_indices = tuple(out_indices)
        self.deepen_factor = deepen_factor
        self.widen_factor = widen_factor
        self.arch = arch
        kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, act=act)
        self.stem = Focus(3, int(setting[0][0] * widen_factor), 3, **kw)
        self.layers = ["stem"]
        for i, (cin, cout, nblk, add_id, use_spp) in enumerate(setting):
            cin, cout = int(cin * widen_factor), int(cout * widen_factor)
            nblk = max(round(nblk * deepen_factor), 1)
            conv = DepthwiseSeparableConvModule if use_depthwise else ConvModule
            mods = [conv(cin, cout, 3, stride=2, **kw)]
            if use_spp:
                mods.append(SPPBottleneck(cout, cout, tuple(spp_kernel_sizes), **kw))
            mods.append(CSPLayer(cout, cout, num_blocks=nblk, add_identity=add_id, use_depthwise=use_depthwise, **kw))
            name = f"stage{i + 1}"
            self.add_module(name, nn.Sequential(*mods))
            self.layers.append(name)
        self.out_channels = cspdarknet_out_channels(widen_factor, self.out_indices, arch)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
