"""Result structures shared by every pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Person:
    """One detected person, in **image pixels** (pixel centres at integer coordinates).

    Attributes:
        keypoints: ``(K, 3)`` float array of ``x, y, score`` (score 0 for a keypoint that was not found).
        box: ``(4,)`` ``x1, y1, x2, y2`` (for bottom-up models: the box around the found keypoints).
        score: instance score in [0, 1] (what COCO evaluation ranks by).
        track_id: identity across video frames, or None.
    """

    keypoints: np.ndarray
    box: np.ndarray
    score: float
    track_id: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        self.box = np.asarray(self.box, dtype=np.float32).reshape(4)
        if self.keypoints.ndim != 2 or self.keypoints.shape[1] != 3:
            raise ValueError(f"Person.keypoints must be (K, 3), got {self.keypoints.shape}")
        self.score = float(self.score)

    def to_coco(self, image_id: int, category_id: int = 1) -> dict:
        """A COCO keypoint result entry (keypoints flattened as x, y, score)."""
        x1, y1, x2, y2 = (float(v) for v in self.box)
        out = {
            "image_id": int(image_id),
            "category_id": int(category_id),
            "keypoints": [round(float(v), 3) for v in self.keypoints.reshape(-1)],
            "score": float(self.score),
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
        }
        if self.track_id is not None:
            out["track_id"] = int(self.track_id)
        return out


def box_from_keypoints(keypoints: np.ndarray, min_score: float = 0.0) -> np.ndarray:
    """``x1, y1, x2, y2`` around the keypoints whose score is > ``min_score`` (zeros when none)."""
    kp = np.asarray(keypoints)
    ok = kp[:, 2] > min_score
    if not ok.any():
        return np.zeros(4, np.float32)
    xy = kp[ok, :2]
    return np.array([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()], np.float32)
