"""Heatmap heads: SimpleBaseline's deconvolution head and ViTPose's classic / simple decoders.

``HeatmapHead`` (MMPose key layout ``deconv_layers.*``, ``conv_layers.*``, ``final_layer``): the last feature map
``(B, C, h, w)`` -> ``deconv_layers`` = ``[ConvTranspose2d(k, stride 2, no bias), BN, ReLU] * n`` (each doubles the
size) -> optional ``conv_layers`` = ``[Conv2d(k), BN, ReLU] * m`` -> ``final_layer`` Conv2d (bias) to K heatmaps.

* SimpleBaseline: three 4x4 deconvs of 256 channels, 1x1 final conv (stride-32 features -> stride-4 maps).
* ViTPose classic decoder: two 4x4 deconvs of 256 channels, 1x1 final conv (stride 16 -> stride 4).
* ViTPose simple decoder: :class:`FeatureMapProcessor` (ReLU, bilinear x4) then a head with no deconv and a
  3x3 final conv.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["HeatmapHead", "FeatureMapProcessor", "deconv_padding"]


def deconv_padding(kernel_size: int) -> Tuple[int, int]:
    """``(padding, output_padding)`` that make a stride-2 ConvTranspose2d exactly double the size."""
    table = {4: (1, 0), 3: (1, 1), 2: (0, 0)}
    if kernel_size not in table:
        raise ValueError(f"deconv kernel size must be 2, 3 or 4, got {kernel_size}")
    return table[kernel_size]


class FeatureMapProcessor(nn.Module):
    """ViTPose simple-decoder neck: ReLU (``apply_relu``) then bilinear resize by ``scale_factor``
    (align_corners False) of every feature map. No parameters."""

    def __init__(self, scale_factor: float = 4.0, apply_relu: bool = True) -> None:
        super().__init__()
        self.scale_factor = float(scale_factor)
        self.apply_relu = apply_relu

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        out = []
        for f in feats:
            if self.apply_relu:
                f = F.relu(f)
            if self.scale_factor != 1.0:
                f = F.interpolate(f, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
            out.append(f)
        return tuple(out)


class HeatmapHead(nn.Module):
    """Deconvolution heatmap head (see the module docstring).

    Args:
        in_channels: channels of the last feature map.
        out_channels: number of heatmaps K (add 1 for a background channel).
        deconv_out_channels / deconv_kernel_sizes: one entry per deconv layer (empty: none).
        conv_out_channels / conv_kernel_sizes: optional plain conv layers after the deconvs.
        final_layer_kernel: kernel of the final conv (1 or 3); ``None`` disables it (the head then outputs the
            last layer's features).
        bn_eps, bn_momentum: BatchNorm settings.

    ``forward(feats)`` takes a tuple/list of feature maps (uses the last) or one tensor; returns
    ``(B, K, H, W)`` heatmaps.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 deconv_out_channels: Sequence[int] = (256, 256, 256), deconv_kernel_sizes: Sequence[int] = (4, 4, 4),
                 conv_out_channels: Optional[Sequence[int]] = None, conv_kernel_sizes: Optional[Sequence[int]] = None,
                 final_layer_kernel: Optional[int] = 1, bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        deconv_out_channels = list(deconv_out_channels or [])
        deconv_kernel_sizes = list(deconv_kernel_sizes or [])
        if len(deconv_out_channels) != len(deconv_kernel_sizes):
            raise ValueError(f"deconv_out_channels {deconv_out_channels} and deconv_kernel_sizes "
                             f"{deconv_kernel_sizes} must have the same length")
        c = in_channels
        if deconv_out_channels:
            layers = []
            for oc, k in zip(deconv_out_channels, deconv_kernel_sizes):
                p, op = deconv_padding(int(k))
                layers += [nn.ConvTranspose2d(c, oc, int(k), 2, p, op, bias=False),
                           nn.BatchNorm2d(oc, eps=bn_eps, momentum=bn_momentum), nn.ReLU(inplace=True)]
                c = oc
            self.deconv_layers = nn.Sequential(*layers)
        else:
            self.deconv_layers = nn.Identity()
        conv_out_channels = list(conv_out_channels or [])
        conv_kernel_sizes = list(conv_kernel_sizes or [])
        if len(conv_out_channels) != len(conv_kernel_sizes):
            raise ValueError(f"conv_out_channels {conv_out_channels} and conv_kernel_sizes {conv_kernel_sizes} "
                             f"must have the same length")
        if conv_out_channels:
            layers = []
            for oc, k in zip(conv_out_channels, conv_kernel_sizes):
                layers += [nn.Conv2d(c, oc, int(k), 1, (int(k) - 1) // 2),
                           nn.BatchNorm2d(oc, eps=bn_eps, momentum=bn_momentum), nn.ReLU(inplace=True)]
                c = oc
            self.conv_layers = nn.Sequential(*layers)
        else:
            self.conv_layers = nn.Identity()
        if final_layer_kernel is not None:
            k = int(final_layer_kernel)
            self.final_layer = nn.Conv2d(c, out_channels, k, 1, (k - 1) // 2)
        else:
            self.final_layer = nn.Identity()
        self.out_channels = out_channels

    @torch.no_grad()
    def init_weights(self) -> None:
        """MMPose's ``default_init_cfg`` of ``HeatmapHead`` (and SimpleBaseline's original init), for training from
        scratch: every ``Conv2d`` / ``ConvTranspose2d`` ``N(0, 0.001)`` with zero bias, every ``BatchNorm2d``
        scale 1 and bias 0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
        x = feats if isinstance(feats, torch.Tensor) else feats[-1]
        return self.final_layer(self.conv_layers(self.deconv_layers(x)))
