"""The pipelined video runner: the sequential loop's frames, people and track ids; bounded frames in flight with a
slow consumer; errors and early stops end the threads."""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import shared_path
from posekit.cli import main
from posekit.pipelines.estimator import PoseEstimator
from posekit.pipelines.tracking import GreedyTracker
from posekit.pipelines.video import VideoRunner
from posekit.viz import clip_from_images


def _shared_clip(tmp_path, hold=2):
    """A 640x480 clip from the shared COCO images: 1, 2, 5 and 5 annotated people, then crowded train images."""
    images = sorted(shared_path("data", "mmpose-coco", "images").glob("*.jpg"))
    images += sorted(shared_path("data", "coco-mini-train", "images").glob("*.jpg"))[:4]
    return clip_from_images(images, tmp_path / "clip.avi", hold=hold, pan=6)


def _video_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("posekit-video")]


@pytest.fixture(scope="module")
def tfpose():
    return PoseEstimator("tfpose-mnv2", weights=shared_path("weights", "openpose_mobilenet_v2_small_432x368.onnx"),
                         threads=1)


def test_pipelined_gives_the_sequential_people_and_track_ids(tfpose, tmp_path):
    clip = _shared_clip(tmp_path)
    seq = [(i, f, p) for i, f, p in tfpose.video(str(clip), pipelined=False)]
    pipe = [(i, f, p) for i, f, p in tfpose.video(str(clip), queue_size=2)]
    assert [i for i, _, _ in pipe] == [i for i, _, _ in seq] == list(range(16))
    counts = [len(p) for _, _, p in seq]
    assert len(set(counts)) >= 3 and max(counts) >= 4  # the person count varies over the clip
    for (_, f1, p1), (_, f2, p2) in zip(seq, pipe):
        np.testing.assert_array_equal(f1, f2)
        assert [q.track_id for q in p1] == [q.track_id for q in p2]
        assert len(p1) == len(p2)
        for a, b in zip(p1, p2):
            np.testing.assert_array_equal(a.keypoints, b.keypoints)
            assert a.score == b.score
    # the held frames continue their tracks: ids carry over inside each hold, and new images bring new ids
    ids = [sorted(q.track_id for q in p) for _, _, p in seq]
    assert any(ids[2 * k] and ids[2 * k] == ids[2 * k + 1] for k in range(8))
    assert max(max(i) for i in ids if i) >= max(counts)
    assert _video_threads() == []


@pytest.mark.parametrize("split", [False, True])
def test_slow_consumer_keeps_frames_in_flight_bounded(tmp_path, split):
    frames = [np.full((48, 64, 3), 10 * k, np.uint8) for k in range(25)]
    clip = clip_from_images(frames, tmp_path / "c.avi", size=(64, 48), hold=2, pan=0)  # 50 frames
    calls = []

    def model(frame):
        calls.append(int(frame[0, 0, 0]))
        return []

    stages = (model, lambda frame, people: people) if split else None
    runner = VideoRunner(model, queue_size=2, split=stages)
    # queues of 2 after the reader and after each stage, one frame in each thread and one in the consumer
    assert runner.max_in_flight == (10 if split else 7)
    it = runner.run(str(clip))
    first = next(it)
    # the consumer holds frame 0 and takes nothing more: every stage stops at the bound
    deadline = time.monotonic() + 20
    while runner.frames_read < runner.max_in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # room to overrun the bound, were it not enforced
    assert runner.frames_read == runner.max_in_flight
    assert len(calls) <= runner.max_in_flight - runner.queue_size - 1  # the reader's queue and frame not run
    rest = []
    for item in it:  # a slow writer
        time.sleep(0.002)
        rest.append(item)
    assert [i for i, _, _ in [first] + rest] == list(range(50)) and len(calls) == 50
    assert runner.frames_read == runner.frames_done == 50 and runner.peak_in_flight == runner.max_in_flight
    assert _video_threads() == []


def test_sequential_runner_holds_one_frame(tmp_path):
    clip = clip_from_images([np.zeros((48, 64, 3), np.uint8)] * 3, tmp_path / "s.avi", size=(64, 48), hold=2)
    runner = VideoRunner(lambda frame: [], pipelined=False)
    assert len(list(runner.run(str(clip)))) == 6 and runner.peak_in_flight == 1


def test_errors_and_early_stop_end_the_threads(tmp_path):
    clip = clip_from_images([np.full((48, 64, 3), 10 * k, np.uint8) for k in range(10)], tmp_path / "e.avi",
                            size=(64, 48), hold=1)

    def model(frame):
        if int(frame[0, 0, 0]) >= 45:
            raise ValueError("bad frame")
        return []

    got = []
    with pytest.raises(ValueError, match="bad frame"):
        for i, _, _ in VideoRunner(model).run(str(clip)):
            got.append(i)
    assert got == [0, 1, 2, 3, 4] and _video_threads() == []
    runner = VideoRunner(lambda f: [], queue_size=1)
    for i, _, _ in runner.run(str(clip)):
        if i == 1:
            break
    assert _video_threads() == [] and runner.frames_read <= runner.max_in_flight + 1
    assert len(list(VideoRunner(lambda f: [], queue_size=1).run(str(clip), max_frames=4))) == 4
    with pytest.raises(FileNotFoundError, match="video not found"):
        VideoRunner(lambda f: []).run(str(tmp_path / "none.avi"))
    with pytest.raises(ValueError, match="queue_size"):
        VideoRunner(lambda f: [], queue_size=0)


def test_predict_video_pipelined_equals_no_pipeline(tmp_path, capsys):
    clip = _shared_clip(tmp_path, hold=1)
    weights = str(shared_path("weights", "openpose_mobilenet_v2_small_432x368.onnx"))
    out = {}
    for flag in ([], ["--no-pipeline"]):
        path = tmp_path / f"r{len(flag)}.json"
        rc = main(["predict", str(clip), "--model", "tfpose-mnv2", "--weights", weights, "--threads", "1",
                   "--out-json", str(path), "--out-dir", str(tmp_path / f"o{len(flag)}"), "--no-progress",
                   *flag])
        assert rc == 0
        out[len(flag)] = json.loads(path.read_text())
        cap = cv2.VideoCapture(str(tmp_path / f"o{len(flag)}" / "clip.mp4"))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
        cap.release()
    assert out[0] == out[1] and len(out[0]) >= 8
    assert len({r["image_id"] for r in out[0]}) >= 6 and {"track_id"} <= set(out[0][0])
    capsys.readouterr()
