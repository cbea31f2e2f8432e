"""OpenPose models (bottom-up, part affinity fields) in PyTorch.

:class:`OpenPose` joins a backbone (image -> features ``F`` at stride 8) and a stage head (``F`` -> per-stage PAFs
and confidence maps). Three configurations (see :mod:`posekit.models.presets`):

* :func:`openpose_cmu_coco` -- CMU's COCO body model (CVPR'17, ``pose_deploy_linevec``): VGG-19 trunk +
  ``conv4_3_CPM``/``conv4_4_CPM`` and six two-branch stages. Its ``state_dict`` keys are CMU's flat Caffe names
  (``conv1_1.weight`` ... ``Mconv7_stage6_L2.bias``), so ``body_pose_model.pth`` loads as is.
* :func:`openpose_tpami` -- the TPAMI'19 variant: ``T_P`` PAF stages, then ``T_C`` confidence stages.
* :func:`openpose_light` -- a small MobileNetV2 trunk and two thin stages, trainable on a CPU.

The layers of the backbone and the head are registered directly on the :class:`OpenPose` module (flat names; the
two parts must not share a layer name), which is what keeps the CMU keys flat.

Input: ``(B, 3, H, W)`` float, BGR, normalised as ``(x - mean) / std`` with ``mean = 128``, ``std = 256`` (CMU's
``x / 256 - 0.5``); :meth:`OpenPose.preprocess` does it. Maps have ``ceil(H/8) x ceil(W/8)`` cells; cell centres
are at input pixels ``8 * j + 3.5`` (:mod:`posekit.codecs.paf`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from posekit.codecs.paf import PafCodec
from posekit.models.backbones.mobilenet import MobileNetV2Stride8
from posekit.models.backbones.vgg import VGG19CPM
from posekit.models.heads.paf import CMUStages, TPAMIStages
from posekit.schema import OPENPOSE18, KeypointSchema

__all__ = ["OpenPose", "openpose_cmu_coco", "openpose_tpami", "openpose_light"]


class OpenPose(nn.Module):
    """A bottom-up OpenPose network.

    Args:
        backbone: module mapping ``(B, 3, H, W)`` to ``F`` ``(B, C, ceil(H/8), ceil(W/8))``; has ``stride``.
        head: module mapping ``F`` to ``(stage_pafs, stage_heatmaps)`` lists.
        codec: targets / decoding (its ``stride`` must equal the backbone's).
        schema: keypoint schema of the parts (OpenPose-18).
        mean, std: per-channel (BGR) input normalisation.
        pad_value: value the input is padded with up to a multiple of the stride (CMU: 128 = gray).

    Attributes:
        kind: ``"bottomup"``.
        stride, num_pafs, num_heatmaps, preset (set by :func:`posekit.models.presets.build_model`).
    """

    kind = "bottomup"

    def __init__(self, backbone: nn.Module, head: nn.Module, *, codec: PafCodec | None = None,
                 schema: KeypointSchema = OPENPOSE18, mean: Sequence[float] = (128.0, 128.0, 128.0),
                 std: Sequence[float] = (256.0, 256.0, 256.0), pad_value: float = 128.0) -> None:
        super().__init__()
        stride = int(getattr(backbone, "stride", 8))
        self.codec = codec if codec is not None else PafCodec(stride=stride, num_parts=len(schema))
        if self.codec.stride != stride:
            raise ValueError(f"OpenPose: codec stride {self.codec.stride} != backbone stride {stride}")
        self.schema = schema
        self.stride = stride
        self.num_pafs = int(head.paf_channels)
        self.num_heatmaps = int(head.heatmap_channels)
        if self.num_pafs != self.codec.num_pafs or self.num_heatmaps != self.codec.num_heatmaps:
            raise ValueError(f"OpenPose: head outputs {self.num_pafs} PAF / {self.num_heatmaps} confidence channels, "
                             f"the codec expects {self.codec.num_pafs} / {self.codec.num_heatmaps}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.pad_value = float(pad_value)
        self.preset: str | None = None
        for part in (backbone, head):
            for name, child in part.named_children():
                if name in self._modules:
                    raise ValueError(f"OpenPose: backbone and head both have a layer named {name!r}")
                self.add_module(name, child)
            if next(part.named_parameters(recurse=False), None) or next(part.named_buffers(recurse=False), None):
                raise ValueError(f"OpenPose: {type(part).__name__} holds parameters outside its child layers")
        # The parts are kept unregistered: their layers are registered above, on this module.
        self.__dict__["_parts"] = (backbone, head)

    @property
    def backbone(self) -> nn.Module:
        return self._parts[0]

    @property
    def head(self) -> nn.Module:
        return self._parts[1]

    def train(self, mode: bool = True) -> "OpenPose":
        super().train(mode)
        for part in self._parts:
            part.training = mode
        return self

    def forward(self, x: torch.Tensor) -> dict:
        """Raw outputs of a normalised ``(B, 3, H, W)`` batch.

        Returns:
            ``{"pafs": (B, num_pafs, h, w), "heatmaps": (B, num_heatmaps, h, w)`` (the last stage's),
            ``"stage_pafs": tuple of (B, num_pafs, h, w)``, ``"stage_heatmaps": tuple of (B, num_heatmaps, h, w)}``
            (every stage, first first), ``h, w = ceil(H / stride), ceil(W / stride)``.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"OpenPose.forward expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        feats = self.backbone(x)
        pafs, heatmaps = self.head(feats)
        return {"pafs": pafs[-1], "heatmaps": heatmaps[-1], "stage_pafs": tuple(pafs),
                "stage_heatmaps": tuple(heatmaps)}

    def preprocess(self, images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """HxWx3 uint8 BGR image(s) of one size -> normalised ``(B, 3, H', W')`` float tensor.

        The images are padded at the bottom/right with ``pad_value`` to ``H', W'`` multiples of the stride (so
        model-input pixels equal image pixels).
        """
        arr = np.asarray(images) if not isinstance(images, (list, tuple)) else np.stack(images)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"preprocess expects HxWx3 images, got shape {arr.shape}")
        B, H, W, _ = arr.shape
        Hp, Wp = -(-H // self.stride) * self.stride, -(-W // self.stride) * self.stride
        out = np.full((B, Hp, Wp, 3), self.pad_value, np.float32)
        out[:, :H, :W] = arr
        out = (out - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        device = next(self.parameters()).device
        return torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2))).to(device)

    @torch.no_grad()
    def decode(self, raw: dict, **options) -> list[dict]:
        """People per image from :meth:`forward`'s output, in model-input pixels.

        Uses :meth:`posekit.codecs.paf.PafCodec.decode` (peaks, PAF line integral, matching and assembly from
        :mod:`posekit.association.paf`) on the last stage's maps; ``options`` go to it (``heatmap_upsample``,
        thresholds, ...).

        Returns:
            one dict per image: ``"keypoints"`` ``(N, K, 2)``, ``"scores"`` ``(N, K)``, ``"boxes"`` ``(N, 4)`` xyxy,
            ``"person_scores"`` ``(N,)``; ``K = 18`` parts in OpenPose-18 order
            (:func:`posekit.schema.openpose18_to_coco17` converts to COCO-17).
        """
        heat = raw["heatmaps"].detach().float().cpu().numpy()
        pafs = raw["pafs"].detach().float().cpu().numpy()
        return [self.codec.decode(heat[i], pafs[i], **options) for i in range(heat.shape[0])]


# ------------------------------------------------------------------------------------------------ presets
def openpose_cmu_coco(num_stages: int = 6) -> OpenPose:
    """CMU OpenPose COCO body model (CVPR'17): VGG-19 + CPM convs, ``num_stages`` two-branch stages.

    The default is the released network (CMU layer names, 52.3 M parameters, weights ``body_pose_model.pth``).
    """
    backbone = VGG19CPM()
    head = CMUStages(backbone.out_channels, num_stages=num_stages)
    return OpenPose(backbone, head)


def openpose_tpami(paf_stages: int = 4, heatmap_stages: int = 2, paf_width: int = 128, heatmap_width: int = 96,
                   paf_mid: int = 512, heatmap_mid: int = 256, num_blocks: int = 5) -> OpenPose:
    """OpenPose TPAMI'19: VGG-19 + CPM convs, ``paf_stages`` PAF stages then ``heatmap_stages`` confidence stages.

    Stages are dense blocks of three 3x3 convs (PReLU); see :class:`posekit.models.heads.paf.TPAMIStages`.
    """
    backbone = VGG19CPM()
    head = TPAMIStages(backbone.out_channels, paf_stages=paf_stages, heatmap_stages=heatmap_stages,
                       paf_width=paf_width, heatmap_width=heatmap_width, paf_mid=paf_mid, heatmap_mid=heatmap_mid,
                       num_blocks=num_blocks)
    return OpenPose(backbone, head)


def openpose_light(width: float = 0.5, feature_channels: int = 64, num_stages: int = 2, stage_width: int = 64,
                   stage_convs: int = 3, stage_kernel: int = 3, stage_mid: int = 128) -> OpenPose:
    """A light OpenPose for CPU training: MobileNetV2 (``width``) at stride 8 and thin two-branch stages.

    Every stage (CMU layout and names) has ``stage_convs`` ``stage_kernel`` x ``stage_kernel`` convs of
    ``stage_width`` channels, a 1x1 conv to ``stage_mid`` and the 1x1 output conv.
    """
    backbone = MobileNetV2Stride8(width=width, out_channels=feature_channels)
    head = CMUStages(feature_channels, num_stages=num_stages, width=stage_width, first_kernel=stage_kernel,
                     first_convs=stage_convs, first_mid=stage_mid, refine_kernel=stage_kernel,
                     refine_convs=stage_convs, refine_mid=stage_mid)
    return OpenPose(backbone, head)
