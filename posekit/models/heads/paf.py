"""OpenPose refinement stages: part affinity fields (PAF, branch ``L1``) and confidence maps (branch ``L2``).

Two stage layouts:

* :class:`CMUStages` -- CVPR'17 (CMU ``pose_deploy_linevec``): every stage has both branches. Stage 1 reads the
  image features ``F``; stage ``t > 1`` reads ``concat(L^{t-1}, S^{t-1}, F)`` (this channel order, as in CMU's
  ``concat_stage{t}``). Layer names are CMU's Caffe names (``conv5_{i}_CPM_L{b}`` in stage 1,
  ``Mconv{i}_stage{t}_L{b}`` after), so the flat CMU keys load directly. No ReLU after a branch's last conv.
* :class:`TPAMIStages` -- TPAMI'19: ``T_P`` PAF stages ``L^1 = phi_1(F)``, ``L^t = phi_t(concat(F, L^{t-1}))``,
  then ``T_C`` confidence stages ``S^{T_P} = rho(concat(F, L^{T_P}))`` and
  ``S^t = rho_t(concat(F, L^{T_P}, S^{t-1}))``. Each stage is a chain of dense blocks (three 3x3 convs whose
  outputs are concatenated, PReLU) followed by two 1x1 convs, the last without activation.

Both take ``F`` ``(B, C_in, h, w)`` and return ``(stage_pafs, stage_heatmaps)``: lists of ``(B, paf_channels, h, w)``
and ``(B, heatmap_channels, h, w)`` tensors, first stage first.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CMUStages", "TPAMIStages", "DenseBlock"]


class CMUStages(nn.Module):
    """The two-branch multi-stage head of CMU OpenPose (CVPR'17).

    Args:
        in_channels: channels of ``F`` (CMU: 128).
        num_stages: number of stages ``T`` (CMU: 6).
        paf_channels: PAF outputs (2 per limb; CMU COCO: 38).
        heatmap_channels: confidence-map outputs (parts + background; CMU COCO: 19).
        width: channels of the spatial convolutions (CMU: 128).
        first_kernel, first_convs, first_mid: stage 1 has ``first_convs`` ``first_kernel`` x ``first_kernel``
            convs, then a 1x1 conv to ``first_mid`` channels, then the 1x1 output conv (CMU: 3, 3, 512).
        refine_kernel, refine_convs, refine_mid: the same for stages 2..T (CMU: 7, 5, 128).
    """

    def __init__(self, in_channels: int = 128, num_stages: int = 6, paf_channels: int = 38,
                 heatmap_channels: int = 19, width: int = 128, first_kernel: int = 3, first_convs: int = 3,
                 first_mid: int = 512, refine_kernel: int = 7, refine_convs: int = 5, refine_mid: int = 128) -> None:
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"CMUStages: num_stages must be >= 1, got {num_stages}")
        for k in (first_kernel, refine_kernel):
            if k % 2 != 1:
                raise ValueError(f"CMUStages: kernels must be odd, got {k}")
        self.num_stages = num_stages
        self.paf_channels, self.heatmap_channels = paf_channels, heatmap_channels
        outs = {1: paf_channels, 2: heatmap_channels}
        # self._branches[t - 1][b - 1] = layer names of branch L{b} in stage t (last one without ReLU).
        self._branches: list[tuple[list[str], list[str]]] = []
        for t in range(1, num_stages + 1):
            if t == 1:
                k, n, mid, cin = first_kernel, first_convs, first_mid, in_channels
                names = [f"conv5_{i}_CPM_L{{b}}" for i in range(1, n + 3)]
            else:
                k, n, mid, cin = refine_kernel, refine_convs, refine_mid, in_channels + paf_channels + heatmap_channels
                names = [f"Mconv{i}_stage{t}_L{{b}}" for i in range(1, n + 3)]
            specs = [(k, width)] * n + [(1, mid)]
            # Register L1 and L2 interleaved per layer index: CMU's prototxt (and state_dict key) order.
            chans = {1: cin, 2: cin}
            for i, name in enumerate(names):
                for b in (1, 2):
                    kk, cout = specs[i] if i < n + 1 else (1, outs[b])
                    self.add_module(name.format(b=b), nn.Conv2d(chans[b], cout, kk, 1, kk // 2))
                    chans[b] = cout
            self._branches.append(([nm.format(b=1) for nm in names], [nm.format(b=2) for nm in names]))

    def _branch(self, names: list[str], x: torch.Tensor) -> torch.Tensor:
        for name in names[:-1]:
            x = F.relu(getattr(self, name)(x))
        return getattr(self, names[-1])(x)

    def forward(self, feats: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``F`` ``(B, C_in, h, w)`` -> (per-stage PAFs, per-stage confidence maps)."""
        pafs: list[torch.Tensor] = []
        heatmaps: list[torch.Tensor] = []
        x = feats
        for t, (l1, l2) in enumerate(self._branches):
            if t > 0:
                x = torch.cat([pafs[-1], heatmaps[-1], feats], dim=1)
            pafs.append(self._branch(l1, x))
            heatmaps.append(self._branch(l2, x))
        return pafs, heatmaps


class DenseBlock(nn.Module):
    """Three 3x3 convs in a chain, each followed by PReLU; returns their three outputs concatenated.

    ``(B, cin, h, w)`` -> ``(B, 3 * width, h, w)``. Children: ``conv0..conv2``, ``prelu0..prelu2``.
    """

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        for j in range(3):
            self.add_module(f"conv{j}", nn.Conv2d(cin if j == 0 else width, width, 3, 1, 1))
            self.add_module(f"prelu{j}", nn.PReLU(width))
        self.out_channels = 3 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = self.prelu0(self.conv0(x))
        y1 = self.prelu1(self.conv1(y0))
        y2 = self.prelu2(self.conv2(y1))
        return torch.cat([y0, y1, y2], dim=1)


class _TPAMIStage(nn.Module):
    """``num_blocks`` dense blocks, a 1x1 conv to ``mid`` (PReLU), a 1x1 output conv (no activation)."""

    def __init__(self, cin: int, cout: int, width: int, mid: int, num_blocks: int) -> None:
        super().__init__()
        blocks = []
        for _ in range(num_blocks):
            blocks.append(DenseBlock(cin, width))
            cin = 3 * width
        self.blocks = nn.Sequential(*blocks)
        self.mid = nn.Conv2d(cin, mid, 1)
        self.mid_act = nn.PReLU(mid)
        self.out = nn.Conv2d(mid, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mid_act(self.mid(self.blocks(x))))


class TPAMIStages(nn.Module):
    """The PAF-first stage sequence of OpenPose TPAMI'19.

    Args:
        in_channels: channels of ``F``.
        paf_stages: ``T_P`` (>= 1).
        heatmap_stages: ``T_C`` (>= 1).
        paf_channels, heatmap_channels: outputs (COCO-18: 38 and 19 with background).
        paf_width, heatmap_width: dense-block widths of PAF / confidence stages (stage output 3x that).
        paf_mid, heatmap_mid: channels of each stage's 1x1 conv before the output conv.
        num_blocks: dense blocks per stage (TPAMI'19: 5).

    Module names: ``paf_stage{t}`` (t = 1..T_P) and ``heatmap_stage{t}`` (t = 1..T_C), each with ``blocks``,
    ``mid``, ``mid_act``, ``out``.
    """

    def __init__(self, in_channels: int = 128, paf_stages: int = 4, heatmap_stages: int = 2, paf_channels: int = 38,
                 heatmap_channels: int = 19, paf_width: int = 128, heatmap_width: int = 96, paf_mid: int = 512,
                 heatmap_mid: int = 256, num_blocks: int = 5) -> None:
        super().__init__()
        if paf_stages < 1 or heatmap_stages < 1:
            raise ValueError(f"TPAMIStages: need >= 1 PAF and >= 1 confidence stage, "
                             f"got {paf_stages}, {heatmap_stages}")
        self.paf_channels, self.heatmap_channels = paf_channels, heatmap_channels
        self.num_paf_stages, self.num_heatmap_stages = paf_stages, heatmap_stages
        for t in range(1, paf_stages + 1):
            cin = in_channels if t == 1 else in_channels + paf_channels
            self.add_module(f"paf_stage{t}", _TPAMIStage(cin, paf_channels, paf_width, paf_mid, num_blocks))
        for t in range(1, heatmap_stages + 1):
            cin = in_channels + paf_channels + (0 if t == 1 else heatmap_channels)
            self.add_module(f"heatmap_stage{t}",
                            _TPAMIStage(cin, heatmap_channels, heatmap_width, heatmap_mid, num_blocks))

    def forward(self, feats: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``F`` ``(B, C_in, h, w)`` -> (``T_P`` PAF maps, ``T_C`` confidence maps)."""
        pafs = [getattr(self, "paf_stage1")(feats)]
        for t in range(2, self.num_paf_stages + 1):
            pafs.append(getattr(self, f"paf_stage{t}")(torch.cat([feats, pafs[-1]], dim=1)))
        heatmaps = [getattr(self, "heatmap_stage1")(torch.cat([feats, pafs[-1]], dim=1))]
        for t in range(2, self.num_heatmap_stages + 1):
            x = torch.cat([feats, pafs[-1], heatmaps[-1]], dim=1)
            heatmaps.append(getattr(self, f"heatmap_stage{t}")(x))
        return pafs, heatmaps
