"""Convolutional Pose Machines (Wei et al., CVPR'16) backbone, in MMPose's module layout.

Stage 1 predicts belief maps ``b_1`` from local image evidence only (the ``stem``: 9x9 convolutions and three
stride-2 max-pools, then 9x9 / 1x1 convolutions). Every later stage ``t`` predicts
``b_t = g_t(x', b_{t-1})`` from shared image features ``x'`` (the ``middle`` trunk, followed by a per-stage
5x5 ``middle_conv``) concatenated with the previous stage's belief maps: three 11x11 convolutions
(:class:`CpmBlock`) then two 1x1 convolutions. The receptive field grows with the stacked large kernels of each
stage, not with further pooling: every stage works at stride 8.

Module and parameter names (``stem.N``, ``middle.N``, ``cpm_stages.i.model.N``, ``middle_conv.i.0``,
``out_convs.i.{0,1}``, each a ``conv`` / ``bn`` ConvModule) equal MMPose's ``CPM`` backbone, so official
checkpoints load strictly.

Shapes: input ``(B, 3, H, W)`` (RGB, ImageNet mean/std in the official models); output a list of
``num_stages`` belief-map tensors ``(B, out_channels, ceil(H/8), ceil(W/8))``, stage 1 first.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn

from posekit.models.layers import ConvModule

__all__ = ["CpmBlock", "CPM"]

#: MMPose's hard-coded widths: stem ConvModules (9x9, 9x9, 9x9, 5x5, 9x9, 1x1) and middle ConvModules (9x9 x3).
CPM_STEM_CHANNELS = (128, 128, 128, 32, 512, 512)
CPM_MIDDLE_CHANNELS = (128, 128, 128)


class CpmBlock(nn.Module):
    """A stack of ``same``-padded ConvModules (conv -> BN -> ReLU); ``model`` is the ``nn.Sequential``.

    ``(B, in_channels, h, w) -> (B, channels[-1], h, w)``.
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (128, 128, 128),
                 kernels: Sequence[int] = (11, 11, 11), bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        if len(channels) != len(kernels) or not channels:
            raise ValueError(f"CpmBlock: channels {tuple(channels)} and kernels {tuple(kernels)} must be "
                             f"non-empty and of equal length")
        layers = []
        c_in = in_channels
        for c, k in zip(channels, kernels):
            layers.append(ConvModule(c_in, c, k, padding=(k - 1) // 2, act="relu", bn_eps=bn_eps,
                                     bn_momentum=bn_momentum))
            c_in = c
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


class CPM(nn.Module):
    """The CPM backbone: ``forward(x) -> [b_1, ..., b_T]`` (see the module docstring).

    Args:
        in_channels: image channels (3).
        out_channels: belief maps per stage: ``K`` keypoints, or ``K + 1`` with the background map of the paper.
        feat_channels: width of the 11x11 convolutions of stages 2..T (MMPose: 128).
        middle_channels: width of the per-stage 5x5 ``middle_conv`` (MMPose: 32).
        num_stages: ``T`` >= 1.
        stem_channels: widths of the six stem ConvModules (MMPose hard-codes ``(128, 128, 128, 32, 512, 512)``).
        middle_widths: widths of the three middle-trunk ConvModules (MMPose: ``(128, 128, 128)``).
        bn_eps, bn_momentum: BatchNorm settings (MMPose: 1e-5, 0.1).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 17, feat_channels: int = 128,
                 middle_channels: int = 32, num_stages: int = 6,
                 stem_channels: Sequence[int] = CPM_STEM_CHANNELS,
                 middle_widths: Sequence[int] = CPM_MIDDLE_CHANNELS,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"CPM num_stages must be >= 1, got {num_stages}")
        if len(stem_channels) != 6:
            raise ValueError(f"CPM stem_channels must have 6 widths, got {tuple(stem_channels)}")
        if len(middle_widths) != 3:
            raise ValueError(f"CPM middle_widths must have 3 widths, got {tuple(middle_widths)}")
        self.num_stages = int(num_stages)
        self.out_channels = int(out_channels)
        bn = dict(act="relu", bn_eps=bn_eps, bn_momentum=bn_momentum)
        s = [int(c) for c in stem_channels]
        self.stem = nn.Sequential(
            ConvModule(in_channels, s[0], 9, padding=4, **bn), _pool(),
            ConvModule(s[0], s[1], 9, padding=4, **bn), _pool(),
            ConvModule(s[1], s[2], 9, padding=4, **bn), _pool(),
            ConvModule(s[2], s[3], 5, padding=2, **bn),
            ConvModule(s[3], s[4], 9, padding=4, **bn),
            ConvModule(s[4], s[5], 1, padding=0, **bn),
            ConvModule(s[5], out_channels, 1, padding=0, norm=False, act=None),
        )
        m = [int(c) for c in middle_widths]
        self.middle = nn.Sequential(
            ConvModule(in_channels, m[0], 9, padding=4, **bn), _pool(),
            ConvModule(m[0], m[1], 9, padding=4, **bn), _pool(),
            ConvModule(m[1], m[2], 9, padding=4, **bn), _pool(),
        )
        n = self.num_stages - 1
        self.cpm_stages = nn.ModuleList([
            CpmBlock(middle_channels + out_channels, (feat_channels,) * 3, (11, 11, 11), bn_eps, bn_momentum)
            for _ in range(n)])
        self.middle_conv = nn.ModuleList([
            nn.Sequential(ConvModule(m[2], middle_channels, 5, padding=2, **bn)) for _ in range(n)])
        self.out_convs = nn.ModuleList([
            nn.Sequential(ConvModule(feat_channels, feat_channels, 1, padding=0, **bn),
                          ConvModule(feat_channels, out_channels, 1, padding=0, norm=False, act=None))
            for _ in range(n)])

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``(B, 3, H, W) -> [b_1, ..., b_T]``, each ``(B, out_channels, h, w)`` at stride 8."""
        if x.ndim != 4:
            raise ValueError(f"CPM input must be (B, C, H, W), got {tuple(x.shape)}")
        beliefs = [self.stem(x)]
        if self.num_stages > 1:
            image_feats = self.middle(x)
            for stage, ctx_conv, out_conv in zip(self.cpm_stages, self.middle_conv, self.out_convs):
                z = torch.cat([beliefs[-1], ctx_conv(image_feats)], dim=1)
                beliefs.append(out_conv(stage(z)))
        return beliefs
