"""A simple greedy pose tracker: match the people of a frame to the live tracks by OKS (or box IoU).

Each frame: similarities between every current person and every live track (OKS of the person's keypoints against
the track's last keypoints, scaled by the track's box area; or box IoU when ``use_oks=False`` or keypoints are
missing), then greedy assignment by decreasing similarity above the threshold. Unmatched people start new tracks
(ids 0, 1, 2, … never reused); tracks unseen for more than ``max_age`` frames are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posekit.schema import KeypointSchema, get_schema
from posekit.structures import Person

__all__ = ["GreedyTracker", "Track"]


@dataclass
class Track:
    track_id: int
    keypoints: np.ndarray
    box: np.ndarray
    last_frame: int


class GreedyTracker:
    """Greedy OKS/IoU tracker.

    Args:
        schema: keypoint schema (or name) whose OKS sigmas are used.
        use_oks: match by OKS (else by box IoU).
        oks_thr, iou_thr: minimum similarity to continue a track.
        kpt_thr: keypoints of a track with score above it count in the OKS.
        max_age: consecutive frames without a match a track survives (then it is dropped).
    """

    def __init__(self, schema: KeypointSchema | str = "coco17", use_oks: bool = True, oks_thr: float = 0.3,
                 iou_thr: float = 0.3, kpt_thr: float = 0.3, max_age: int = 1) -> None:
        self.schema = get_schema(schema)
        self.use_oks = use_oks
        self.oks_thr = float(oks_thr)
        self.iou_thr = float(iou_thr)
        self.kpt_thr = float(kpt_thr)
        self.max_age = int(max_age)
        self.reset()

    def reset(self) -> None:
        self.tracks: list[Track] = []
        self.frame = -1
        self._next_id = 0

    def _similarity(self, people: list[Person]) -> tuple[np.ndarray, float]:
        from posekit.detectors import box_iou

        boxes = np.stack([p.box for p in people]).astype(np.float64)
        tboxes = np.stack([t.box for t in self.tracks]).astype(np.float64)
        k = self.schema.num_keypoints
        if self.use_oks and all(p.keypoints.shape[0] == k for p in people) \
                and all(t.keypoints.shape[0] == k for t in self.tracks):
            from posekit.evaluation.oks import compute_oks

            pred = np.stack([p.keypoints for p in people])
            gt = np.stack([t.keypoints for t in self.tracks]).copy()
            gt[..., 2] = np.where(gt[..., 2] > self.kpt_thr, 2.0, 0.0)
            areas = np.clip(tboxes[:, 2] - tboxes[:, 0], 1, None) * np.clip(tboxes[:, 3] - tboxes[:, 1], 1, None)
            return compute_oks(pred, gt, areas, self.schema.sigmas_array, gt_boxes=tboxes), self.oks_thr
        return box_iou(boxes, tboxes), self.iou_thr

    def update(self, people: list[Person]) -> list[Person]:
        """Assign ``track_id`` to each person of the next frame (in place); returns ``people``."""
        self.frame += 1
        self.tracks = [t for t in self.tracks if self.frame - t.last_frame - 1 <= self.max_age]
        matched_people: set[int] = set()
        if people and self.tracks:
            sim, thr = self._similarity(people)
            pairs = np.argwhere(sim >= thr)
            order = np.argsort(-sim[pairs[:, 0], pairs[:, 1]], kind="stable")
            used_tracks: set[int] = set()
            for pi, ti in pairs[order]:
                if pi in matched_people or ti in used_tracks:
                    continue
                matched_people.add(int(pi))
                used_tracks.add(int(ti))
                t = self.tracks[ti]
                people[pi].track_id = t.track_id
                t.keypoints, t.box, t.last_frame = people[pi].keypoints.copy(), people[pi].box.copy(), self.frame
        for i, p in enumerate(people):
            if i in matched_people:
                continue
            p.track_id = self._next_id
            self.tracks.append(Track(self._next_id, p.keypoints.copy(), p.box.copy(), self.frame))
            self._next_id += 1
        return people
