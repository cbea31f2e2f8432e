"""ResNet backbone (He et al. 2016) with MMPose / torchvision parameter names.

``ResNet(depth, ...)`` takes ``(B, in_channels, H, W)`` and returns a **tuple** of the stage outputs selected by
``out_indices`` (stage ``i`` has stride ``4 * 2**i`` with the default strides; channels ``out_channels[i]``).
Keys: ``conv1``, ``bn1``, ``layer{1..4}.{j}.conv{1,2[,3]}`` / ``bn{1,2[,3]}`` / ``downsample.{0,1}``, so MMPose
(``backbone.*``) and torchvision ImageNet checkpoints load strictly. Style "pytorch": the stride of a
Bottleneck sits on its 3x3 conv. The deep stem / average-pool shortcut of ResNetV1d are not implemented.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "RESNET_ARCH"]


class BasicBlock(nn.Module):
    """3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, plus the (downsampled) input, ReLU. ``expansion = 1``."""

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride, bn_eps, bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 convs with BN, mid width ``out_channels // 4``, residual, ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        mid = out_channels // self.expansion
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid, eps=bn_eps, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(mid, eps=bn_eps, momentum=bn_momentum)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride, bn_eps, bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(cin: int, cout: int, stride: int, eps: float, momentum: float):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=eps, momentum=momentum))


#: depth -> (block class, blocks per stage)
RESNET_ARCH = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """ResNet-18/34/50/101/152.

    Args:
        depth: one of :data:`RESNET_ARCH`.
        in_channels: input channels (3).
        stem_channels: width of the 7x7 stride-2 stem conv (64).
        base_channels: width of stage 1 before expansion (64); stage ``i`` has
            ``base_channels * 2**i * expansion`` output channels.
        strides / dilations: per stage (default ``(1, 2, 2, 2)`` / ``(1, 1, 1, 1)``).
        out_indices: stages returned, 0-based (default ``(3,)``: stride 32 only).
        bn_eps, bn_momentum: BatchNorm settings.

    Attributes:
        out_channels: list of the channels of every stage (index with ``out_indices``).
    """

    def __init__(self, depth: int = 50, in_channels: int = 3, stem_channels: int = 64, base_channels: int = 64,
                 strides: Sequence[int] = (1, 2, 2, 2), dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Sequence[int] = (3,), bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        if depth not in RESNET_ARCH:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_ARCH)}, got {depth}")
        if len(strides) != 4 or len(dilations) != 4:
            raise ValueError(f"ResNet strides/dilations need 4 entries, got {strides} / {dilations}")
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or any(i < 0 or i > 3 for i in out_indices):
            raise ValueError(f"ResNet out_indices must be in 0..3, got {out_indices}")
        block, counts = RESNET_ARCH[depth]
        self.depth = depth
        self.out_indices = out_indices
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels, eps=bn_eps, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = stem_channels
        self.out_channels = []
        for i, n in enumerate(counts):
            cout = base_channels * 2 ** i * block.expansion
            blocks = [block(cin if j == 0 else cout, cout, strides[i] if j == 0 else 1, dilations[i],
                            bn_eps, bn_momentum) for j in range(n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.out_channels.append(cout)
            cin = cout

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
