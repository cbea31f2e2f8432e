"""Data: image I/O, COCO-format datasets, geometry, augmentation and synthetic figures."""

from posekit.data.coco import CocoPoseDataset, load_coco_keypoints
from posekit.data.io import ImageReadError, read_image, write_image

__all__ = ["CocoPoseDataset", "load_coco_keypoints", "ImageReadError", "read_image", "write_image"]
