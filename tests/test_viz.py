"""Drawing, grids and the video writer (posekit.viz)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from posekit.schema import COCO17
from posekit.structures import Person
from posekit.viz import VideoWriter, draw_ground_truth, draw_people, make_grid, write_image

ORANGE_BGR = (0, 128, 255)  # COCO17 right-side links are RGB (255, 128, 0)


def _one_arm(score_wrist=0.2):
    kp = np.zeros((17, 3))
    kp[6] = (20, 50, 0.9)  # right shoulder
    kp[8] = (80, 50, 0.8)  # right elbow
    kp[10] = (80, 90, score_wrist)  # right wrist, below the threshold by default
    return kp


def test_limb_colour_between_keypoints_and_nothing_below_threshold():
    img = np.zeros((120, 100, 3), np.uint8)
    out = draw_people(img, _one_arm()[None], COCO17, kpt_thr=0.3, radius=2, thickness=3)
    assert img.max() == 0, "copy=True must not touch the input"
    # the right shoulder -> right elbow link is orange, converted RGB -> BGR
    for x in (30, 50, 70):
        assert tuple(out[50, x]) == ORANGE_BGR
    # nothing at or towards the low-score wrist (no keypoint, no elbow-wrist link)
    assert out[70:, :].max() == 0
    ys, xs = np.nonzero(out.any(axis=2))
    assert ys.min() >= 50 - 3 and ys.max() <= 50 + 3
    assert xs.min() >= 20 - 3 and xs.max() <= 80 + 3
    # with the wrist above the threshold the elbow-wrist link appears (orange too)
    out2 = draw_people(img, _one_arm(0.9)[None], COCO17, kpt_thr=0.3, radius=2, thickness=3)
    assert tuple(out2[70, 80]) == ORANGE_BGR


def test_person_list_equals_array_and_in_place():
    kp = np.stack([_one_arm(0.9), _one_arm(0.9) + np.array([0, 5, 0])])
    people = [Person(k, box=[0, 0, 0, 0], score=0.5) for k in kp]
    img = np.zeros((120, 100, 3), np.uint8)
    a = draw_people(img, kp, radius=2, thickness=2, draw_ids=False)
    b = draw_people(img, people, radius=2, thickness=2, draw_ids=False)
    np.testing.assert_array_equal(a, b)
    c = draw_people(img, people, radius=2, thickness=2, copy=False)
    assert c is img and img.any()


def test_boxes_scores_ids_drawn_and_bad_keypoint_count():
    img = np.zeros((200, 200, 3), np.uint8)
    p = Person(_one_arm(0.9) + np.array([40, 40, 0]), box=[50, 60, 150, 160], score=0.87, track_id=3)
    out = draw_people(img, [p], draw_boxes=True, draw_scores=True, radius=2, thickness=1)
    plain = draw_people(img, [p], draw_boxes=False, draw_scores=False, draw_ids=False, radius=2, thickness=1)
    # the box edge (bottom side at y=160) is drawn only when asked
    assert out[160, 100].any() and not plain[160, 100].any()
    # the label sits above the box's top-left corner
    assert out[40:60, 50:110].any() and not plain[40:58, 50:110].any()
    with pytest.raises(ValueError, match="keypoints but schema"):
        draw_people(img, np.zeros((1, 18, 3)), COCO17)


def test_default_sizes_scale_with_image():
    kp = _one_arm(0.9)
    small = draw_people(np.zeros((120, 100, 3), np.uint8), kp)
    big = draw_people(np.zeros((1200, 1000, 3), np.uint8), kp * np.array([10, 10, 1]))
    # the stroke of the shoulder-elbow link (horizontal, at y = 50 / 500) is thicker on the larger image
    w_small = small[:, 50].any(axis=1).sum()
    w_big = big[:, 500].any(axis=1).sum()
    assert w_big >= 2 * w_small
    # and an explicit thickness overrides the default
    thick = draw_people(np.zeros((1200, 1000, 3), np.uint8), kp * np.array([10, 10, 1]), thickness=1)
    assert thick[:, 500].any(axis=1).sum() < w_big


def test_ground_truth_filled_hollow_and_missing():
    kp = np.zeros((17, 3))
    kp[6] = (30, 30, 2)  # visible: filled
    kp[8] = (70, 30, 2)
    kp[3] = (50, 80, 1)  # occluded: a ring (no labelled neighbour, so no link reaches it)
    kp[10] = (70, 60, 0)  # not labelled: nothing
    ann = {"keypoints": kp.reshape(-1).tolist(), "bbox": [10, 10, 80, 80], "num_keypoints": 3}
    img = np.zeros((100, 100, 3), np.uint8)
    out = draw_ground_truth(img, [ann], radius=5, thickness=1, draw_boxes=False)
    assert out[30, 30].any() and out[30, 70].any()  # filled dots
    assert out[30, 50].any()  # the link between the two labelled keypoints
    ring = out[74:87, 44:57].any(axis=2)
    assert not ring[4:9, 4:9].any() and ring[6, 1] and ring[6, 11] and ring[1, 6] and ring[11, 6]
    assert not out[38:70, 60:].any()  # v=0 and its links are not drawn
    assert not out[38:70, :].any() and not out[:, 60:].any(axis=2)[38:].any()


def test_ground_truth_on_real_coco(shared):
    root = shared("data", "mmpose-coco")
    d = json.loads((root / "person_keypoints.json").read_text())
    im = d["images"][0]
    img = cv2.imread(str(root / "images" / im["file_name"]))
    anns = [a for a in d["annotations"] if a["image_id"] == im["id"]]
    out = draw_ground_truth(img, anns, draw_segmentation=True)
    assert out.shape == img.shape
    diff = (out != img).any(axis=2)
    # every labelled keypoint has changed pixels around it
    for a in anns:
        kp = np.asarray(a["keypoints"], float).reshape(17, 3)
        for x, y, v in kp[kp[:, 2] > 0]:
            xi, yi = int(round(x)), int(round(y))
            assert diff[max(yi - 3, 0):yi + 4, max(xi - 3, 0):xi + 4].any()


def test_make_grid_shape_and_placement():
    imgs = [np.full((50, 100, 3), 255, np.uint8)] + [np.full((40, 40, 3), 10 * i, np.uint8) for i in range(1, 5)]
    g = make_grid(imgs, cols=3, cell_size=(64, 48), pad=4)
    assert g.shape == (2 * (48 + 4) + 4, 3 * (64 + 4) + 4, 3)
    # first image resized to 64x32 (aspect kept), centred vertically in its 64x48 cell
    assert (g[4 + 8:4 + 8 + 32, 4:4 + 64] == 255).all()
    assert (g[4:4 + 8, 4:4 + 64] == 0).all() and (g[4 + 40:4 + 48, 4:4 + 64] == 0).all()
    # second image (40x40 -> 48x48) sits in cell (0, 1)
    assert (g[4:52, 72 + 8:72 + 56] == 10).all() and (g[4:52, 72:80] == 0).all()
    # default: ceil(sqrt(5)) = 3 columns, cells of the largest size
    assert make_grid(imgs).shape == (2 * 54 + 4, 3 * 104 + 4, 3)
    with pytest.raises(ValueError):
        make_grid([])


@pytest.mark.parametrize("ext", [".avi", ".mp4"])
def test_video_writer_round_trip(tmp_path, ext):
    path = tmp_path / f"clip{ext}"
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (200, 200, 200), (0, 0, 0), (255, 255, 0), (40, 90, 160)]
    with VideoWriter(path, fps=10) as vw:
        for c in colours:
            vw.write(np.full((48, 64, 3), c, np.uint8))
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    assert len(frames) == len(colours)
    for f, c in zip(frames, colours):
        assert f.shape == (48, 64, 3)
        assert np.abs(f.reshape(-1, 3).mean(0) - np.array(c)).max() < 12


def test_video_writer_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="extension"):
        VideoWriter(tmp_path / "a.gif", fps=5)
    # an exception inside the block leaves nothing behind
    with pytest.raises(KeyError):
        with VideoWriter(tmp_path / "b.avi", fps=5) as vw:
            vw.write(np.zeros((16, 16, 3), np.uint8))
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []
    vw = VideoWriter(tmp_path / "c.avi", fps=5, size=(32, 16))
    with pytest.raises(ValueError, match="differs"):
        vw.write(np.zeros((16, 16, 3), np.uint8))
    vw.abort()

    class Closed:
        def __init__(self, *a):
            pass

        def isOpened(self):
            return False

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoWriter", Closed)
    with pytest.raises(RuntimeError, match="cannot open a video writer"):
        VideoWriter(tmp_path / "d.mp4", fps=5, size=(32, 32))
    assert list(tmp_path.iterdir()) == []


def test_write_image_round_trip(tmp_path):
    img = (np.arange(30 * 20 * 3) % 251).astype(np.uint8).reshape(30, 20, 3)
    p = write_image(tmp_path / "x.png", img)
    np.testing.assert_array_equal(cv2.imread(str(p)), img)
