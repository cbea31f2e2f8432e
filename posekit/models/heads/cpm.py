"""Multi-stage heatmap head (MMPose ``CPMHead``), shared by CPM and Stacked Hourglass.

One branch per stage: optional deconvolution layers (``ConvTranspose2d(k, stride 2, no bias) -> BN -> ReLU``,
``multi_deconv_layers.i``) then an optional 1x1 conv with bias (``multi_final_layers.i``). CPM's official
config has neither (the backbone already outputs belief maps, the head is parameter-free); Hourglass has the
1x1 final conv. Names equal MMPose's, so ``head.*`` checkpoint keys load strictly.

``forward(feats)``: a list of ``num_stages`` tensors ``(B, C, h, w)`` -> ``{"heatmaps": last stage
(B, K, h', w'), "stage_heatmaps": [every stage, stage 1 first]}``.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

from posekit.models.heads.heatmap import deconv_padding

__all__ = ["CPMHead"]


class CPMHead(nn.Module):
    """See the module docstring.

    Args:
        in_channels: channels of every stage's input feature.
        out_channels: heatmaps per stage (``K``, or ``K + 1`` with a background map).
        num_stages: stages (= backbone outputs).
        deconv_out_channels / deconv_kernel_sizes: per deconv layer (None / empty = no deconv layers).
        final_layer: add the 1x1 conv (True) or not (False; then ``in_channels`` must equal ``out_channels``
            after the deconvs).
    """

    def __init__(self, in_channels: int, out_channels: int, num_stages: int,
                 deconv_out_channels: Optional[Sequence[int]] = None,
                 deconv_kernel_sizes: Optional[Sequence[int]] = None, final_layer: bool = True,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"CPMHead num_stages must be >= 1, got {num_stages}")
        self.num_stages = int(num_stages)
        self.out_channels = int(out_channels)
        deconv_out_channels = list(deconv_out_channels or [])
        deconv_kernel_sizes = list(deconv_kernel_sizes or [])
        if len(deconv_out_channels) != len(deconv_kernel_sizes):
            raise ValueError(f"CPMHead deconv_out_channels {deconv_out_channels} and deconv_kernel_sizes "
                             f"{deconv_kernel_sizes} must have the same length")
        self.multi_deconv_layers = nn.ModuleList()
        c_out = in_channels
        for _ in range(self.num_stages):
            if not deconv_out_channels:
                self.multi_deconv_layers.append(nn.Identity())
                continue
            layers, c = [], in_channels
            for oc, k in zip(deconv_out_channels, deconv_kernel_sizes):
                pad, opad = deconv_padding(int(k))
                layers += [nn.ConvTranspose2d(c, oc, k, stride=2, padding=pad, output_padding=opad, bias=False),
                           nn.BatchNorm2d(oc, eps=bn_eps, momentum=bn_momentum), nn.ReLU(inplace=True)]
                c = oc
            self.multi_deconv_layers.append(nn.Sequential(*layers))
            c_out = c
        if not final_layer and c_out != out_channels:
            raise ValueError(f"CPMHead without a final layer passes its {c_out}-channel input through, but "
                             f"out_channels = {out_channels}")
        self.multi_final_layers = nn.ModuleList([
            nn.Conv2d(c_out, out_channels, 1) if final_layer else nn.Identity() for _ in range(self.num_stages)])

    def forward(self, feats: Sequence[torch.Tensor]) -> Dict[str, object]:
        if len(feats) != self.num_stages:
            raise ValueError(f"CPMHead expects {self.num_stages} stage features, got {len(feats)}")
        stages = [fin(dec(f)) for f, dec, fin in zip(feats, self.multi_deconv_layers, self.multi_final_layers)]
        return {"heatmaps": stages[-1], "stage_heatmaps": stages}
