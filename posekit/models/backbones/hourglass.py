"""Stacked Hourglass networks (Newell et al., ECCV'16) in MMPose's ``HourglassNet`` module layout.

An hourglass module at depth ``d`` is recursive::

    up1  = ResLayer(c -> c)                      # skip branch at full resolution
    low1 = ResLayer(c -> c', stride 2)           # down path
    low2 = hourglass(d - 1) or ResLayer(c')      # bottom of the hourglass at d == 1
    low3 = ResLayer(c' -> c)                     # channel change in the LAST block
    out  = up1 + nearest_upsample_x2(low3)       # skip connection merged by element-wise addition

Residual modules are :class:`posekit.models.backbones.resnet.BasicBlock` (two 3x3 convs). MMPose (and its
``hourglass52`` checkpoint) goes down with a stride-2 first residual block; ``down="maxpool"`` gives the
original paper's 2x2 max-pool before ``low1`` instead (same parameter names; the one difference is that
``low1``'s first block then has no ``downsample`` branch when ``c == c'``, so official weights need
``down="conv"``). A stack of ``num_stacks`` hourglasses returns one feature map per stack for intermediate
supervision; between stacks the features are remapped and added (``conv1x1s`` + ``remap_convs`` -> ReLU ->
``inters``).

Names equal MMPose's (``stem``, ``hourglass_modules.i.{up1,low1,low2,low3}``, ``inters``, ``conv1x1s``,
``out_convs``, ``remap_convs``), so official checkpoints load strictly. Input ``(B, 3, H, W)`` with H and W
multiples of ``4 * 2**downsample_times``; outputs ``[(B, feat_channel, H/4, W/4)] * num_stacks``.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn

from posekit.models.backbones.resnet import BasicBlock
from posekit.models.layers import ConvModule

__all__ = ["res_layer", "HourglassModule", "HourglassNet"]

_DOWN_MODES = ("conv", "maxpool")


def res_layer(num_blocks: int, in_channels: int, out_channels: int, stride: int = 1,
              downsample_first: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> nn.Sequential:
    """MMPose's ``ResLayer`` of :class:`BasicBlock` s: ``max(num_blocks, 1)`` blocks (MMPose always builds at
    least one); the block that changes channels / stride is the first (``downsample_first``) or the last."""
    n = max(int(num_blocks), 1)
    kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
    if downsample_first:
        blocks = [BasicBlock(in_channels, out_channels, stride, **kw)]
        blocks += [BasicBlock(out_channels, out_channels, 1, **kw) for _ in range(n - 1)]
    else:
        blocks = [BasicBlock(in_channels, in_channels, 1, **kw) for _ in range(n - 1)]
        blocks.append(BasicBlock(in_channels, out_channels, stride, **kw))
    return nn.Sequential(*blocks)


class HourglassModule(nn.Module):
    """One recursive hourglass of depth ``depth`` (see the module docstring); ``(B, c, h, w) -> (B, c, h, w)``
    with ``c = stage_channels[0]``; h and w must be divisible by ``2**depth``."""

    def __init__(self, depth: int, stage_channels: Sequence[int], stage_blocks: Sequence[int],
                 down: str = "conv", bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        if down not in _DOWN_MODES:
            raise ValueError(f"HourglassModule down must be one of {_DOWN_MODES}, got {down!r}")
        self.depth = int(depth)
        self.down = down
        kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        cur_block, next_block = int(stage_blocks[0]), int(stage_blocks[1])
        cur, nxt = int(stage_channels[0]), int(stage_channels[1])
        self.pool = nn.MaxPool2d(2, 2) if down == "maxpool" else None
        self.up1 = res_layer(cur_block, cur, cur, **kw)
        self.low1 = res_layer(cur_block, cur, nxt, stride=2 if down == "conv" else 1, **kw)
        if self.depth > 1:
            self.low2 = HourglassModule(self.depth - 1, stage_channels[1:], stage_blocks[1:], down, **kw)
        else:
            self.low2 = res_layer(next_block, nxt, nxt, **kw)
        self.low3 = res_layer(cur_block, nxt, cur, downsample_first=False, **kw)
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.up1(x)
        low = self.low1(self.pool(x) if self.pool is not None else x)
        low = self.low3(self.low2(low))
        return skip + self.up2(low)


class HourglassNet(nn.Module):
    """A stack of hourglasses (MMPose ``HourglassNet``): ``forward(x) -> [feature of stack i]``.

    Args:
        downsample_times: depth of each hourglass (5 for Hourglass-52).
        num_stacks: hourglasses stacked (1 = Hourglass-52, 2 = Hourglass-104).
        stage_channels / stage_blocks: width / residual blocks at each depth (``len > downsample_times``);
            MMPose: ``(256, 256, 384, 384, 384, 512)`` / ``(2, 2, 2, 2, 2, 4)``.
        feat_channel: width of each stack's 3x3 output ConvModule (256).
        stem_channels: ``(c_conv, c_res)`` of the stride-2 7x7 ConvModule and the stride-2 residual block
            (MMPose hard-codes ``(128, 256)``; ``c_res`` must equal ``stage_channels[0]``).
        down: ``"conv"`` (MMPose, stride-2 residual block) or ``"maxpool"`` (2x2 max-pool, Newell et al.).
        bn_eps, bn_momentum: BatchNorm settings.
    """

    def __init__(self, downsample_times: int = 5, num_stacks: int = 1,
                 stage_channels: Sequence[int] = (256, 256, 384, 384, 384, 512),
                 stage_blocks: Sequence[int] = (2, 2, 2, 2, 2, 4), feat_channel: int = 256,
                 stem_channels: Sequence[int] = (128, 256), down: str = "conv",
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        if num_stacks < 1:
            raise ValueError(f"HourglassNet num_stacks must be >= 1, got {num_stacks}")
        if len(stage_channels) != len(stage_blocks):
            raise ValueError(f"HourglassNet stage_channels {tuple(stage_channels)} and stage_blocks "
                             f"{tuple(stage_blocks)} must have the same length")
        if len(stage_channels) <= downsample_times:
            raise ValueError(f"HourglassNet needs more than downsample_times={downsample_times} stage_channels, "
                             f"got {len(stage_channels)}")
        if len(stem_channels) != 2 or int(stem_channels[1]) != int(stage_channels[0]):
            raise ValueError(f"HourglassNet stem_channels {tuple(stem_channels)} must be (c_conv, c_res) with "
                             f"c_res == stage_channels[0] = {stage_channels[0]}")
        self.num_stacks = int(num_stacks)
        self.downsample_times = int(downsample_times)
        kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        cur = int(stage_channels[0])
        self.out_channels = int(feat_channel)
        self.stem = nn.Sequential(
            ConvModule(3, int(stem_channels[0]), 7, stride=2, padding=3, act="relu", **kw),
            res_layer(1, int(stem_channels[0]), cur, stride=2, **kw))
        self.hourglass_modules = nn.ModuleList([
            HourglassModule(downsample_times, stage_channels, stage_blocks, down, **kw) for _ in range(num_stacks)])
        self.inters = res_layer(num_stacks - 1, cur, cur, **kw)
        self.conv1x1s = nn.ModuleList([ConvModule(cur, cur, 1, act=None, **kw) for _ in range(num_stacks - 1)])
        self.out_convs = nn.ModuleList([
            ConvModule(cur, feat_channel, 3, padding=1, act="relu", **kw) for _ in range(num_stacks)])
        self.remap_convs = nn.ModuleList([
            ConvModule(feat_channel, cur, 1, act=None, **kw) for _ in range(num_stacks - 1)])
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``(B, 3, H, W) -> [(B, feat_channel, H/4, W/4)] * num_stacks`` (stack 1 first)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"HourglassNet input must be (B, 3, H, W), got {tuple(x.shape)}")
        div = 4 * 2 ** self.downsample_times
        if x.shape[2] % div or x.shape[3] % div:
            raise ValueError(f"HourglassNet input height and width must be multiples of {div} "
                             f"(4 * 2**downsample_times), got {tuple(x.shape[2:])}")
        inter = self.stem(x)
        outs = []
        for i in range(self.num_stacks):
            out = self.out_convs[i](self.hourglass_modules[i](inter))
            outs.append(out)
            if i < self.num_stacks - 1:
                inter = self.conv1x1s[i](inter) + self.remap_convs[i](out)
                inter = self.inters[i](self.relu(inter))
        return outs
