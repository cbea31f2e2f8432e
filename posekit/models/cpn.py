"""Cascaded Pyramid Network (Chen et al., CVPR'18): GlobalNet + RefineNet on a ResNet's C2..C5.

* :class:`GlobalNet` -- a feature pyramid over the backbone stages, deepest first: every level gets a 1x1
  lateral convolution (``channels`` wide, BN, ReLU); a level's feature is upsampled (bilinear, to the next
  level's size), passed through a 1x1 convolution + BN and added to the next lateral. Each level has its own
  predictor (1x1 conv + BN + ReLU, 3x3 conv to ``K`` maps, bilinear resize to the heatmap size, BN). Trained
  with an L2 loss on every level.
* :class:`RefineNet` -- each pyramid feature goes through ``blocks[i]`` bottleneck blocks (more on the deeper
  levels: ``(3, 2, 1, 0)`` from C5 to C2), is upsampled to the heatmap size, and all levels are concatenated;
  one more bottleneck and a 3x3 conv + BN predict the final heatmaps. Trained with online hard keypoint
  mining (:func:`posekit.losses.stage.ohkm_loss`).

Level order everywhere in this module: **deepest (C5) first**, as the paper's code. Shapes: backbone features
``[(B, C_i, h_i, w_i)]``; outputs ``(B, K, H, W)`` at ``heatmap_size = (W, H)`` (stride 4 for 256x192 input).
There is no official MMPose CPN checkpoint; the module names are posekit's own.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from posekit.models.layers import ConvModule

__all__ = ["RefineBottleneck", "GlobalNet", "RefineNet", "CPNHead"]


def _resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class RefineBottleneck(nn.Module):
    """CPN's RefineNet bottleneck: 1x1 (``mid``) -> 3x3 (``mid``) -> 1x1 (``2 * mid``), each with BN, plus a
    1x1 conv + BN projection of the input (always present, as in the paper's code), then ReLU.
    ``(B, in_channels, h, w) -> (B, 2 * mid, h, w)``."""

    expansion = 2

    def __init__(self, in_channels: int, mid: int, bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        out = mid * self.expansion
        self.conv1 = ConvModule(in_channels, mid, 1, act="relu", **kw)
        self.conv2 = ConvModule(mid, mid, 3, act="relu", **kw)
        self.conv3 = ConvModule(mid, out, 1, act=None, **kw)
        self.downsample = ConvModule(in_channels, out, 1, act=None, **kw)
        self.out_channels = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + self.downsample(x))


class GlobalNet(nn.Module):
    """Feature pyramid + per-level predictors (see the module docstring).

    Args:
        in_channels: backbone channels per level, deepest first (ResNet-50: ``(2048, 1024, 512, 256)``).
        num_keypoints: ``K``.
        heatmap_size: ``(W, H)`` of the predicted maps.
        channels: pyramid width (256).
    ``forward(feats) -> (pyramid features [(B, channels, h_i, w_i)], heatmaps [(B, K, H, W)])``.
    """

    def __init__(self, in_channels: Sequence[int], num_keypoints: int, heatmap_size: Tuple[int, int],
                 channels: int = 256, bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        if len(in_channels) < 1:
            raise ValueError("GlobalNet needs at least one input level")
        kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.out_hw = (int(heatmap_size[1]), int(heatmap_size[0]))
        self.channels = int(channels)
        L = len(in_channels)
        self.laterals = nn.ModuleList([ConvModule(c, channels, 1, act="relu", **kw) for c in in_channels])
        # top-down path: bilinear upsample, then a 1x1 conv (with bias, as the paper's code) + BN
        self.upsamples = nn.ModuleList([
            nn.Sequential(nn.Conv2d(channels, channels, 1, bias=True),
                          nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum)) for _ in range(L - 1)])
        self.predict = nn.ModuleList([
            nn.ModuleDict(dict(
                conv1=ConvModule(channels, channels, 1, act="relu", **kw),
                conv2=nn.Conv2d(channels, num_keypoints, 3, padding=1, bias=False),
                bn=nn.BatchNorm2d(num_keypoints, eps=bn_eps, momentum=bn_momentum)))
            for _ in range(L)])

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        if len(feats) != len(self.laterals):
            raise ValueError(f"GlobalNet expects {len(self.laterals)} feature levels, got {len(feats)}")
        fms, outs = [], []
        up = None
        for i, x in enumerate(feats):
            f = self.laterals[i](x)
            if up is not None:
                f = f + self.upsamples[i - 1](_resize(up, tuple(f.shape[-2:])))
            fms.append(f)
            up = f
            p = self.predict[i]
            h = p["conv2"](p["conv1"](f))
            outs.append(p["bn"](_resize(h, self.out_hw)))
        return fms, outs


class RefineNet(nn.Module):
    """Per-level bottleneck stacks, upsample, concatenate, final bottleneck + 3x3 conv + BN.

    Args:
        num_levels: pyramid levels (4).
        num_keypoints: ``K``.
        heatmap_size: ``(W, H)``.
        channels: pyramid width (256).
        mid_channels: bottleneck width (128; a bottleneck outputs ``2 * mid_channels``).
        blocks: bottlenecks per level, deepest first (``(3, 2, 1, 0)``).
    ``forward(pyramid features) -> (B, K, H, W)``.
    """

    def __init__(self, num_levels: int, num_keypoints: int, heatmap_size: Tuple[int, int], channels: int = 256,
                 mid_channels: int = 128, blocks: Sequence[int] = (3, 2, 1, 0), bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        if len(blocks) != num_levels:
            raise ValueError(f"RefineNet blocks {tuple(blocks)} must have one entry per level ({num_levels})")
        kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.out_hw = (int(heatmap_size[1]), int(heatmap_size[0]))
        self.cascade = nn.ModuleList()
        cat = 0
        for n in blocks:
            layers, c = [], channels
            for _ in range(int(n)):
                layers.append(RefineBottleneck(c, mid_channels, **kw))
                c = layers[-1].out_channels
            self.cascade.append(nn.Sequential(*layers))
            cat += c
        self.final_block = RefineBottleneck(cat, mid_channels, **kw)
        self.final_conv = nn.Conv2d(self.final_block.out_channels, num_keypoints, 3, padding=1, bias=False)
        self.final_bn = nn.BatchNorm2d(num_keypoints, eps=bn_eps, momentum=bn_momentum)

    def forward(self, fms: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(fms) != len(self.cascade):
            raise ValueError(f"RefineNet expects {len(self.cascade)} feature levels, got {len(fms)}")
        ups = [_resize(stack(f), self.out_hw) for stack, f in zip(self.cascade, fms)]
        return self.final_bn(self.final_conv(self.final_block(torch.cat(ups, dim=1))))


class CPNHead(nn.Module):
    """GlobalNet + RefineNet on a backbone's stage outputs.

    ``forward(feats)`` takes the backbone tuple **shallowest first** (C2, C3, C4, C5, as
    :class:`posekit.models.backbones.resnet.ResNet` returns it) and returns
    ``{"heatmaps": RefineNet (B, K, H, W), "global_heatmaps": [GlobalNet level, deepest first],
    "stage_heatmaps": global levels + [refine]}``.
    """

    def __init__(self, in_channels: Sequence[int], num_keypoints: int, heatmap_size: Tuple[int, int],
                 channels: int = 256, mid_channels: int = 128, refine_blocks: Sequence[int] = (3, 2, 1, 0),
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        deep_first = list(in_channels)[::-1]
        self.global_net = GlobalNet(deep_first, num_keypoints, heatmap_size, channels, bn_eps, bn_momentum)
        self.refine_net = RefineNet(len(deep_first), num_keypoints, heatmap_size, channels, mid_channels,
                                    refine_blocks, bn_eps, bn_momentum)

    def forward(self, feats: Sequence[torch.Tensor]) -> Dict[str, object]:
        fms, global_outs = self.global_net(list(feats)[::-1])
        refine = self.refine_net(fms)
        return {"heatmaps": refine, "global_heatmaps": global_outs, "stage_heatmaps": global_outs + [refine]}
