"""RTMPose's SimCC head (MMPose ``RTMCCHead``) with its gated attention block (``RTMCCBlock``).

``RTMCCHead.forward(feats)``: last feature map ``(B, C, h, w)`` -> ``final_layer`` Conv2d(C, K, 7, pad 3) ->
flatten to ``(B, K, h*w)`` (row-major) -> ``mlp`` = ScaleNorm(h*w) + Linear(h*w, hidden, no bias) ->
``gau`` (self-attention over the K keypoint tokens) -> ``cls_x`` Linear(hidden, Wx), ``cls_y`` Linear(hidden, Wy)
(no bias), ``Wx = int(input_W * split_ratio)``, ``Wy = int(input_H * split_ratio)``. Returns
``(pred_x (B, K, Wx), pred_y (B, K, Wy))`` raw logits.

``RTMCCBlock`` extends :class:`posekit.models.layers.GAU` (same ``uv``/``o``/``gamma``/``beta``/``ln``/
``res_scale`` parameters) with RTMPose's options: a learnable relative position bias ``w`` (``2T - 1`` values,
``use_rel_bias``) added to ``q k^T`` before ``relu^2``, and rotary position encoding of ``q``/``k`` (``pos_enc``).
The official body presets use neither.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import GAU, ScaleNorm

__all__ = ["RTMCCBlock", "RTMCCHead", "rope"]


def rope(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Rotary position encoding along axis ``dim`` (positions 0..T-1) of ``x (..., C)``, as MMPose computes it.

    The frequencies are ``10000 ** (arange(C/2) / (C/2))`` (MMPose's sign convention), halves rotated as
    ``[x1 cos - x2 sin, x2 cos + x1 sin]``.
    """
    T = x.shape[dim]
    pos = torch.arange(T, dtype=torch.float32, device=x.device)
    for _ in range(dim + 1, x.ndim - 1):
        pos = pos.unsqueeze(-1)
    half = x.shape[-1] // 2
    inv_freq = 10000 ** (torch.arange(half, dtype=torch.float32, device=x.device) / float(half))
    ang = pos[..., None] * inv_freq
    sin, cos = ang.sin(), ang.cos()
    x1, x2 = torch.chunk(x, 2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class RTMCCBlock(GAU):
    """Self-attention GAU over ``num_token`` tokens with RTMPose's optional relative bias and RoPE.

    Args:
        num_token: number of tokens T (keypoints); sizes the relative bias ``w``.
        in_dims, out_dims, expansion_factor, s, eps, act, bias, dropout: as :class:`GAU`.
        use_rel_bias: add the learnable relative position bias ``w`` (parameter of shape ``(2T - 1,)``).
        pos_enc: apply :func:`rope` to the shared base before the ``gamma``/``beta`` split.
    """

    def __init__(self, num_token: int, in_dims: int, out_dims: int, expansion_factor: float = 2, s: int = 128,
                 eps: float = 1e-5, act: str = "silu", bias: bool = False, dropout: float = 0.0,
                 use_rel_bias: bool = True, pos_enc: bool = False) -> None:
        super().__init__(in_dims, out_dims, expansion_factor, s, eps, act, bias, dropout)
        self.num_token = int(num_token)
        self.use_rel_bias = bool(use_rel_bias)
        self.pos_enc = bool(pos_enc)
        if self.use_rel_bias:
            self.w = nn.Parameter(torch.rand(2 * self.num_token - 1))

    def rel_pos_bias(self, n: int) -> torch.Tensor:
        """``(1, n, n)`` Toeplitz bias: entry (i, j) = ``w[j - i + n - 1]``."""
        t = F.pad(self.w[: 2 * n - 1], [0, n]).repeat(n)
        t = t[..., :-n].reshape(-1, n, 3 * n - 2)
        r = (2 * n - 1) // 2
        return t[..., r:-r]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C_in) -> (B, T, C_out)
        u, v, base = torch.split(self.act_fn(self.uv(self.ln(x))), [self.e, self.e, self.s], dim=-1)
        base = base.unsqueeze(2) * self.gamma[None, None] + self.beta
        if self.pos_enc:
            base = rope(base, dim=1)
        q, k = torch.unbind(base, dim=2)
        qk = torch.bmm(q, k.transpose(1, 2))
        if self.use_rel_bias:
            T = q.shape[1]
            qk = qk + self.rel_pos_bias(T)[:, :T, :T]
        kernel = torch.square(F.relu(qk / self.sqrt_s))
        if self.dropout is not None:
            kernel = self.dropout(kernel)
        out = self.o(u * torch.bmm(kernel, v))
        return self.res_scale(x) + out if self.shortcut else out


class RTMCCHead(nn.Module):
    """RTMPose SimCC head (see the module docstring).

    Args:
        in_channels: backbone channels.
        out_channels: number of keypoints K.
        input_size: model input ``(W, H)``.
        in_featuremap_size: backbone feature size ``(w, h)`` (input / 32).
        simcc_split_ratio: bins per pixel (2.0).
        final_layer_kernel_size: 7.
        hidden_dims, s, expansion_factor, dropout_rate, act, use_rel_bias, pos_enc: the ``gau_cfg``.
    """

    def __init__(self, in_channels: int, out_channels: int, input_size: Sequence[int],
                 in_featuremap_size: Sequence[int], simcc_split_ratio: float = 2.0, final_layer_kernel_size: int = 7,
                 hidden_dims: int = 256, s: int = 128, expansion_factor: float = 2, dropout_rate: float = 0.0,
                 act: str = "silu", use_rel_bias: bool = False, pos_enc: bool = False) -> None:
        super().__init__()
        self.input_size = tuple(int(v) for v in input_size)
        self.in_featuremap_size = tuple(int(v) for v in in_featuremap_size)
        self.simcc_split_ratio = float(simcc_split_ratio)
        self.out_channels = out_channels
        k = int(final_layer_kernel_size)
        self.final_layer = nn.Conv2d(in_channels, out_channels, k, 1, k // 2)
        flat = self.in_featuremap_size[0] * self.in_featuremap_size[1]
        self.mlp = nn.Sequential(ScaleNorm(flat), nn.Linear(flat, hidden_dims, bias=False))
        self.gau = RTMCCBlock(out_channels, hidden_dims, hidden_dims, expansion_factor, s, 1e-5, act, False,
                              dropout_rate, use_rel_bias, pos_enc)
        wx = int(self.input_size[0] * self.simcc_split_ratio)
        wy = int(self.input_size[1] * self.simcc_split_ratio)
        self.cls_x = nn.Linear(hidden_dims, wx, bias=False)
        self.cls_y = nn.Linear(hidden_dims, wy, bias=False)

    @torch.no_grad()
    def init_weights(self) -> None:
        """MMPose's ``default_init_cfg`` of the head, for training from scratch: every ``Conv2d`` ``N(0, 0.001)``,
        every ``Linear`` (``mlp``, the GAU's ``uv`` / ``o``, ``cls_x`` / ``cls_y``) ``N(0, 0.01)`` with zero bias.

        With PyTorch's default ``Linear`` init the logits start at O(1); times the loss's ``beta`` = 10 every
        SimCC distribution starts as a near one-hot at a random bin, and a light model trained from scratch
        settles on the mean pose (held-out AP 0.08 after 300 synthetic steps; 0.43 with this init, see
        docs/training-topdown.md)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
            else:
                continue
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, feats: Union[torch.Tensor, Sequence[torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
        x = feats if isinstance(feats, torch.Tensor) else feats[-1]
        x = self.final_layer(x)
        if tuple(x.shape[-2:]) != self.in_featuremap_size[::-1]:
            raise ValueError(f"RTMCCHead expects a {self.in_featuremap_size[1]}x{self.in_featuremap_size[0]} (HxW) "
                             f"feature map (in_featuremap_size {self.in_featuremap_size}), got "
                             f"{tuple(x.shape[-2:])}; check the input size")
        x = self.gau(self.mlp(torch.flatten(x, 2)))
        return self.cls_x(x), self.cls_y(x)
