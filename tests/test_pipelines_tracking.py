"""Greedy OKS/IoU tracker on a synthetic sequence: moving people keep their ids, one leaves, one enters."""

from __future__ import annotations

import numpy as np

from posekit.pipelines.tracking import GreedyTracker
from posekit.structures import Person

rng = np.random.default_rng(0)
TEMPLATE = rng.uniform([-30, -80], [30, 80], (17, 2))  # a person-sized keypoint layout


def person(cx, cy):
    kp = np.concatenate([TEMPLATE + [cx, cy], np.full((17, 1), 0.9)], 1)
    return Person(keypoints=kp, box=[cx - 35, cy - 90, cx + 35, cy + 90], score=0.9)


def sequence():
    """12 frames. A walks right 6 px/frame, B walks left 5 px/frame, C stands still and leaves after frame 5,
    D enters at frame 8. Detection order is shuffled every frame."""
    frames, truth = [], []
    for t in range(12):
        people = {"A": (100 + 6 * t, 200), "B": (500 - 5 * t, 220), "C": (300, 400)}
        if t > 5:
            del people["C"]
        if t >= 8:
            people["D"] = (300, 150)
        names = list(people)
        rng.shuffle(names)
        frames.append([person(*people[n]) for n in names])
        truth.append(names)
    return frames, truth


def _check(tracker):
    frames, truth = sequence()
    ids = {}
    for people, names in zip(frames, truth):
        tracker.update(people)
        for p, n in zip(people, names):
            ids.setdefault(n, set()).add(p.track_id)
    # every identity got exactly one id, all distinct, in order of appearance
    assert all(len(v) == 1 for v in ids.values())
    got = {n: next(iter(v)) for n, v in ids.items()}
    assert len(set(got.values())) == 4
    assert got["D"] == 3 and sorted([got["A"], got["B"], got["C"]]) == [0, 1, 2]
    return tracker, got


def test_oks_tracking():
    t, got = _check(GreedyTracker("coco17", use_oks=True, oks_thr=0.3))
    assert sorted(tr.track_id for tr in t.tracks) == sorted([got["A"], got["B"], got["D"]])  # C expired


def test_iou_tracking():
    _check(GreedyTracker("coco17", use_oks=False, iou_thr=0.3))


def test_a_jump_starts_a_new_track_and_max_age():
    t = GreedyTracker("coco17")
    a = t.update([person(100, 100)])[0]
    b = t.update([person(400, 400)])[0]  # far away: not the same person
    assert (a.track_id, b.track_id) == (0, 1)
    t.update([])                          # frame without people: track 1 is 1 frame old
    assert t.update([person(400, 402)])[0].track_id == 1
    t.update([]); t.update([])            # 2 empty frames > max_age 1
    assert t.update([person(400, 402)])[0].track_id == 2
