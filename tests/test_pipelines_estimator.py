"""PoseEstimator facade: every card kind, boxes=, video with tracking, timings, clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from conftest import shared_path
from posekit.data.io import read_image
from posekit.pipelines.estimator import PoseEstimator, StageTimer, open_video
from posekit.runtime.cards import load_card
from posekit.runtime.testing import fake_rtmo, fake_simcc


def dot_image(h, w, dots, sigma=5.0):
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.zeros((h, w))
    for x, y in dots:
        a = np.maximum(a, np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2)))
    return np.repeat((255 * a).round().astype(np.uint8)[..., None], 3, 2)


def write_card(tmp_path, base, onnx_bytes, name):
    (tmp_path / f"{name}.onnx").write_bytes(onnx_bytes)
    d = yaml.safe_load(open(load_card(base).source))
    d["name"] = name
    d["weights"] = {"path": f"{name}.onnx"}  # relative to the card file
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump(d))
    return f


@pytest.fixture
def rtmo_card(tmp_path):
    return write_card(tmp_path, "rtmo-s", fake_rtmo(640), "fake-rtmo")


def test_one_stage_from_a_custom_card_file(rtmo_card):
    est = PoseEstimator(str(rtmo_card))
    people = est(dot_image(360, 480, [(200.0, 100.0)]))
    assert len(people) == 1
    np.testing.assert_allclose(people[0].keypoints[8, :2], (200, 100), atol=0.6 * 480 / 640 + 0.5)
    stages = est.timer.summary()
    assert {"preprocess", "network", "postprocess"} <= set(stages) and stages["network"]["count"] == 1
    with pytest.raises(ValueError, match="top-down"):
        est(dot_image(10, 10, []), boxes=np.zeros((1, 4)))


def test_top_down_with_callable_detector_and_given_boxes(tmp_path):
    card = write_card(tmp_path, "rtmpose-s", fake_simcc(), "fake-pose")
    dots = [(100.0, 120.0), (400.0, 250.0)]
    boxes = np.array([[x - 40, y - 80, x + 40, y + 80] for x, y in dots], np.float32)
    est = PoseEstimator(str(card), detector=lambda img: (boxes, np.array([0.9, 0.6], np.float32)))
    img = dot_image(400, 600, dots)
    people = est(img)
    assert [round(p.extra["box_score"], 2) for p in people] == [0.9, 0.6]
    for p, d in zip(people, dots):
        np.testing.assert_allclose(p.keypoints[:, :2], np.broadcast_to(d, (17, 2)), atol=0.6)
    given = est(img, boxes=boxes[1:])
    assert len(given) == 1 and np.allclose(given[0].keypoints[0, :2], dots[1], atol=0.6)
    assert "detector" in est.timer.summary()


def test_top_down_default_detector_is_only_built_when_needed(tmp_path, monkeypatch):
    """With boxes given, the default detector (and its weights) is never needed; without, the missing weights are
    a clear error naming the file."""
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("posekit.runtime.download.urllib.request.urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    card = write_card(tmp_path, "rtmpose-s", fake_simcc(), "fake-pose")
    est = PoseEstimator(str(card))
    people = est(dot_image(400, 600, [(100.0, 120.0)]), boxes=np.array([[60, 40, 140, 200]], np.float32))
    assert len(people) == 1 and np.allclose(people[0].keypoints[0, :2], (100, 120), atol=0.6)
    with pytest.raises(RuntimeError, match="yolox_nano_8xb8-300e_humanart"):
        est(dot_image(400, 600, []))


def test_bottom_up_tfpose_card_on_a_real_image():
    est = PoseEstimator("tfpose-mnv2", weights=shared_path("weights", "openpose_mobilenet_v2_small_432x368.onnx"),
                        threads=2)
    img = read_image(shared_path("data", "mmpose-coco", "images", "000000000785.jpg"))
    people = est(img)
    assert len(people) >= 1 and people[0].keypoints.shape == (17, 3)
    # the one skier: the best person's nose/ankles lie inside the GT box [280, 44, 219, 346] (xywh)
    ok = people[0].keypoints[:, 2] > 0.2
    xy = people[0].keypoints[ok, :2]
    assert ok.sum() >= 10 and np.all((xy >= [270, 34]) & (xy <= [509, 400]))
    assert {"network", "grouping"} <= set(est.timer.summary())


def test_video_yields_tracked_people(rtmo_card, tmp_path):
    path = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    assert vw.isOpened()
    truth = [(60.0 + 3 * t, 120.0) for t in range(6)]  # small person (20x30 px box): slow motion
    for d in truth:
        vw.write(dot_image(240, 320, [d]))
    vw.release()
    est = PoseEstimator(str(rtmo_card))
    seen = list(est.video(str(path)))
    assert [i for i, _, _ in seen] == list(range(6))
    for (i, frame, people), d in zip(seen, truth):
        assert frame.shape == (240, 320, 3) and len(people) == 1
        assert people[0].track_id == 0
        np.testing.assert_allclose(people[0].keypoints[8, :2], d, atol=1.5)
    assert est.timer.summary()["decode"]["count"] == 7  # 6 frames + the end-of-stream read
    assert len(list(est.video(str(path), max_frames=2))) == 2


def test_clear_errors(tmp_path, rtmo_card):
    with pytest.raises(ValueError, match="detector"):
        PoseEstimator("yolox-nano-human")
    with pytest.raises(ValueError, match="only applies to top-down"):
        PoseEstimator(str(rtmo_card), detector="yolox-nano-human")
    with pytest.raises(FileNotFoundError, match="video not found"):
        open_video(tmp_path / "none.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(RuntimeError, match="cannot open"):
        open_video(junk)


def test_stage_timer():
    t = StageTimer()
    t.add("network", 0.010)
    t.add("network", 0.030)
    t.add("decode", 0.002)
    s = t.summary()
    assert list(s) == ["decode", "network"]
    assert s["network"]["mean_ms"] == pytest.approx(20.0) and s["network"]["total_ms"] == pytest.approx(40.0)
    assert "network" in t.format()
