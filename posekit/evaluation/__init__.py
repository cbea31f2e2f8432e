"""Evaluation: COCO/CrowdPose keypoint AP (pycocotools / xtcocotools), results files, OKS and its NMS, PCK(h)."""

from posekit.evaluation.coco import evaluate_coco_keypoints
from posekit.evaluation.oks import compute_oks, oks_nms, soft_oks_nms
from posekit.evaluation.pck import pck, pckh
from posekit.evaluation.results import load_results, save_results

__all__ = [
    "evaluate_coco_keypoints", "compute_oks", "oks_nms", "soft_oks_nms", "pck", "pckh", "load_results",
    "save_results",
]
