"""The OpenPose VGG-19 trunk: the first ten convolutions of VGG-19 plus ``conv4_3_CPM`` / ``conv4_4_CPM``.

Layer names are CMU's Caffe layer names (``conv1_1`` ... ``conv4_2``, ``conv4_3_CPM``, ``conv4_4_CPM``), so the
flat keys of the widely used PyTorch conversion of CMU's ``pose_iter_440000`` (``conv1_1.weight``, ...) match
this module's ``state_dict`` keys one to one.

Shapes: ``(B, 3, H, W)`` normalised input (CMU: BGR, ``x / 256 - 0.5``) -> ``(B, 128, ceil(H/8), ceil(W/8))``.
The three 2x2 max-pools round up (Caffe's ceil mode); for ``H, W`` multiples of 8 this equals floor mode.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["VGG19CPM", "VGG19_CPM_LAYERS"]

#: ``(name, in_channels, out_channels)`` of every 3x3 convolution (stride 1, pad 1, ReLU after), in order;
#: ``"pool"`` marks a 2x2 / stride 2 max-pool.
VGG19_CPM_LAYERS: tuple = (
    ("conv1_1", 3, 64), ("conv1_2", 64, 64), "pool",
    ("conv2_1", 64, 128), ("conv2_2", 128, 128), "pool",
    ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv3_4", 256, 256), "pool",
    ("conv4_1", 256, 512), ("conv4_2", 512, 512),
    ("conv4_3_CPM", 512, 256), ("conv4_4_CPM", 256, 128),
)


class VGG19CPM(nn.Module):
    """VGG-19 up to ``conv4_2`` followed by the two CPM adaptation convolutions; every conv has a ReLU.

    Args:
        cpm_channels: output channels of ``conv4_3_CPM`` and ``conv4_4_CPM`` (CMU: 256, 128).

    Attributes:
        out_channels: channels of the returned feature map ``F``.
        stride: 8.
    """

    stride = 8

    def __init__(self, cpm_channels: tuple[int, int] = (256, 128)) -> None:
        super().__init__()
        self._plan: list[str] = []
        for item in VGG19_CPM_LAYERS:
            if item == "pool":
                self._plan.append("pool")
                continue
            name, cin, cout = item
            if name == "conv4_3_CPM":
                cout = cpm_channels[0]
            elif name == "conv4_4_CPM":
                cin, cout = cpm_channels
            self.add_module(name, nn.Conv2d(cin, cout, 3, 1, 1))
            self._plan.append(name)
        self.out_channels = int(cpm_channels[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, out_channels, ceil(H/8), ceil(W/8))``."""
        for step in self._plan:
            if step == "pool":
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            else:
                x = F.relu(getattr(self, step)(x))
        return x
