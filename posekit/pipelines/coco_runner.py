"""Run a :class:`~posekit.pipelines.estimator.PoseEstimator` over a COCO keypoint annotation file's images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from posekit.data.io import read_json

__all__ = ["predict_coco", "load_coco_images"]


def load_coco_images(ann_file: str | Path) -> tuple[dict, list[dict]]:
    """The parsed COCO json and its ``images`` list (clear errors naming the file)."""
    ann_file = Path(ann_file)
    data = read_json(ann_file, "annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{ann_file}: field 'images' is missing (not a COCO annotation file)")
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise ValueError(f"{ann_file}: images[{i}] needs 'id' and 'file_name', got {im!r}")
    return data, data["images"]


def predict_coco(estimator, ann_file: str | Path, image_dir: str | Path, boxes: str | Path = "model",
                 progress: bool = True, category_id: int | None = None) -> list[dict]:
    """COCO keypoint results for every image of ``ann_file``.

    Args:
        estimator: a ``PoseEstimator`` (or any ``callable(image, boxes=None) -> list[Person]``).
        ann_file: COCO keypoints json (its ``images`` give ids and file names).
        image_dir: folder holding the images.
        boxes: ``"model"`` (the estimator's own detector / one-stage / bottom-up output), ``"gt"`` (the non-crowd
            ground-truth person boxes, score 1; top-down models only) or the path of a COCO detections json
            (``[{image_id, bbox xywh, score, category_id}]``; top-down only).
        progress: tqdm bar on stderr.
        category_id: the results' category (default: the file's first category, else 1).

    Returns:
        a list of ``{"image_id", "category_id", "keypoints", "score", "bbox"}`` dicts (``Person.to_coco``).
    """
    from tqdm import tqdm

    from posekit.data.io import read_image

    data, images = load_coco_images(ann_file)
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    if category_id is None:
        cats = data.get("categories") or [{"id": 1}]
        category_id = int(cats[0].get("id", 1))
    per_image: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
    mode = str(boxes)
    if mode == "gt":
        per_image = {}
        for a in data.get("annotations", []):
            if a.get("iscrowd", 0) or a.get("category_id", category_id) != category_id:
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            b, s = per_image.get(int(a["image_id"]), (np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
            per_image[int(a["image_id"])] = (np.vstack([b, [[x, y, x + w, y + h]]]).astype(np.float32),
                                            np.append(s, 1.0).astype(np.float32))
    elif mode != "model":
        from posekit.pipelines.topdown import load_detections

        per_image = load_detections(mode, category_id=category_id)
    card = getattr(estimator, "card", None)
    if per_image is not None and card is not None and not card.is_topdown:
        raise ValueError(f"boxes={mode!r} needs a top-down model; '{card.name}' is a {card.kind!r} model")
    results: list[dict] = []
    for im in tqdm(images, desc="predict", disable=not progress, file=sys.stderr):
        image = read_image(image_dir / im["file_name"])
        if per_image is None:
            people = estimator(image)
        else:
            b, s = per_image.get(int(im["id"]), (np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
            if len(b) == 0:
                continue
            pipeline = getattr(estimator, "pipeline", None)
            if pipeline is not None and hasattr(pipeline, "predict_boxes"):
                people = pipeline.predict_boxes(image, b, s)
            else:
                people = estimator(image, boxes=b)
        results.extend(p.to_coco(int(im["id"]), category_id) for p in people)
    return results
