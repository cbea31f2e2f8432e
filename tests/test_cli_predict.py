"""`posekit predict` and predict_coco, with stand-in models of the official interfaces on the real images."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import yaml

from conftest import shared_path
from posekit.cli import main
from posekit.pipelines.coco_runner import predict_coco
from posekit.pipelines.estimator import PoseEstimator
from posekit.runtime.cards import load_card
from posekit.runtime.testing import fake_rtmo, fake_simcc


def write_card(tmp_path, base, onnx_bytes, name):
    (tmp_path / f"{name}.onnx").write_bytes(onnx_bytes)
    d = yaml.safe_load(open(load_card(base).source))
    d["name"] = name
    d["weights"] = {"path": str(tmp_path / f"{name}.onnx")}
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump(d))
    return str(f)


@pytest.fixture
def rtmo_card(tmp_path):
    return write_card(tmp_path, "rtmo-s", fake_rtmo(640), "fake-rtmo")


def test_predict_images_with_annotation_ids(tmp_path, rtmo_card, capsys):
    img_dir = shared_path("data", "mmpose-coco", "images")
    ann = shared_path("data", "mmpose-coco", "person_keypoints.json")
    out = tmp_path / "res.json"
    rc = main(["predict", str(img_dir), "--model", rtmo_card, "--out-json", str(out), "--annotations", str(ann),
               "--out-dir", str(tmp_path / "viz"), "--timing", "--no-progress"])
    assert rc == 0
    res = json.loads(out.read_text())
    ids = {im["file_name"]: im["id"] for im in json.loads(ann.read_text())["images"]}
    assert len(res) == 4 and sorted(r["image_id"] for r in res) == sorted(ids.values())
    for r in res:
        assert len(r["keypoints"]) == 51 and r["category_id"] == 1 and r["score"] == pytest.approx(0.9)
    # each result's keypoint 8 is the brightest pixel of its own image (the stand-in's output)
    for name, image_id in ids.items():
        img = cv2.imread(str(img_dir / name)).astype(np.int32).sum(2)
        r = next(r for r in res if r["image_id"] == image_id)
        x, y = r["keypoints"][24:26]
        assert img[int(round(y)), int(round(x))] >= img.max() - 60
    assert sorted(p.name for p in (tmp_path / "viz").iterdir()) == sorted(ids)
    text = capsys.readouterr().out
    assert "network" in text and "decode" in text and "draw" in text


def test_predict_sequential_ids_note_and_video(tmp_path, rtmo_card, capsys):
    src = shared_path("data", "mmpose-coco", "images", "000000000785.jpg")
    vid = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 120))
    for t in range(3):
        frame = np.zeros((120, 160, 3), np.uint8)
        cv2.circle(frame, (40 + 2 * t, 60), 6, (255, 255, 255), -1)
        vw.write(cv2.GaussianBlur(frame, (0, 0), 3))
    vw.release()
    out = tmp_path / "r.json"
    rc = main(["predict", str(src), str(vid), "--model", rtmo_card, "--out-json", str(out), "--out-dir",
               str(tmp_path / "o"), "--no-progress"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert [r["image_id"] for r in res] == [1, 2, 3, 4]
    assert [r.get("track_id") for r in res] == [None, 0, 0, 0]
    assert "sequential" in capsys.readouterr().err
    assert (tmp_path / "o" / "clip.mp4").is_file() and (tmp_path / "o" / "000000000785.jpg").is_file()


def test_predict_errors(tmp_path, rtmo_card, capsys):
    assert main(["predict", str(tmp_path / "nothing.jpg"), "--model", rtmo_card]) == 3  # skipped, reported
    assert "source not found" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nothing.jpg"), "--model", rtmo_card, "--strict"]) == 1
    assert "source not found" in capsys.readouterr().err
    other = tmp_path / "x.jpg"
    shutil.copy(shared_path("data", "mmpose-coco", "images", "000000000785.jpg"), other)
    ann = shared_path("data", "mmpose-coco", "person_keypoints.json")
    assert main(["predict", str(other), "--model", rtmo_card, "--annotations", str(ann)]) == 1
    assert "not in" in capsys.readouterr().err
    assert main(["predict", str(other), "--model", "no-such-card"]) == 1
    assert "unknown model card" in capsys.readouterr().err


def test_predict_coco_gt_and_detection_boxes(tmp_path):
    card = write_card(tmp_path, "rtmpose-s", fake_simcc(), "fake-pose")
    est = PoseEstimator(card, detector=lambda img: (np.zeros((0, 4)), np.zeros(0)))
    ann_file = shared_path("data", "mmpose-coco", "person_keypoints.json")
    img_dir = shared_path("data", "mmpose-coco", "images")
    ann = json.loads(ann_file.read_text())
    res = predict_coco(est, ann_file, img_dir, boxes="gt", progress=False)
    gt = [a for a in ann["annotations"] if not a["iscrowd"]]
    assert len(res) == len(gt) == 14
    assert sorted(tuple(np.round(r["bbox"], 1)) for r in res) == sorted(tuple(np.round(a["bbox"], 1)) for a in gt)
    dets = shared_path("data", "mmpose-coco", "person_detections_AP_H_56.json")
    res = predict_coco(est, ann_file, img_dir, boxes=str(dets), progress=False)
    assert len(res) == 118 and {r["image_id"] for r in res} == {im["id"] for im in ann["images"]}
    assert predict_coco(est, ann_file, img_dir, boxes="model", progress=False) == []
    rtmo = PoseEstimator(write_card(tmp_path, "rtmo-s", fake_rtmo(640), "r"))
    with pytest.raises(ValueError, match="top-down"):
        predict_coco(rtmo, ann_file, img_dir, boxes="gt", progress=False)


def test_unreadable_sources_are_reported_and_skipped(tmp_path, rtmo_card, capsys):
    """predict good.jpg broken.jpg missing.jpg good2.jpg: the two good images are processed and written (ids 1 and
    3: every image file keeps its number, unreadable or not; a missing path has none), the other two are reported
    with their reasons on stderr, in --errors and in the summary, and the exit status is 3. --strict stops at the
    first one (status 1) and writes nothing."""
    img = shared_path("data", "mmpose-coco", "images", "000000000785.jpg")
    good, good2 = tmp_path / "good.jpg", tmp_path / "good2.jpg"
    shutil.copy(img, good)
    shutil.copy(img, good2)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(img.read_bytes()[:2000])  # a truncated JPEG
    missing = tmp_path / "missing.jpg"
    out, errs = tmp_path / "r.json", tmp_path / "errors.json"
    argv = ["predict", str(good), str(broken), str(missing), str(good2), "--model", rtmo_card, "--out-json",
            str(out), "--errors", str(errs), "--no-progress"]
    capsys.readouterr()
    assert main(argv) == 3
    cap = capsys.readouterr()
    res = json.loads(out.read_text())
    assert sorted({r["image_id"] for r in res}) == [1, 3]
    failed = json.loads(errs.read_text())
    assert [f["source"] for f in failed] == [str(missing), str(broken)]  # missing: found before any image is read
    assert "not found" in failed[0]["error"] and "truncated" in failed[1]["error"]
    assert f"skipped {broken}" in cap.err and f"skipped {missing}" in cap.err
    assert "4 source(s), 2 read, 2 failed" in cap.out

    out.unlink()
    assert main([*argv, "--strict"]) == 1
    assert "source not found" in capsys.readouterr().err and not out.exists()
    assert main(["predict", str(good), str(broken), "--model", rtmo_card, "--out-json", str(out), "--strict",
                 "--no-progress"]) == 1
    assert "truncated" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "sequential"])
def test_video_cut_short_is_reported_and_keeps_its_frames(tmp_path, rtmo_card, capsys, pipelined):
    """An AVI and a (streamable) MP4 cut in half open and promise 12 frames but decode fewer: both runners keep
    the decoded frames (ids 1.., the missing frames keep theirs, so the next video's start at 13), report the
    missing frames with the Ray engine's words (posekit.pipelines.video.shortfall_error) on stderr, in --errors
    and in the summary, exit 3; --strict stops (1) and writes nothing. An intact video is not flagged."""
    from posekit.pipelines.video import shortfall_error
    from video_util import cut_in_half, decodable_frames, write_video

    frames, rng = [], np.random.default_rng(0)
    for t in range(12):  # a bright blob on dim noise (the noise keeps the frames, not the header, most of a file)
        f = np.zeros((120, 160, 3), np.uint8)
        cv2.circle(f, (40 + 4 * t, 60), 6, (255, 255, 255), -1)
        f = cv2.GaussianBlur(f, (0, 0), 3)
        frames.append(np.maximum(f, rng.integers(0, 60, f.shape, dtype=np.uint8)))
    avi = cut_in_half(write_video(tmp_path / "cut.avi", frames, "MJPG"))
    mp4 = cut_in_half(write_video(tmp_path / "cut.mp4", frames, "mp4v"), streamable_mp4=True)
    whole = write_video(tmp_path / "whole.avi", frames[:3], "MJPG")
    n = {p.name: decodable_frames(p) for p in (avi, mp4)}
    assert all(0 < k < 12 for k in n.values()), n
    out, errs = tmp_path / "r.json", tmp_path / "e.json"
    argv = ["predict", str(avi), str(mp4), str(whole), "--model", rtmo_card, "--out-json", str(out), "--errors",
            str(errs), "--no-progress"] + ([] if pipelined else ["--no-pipeline"])
    capsys.readouterr()
    assert main(argv) == 3
    cap = capsys.readouterr()
    assert "3 source(s), 1 read, 2 failed" in cap.out
    ids = sorted(r["image_id"] for r in json.loads(out.read_text()))  # the stand-in finds one person a frame
    assert ids == [*range(1, n["cut.avi"] + 1), *range(13, 13 + n["cut.mp4"]), 25, 26, 27]
    want = [{"source": str(p), "error": shortfall_error(12, n[p.name])} for p in (avi, mp4)]
    assert json.loads(errs.read_text()) == want
    assert f"{12 - n['cut.avi']} frame(s) could not be read ({n['cut.avi']}..11)" in want[0]["error"]
    assert f"skipped {avi}: {want[0]['error']}" in cap.err and f"skipped {mp4}" in cap.err
    out.unlink()
    assert main([*argv, "--strict"]) == 1
    assert "could not be read" in capsys.readouterr().err and not out.exists()
    assert main(["predict", str(whole), "--model", rtmo_card, "--max-frames", "2", "--no-progress"]) == 0
