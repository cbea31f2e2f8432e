"""Losses, one module per family: ``openpose`` (the seed's masked stage L2), ``stage`` (CPM/Hourglass stage L2,
CPN's GlobalNet L2 + online hard keypoint mining), ``topdown`` (keypoint MSE, SimCC KL divergence), ``rtmo``
(SimOTA assignment, VariFocal, IoU, OKS, visibility and MLE losses: :class:`~posekit.losses.rtmo.RTMOCriterion`;
imported from :mod:`posekit.losses.rtmo` directly)."""

from posekit.losses.openpose import OpenPoseLoss, masked_l2, openpose_loss
from posekit.losses.stage import CPNLoss, StageL2Loss, cpn_loss, keypoint_ohkm_losses, ohkm_loss, stage_l2_loss
from posekit.losses.topdown import KeypointMSELoss, KLDiscretLoss, keypoint_mse_loss, kl_discret_loss

__all__ = [
    "OpenPoseLoss", "masked_l2", "openpose_loss", "CPNLoss", "StageL2Loss", "cpn_loss", "keypoint_ohkm_losses",
    "ohkm_loss", "stage_l2_loss", "KeypointMSELoss", "KLDiscretLoss", "keypoint_mse_loss", "kl_discret_loss",
]
