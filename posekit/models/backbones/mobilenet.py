"""A small MobileNetV2 trunk at stride 8 for the light OpenPose configuration.

MobileNetV2 (inverted residual blocks: 1x1 expand -> 3x3 depthwise -> 1x1 linear projection, BatchNorm, ReLU6,
identity shortcut when shapes allow) truncated after its stride-8 stage, followed by a few dilated stride-1
blocks (wider receptive field without losing resolution, as in light OpenPose variants) and a 3x3 "CPM"
adaptation conv to ``out_channels``.

Shapes: ``(B, 3, H, W)`` normalised input -> ``(B, out_channels, ceil(H/8), ceil(W/8))``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["MobileNetV2Stride8", "InvertedResidual"]


def _round_channels(c: float, divisor: int = 8) -> int:
    """Channels scaled by a width multiplier, rounded to a multiple of ``divisor`` (never below 90 %)."""
    out = max(divisor, int(c + divisor / 2) // divisor * divisor)
    if out < 0.9 * c:
        out += divisor
    return out


def _conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, dilation: int = 1,
                 act: bool = True) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: ``(B, cin, H, W)`` -> ``(B, cout, H/stride, W/stride)``."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_act(cin, hidden, 1))
        layers.append(_conv_bn_act(hidden, hidden, 3, stride, groups=hidden, dilation=dilation))
        layers.append(_conv_bn_act(hidden, cout, 1, act=False))
        self.conv = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_shortcut else y


class MobileNetV2Stride8(nn.Module):
    """MobileNetV2 stem and stages up to stride 8, extra dilated blocks, and a 3x3 adaptation conv.

    Args:
        width: width multiplier of MobileNetV2 (1.0 = the original channels 32/16/24/32).
        extra_blocks: number of stride-1, dilation-2 inverted residual blocks after the stride-8 stage.
        extra_channels: channels of those blocks (before the width multiplier).
        out_channels: channels of the returned feature map (after ``cpm``: conv 3x3 + BN + ReLU).

    Module names: ``stem``, ``features`` (the inverted residual blocks), ``cpm``.
    """

    stride = 8

    def __init__(self, width: float = 0.5, extra_blocks: int = 2, extra_channels: int = 64,
                 out_channels: int = 64) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"MobileNetV2Stride8: width must be > 0, got {width}")
        # (expand, channels, repeats, stride, dilation) -- MobileNetV2's first three stages, then the extras.
        settings = [(1, 16, 1, 1, 1), (6, 24, 2, 2, 1), (6, 32, 3, 2, 1)]
        if extra_blocks > 0:
            settings.append((6, extra_channels, extra_blocks, 1, 2))
        stem_c = _round_channels(32 * width)
        self.stem = _conv_bn_act(3, stem_c, 3, stride=2)
        blocks: list[nn.Module] = []
        cin = stem_c
        for t, c, n, s, d in settings:
            cout = _round_channels(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, dilation=d))
                cin = cout
        self.features = nn.Sequential(*blocks)
        self.cpm = _conv_bn_act(cin, out_channels, 3)
        self.out_channels = int(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, out_channels, ceil(H/8), ceil(W/8))``."""
        return self.cpm(self.features(self.stem(x)))
