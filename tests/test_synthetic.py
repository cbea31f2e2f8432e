"""Synthetic dataset generator (posekit.data.synthetic) and the `posekit synth` command."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from posekit.cli import main
from posekit.data import synthetic as S
from posekit.data.synthetic import make_synthetic_dataset, render_image
from posekit.schema import COCO17

W, H = 160, 128


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    path = make_synthetic_dataset(out, 40, size=(W, H), seed=0, crowd_prob=0.3)
    return path, json.loads(path.read_text())


def test_determinism(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", 5, size=(96, 80), seed=7)
    b = make_synthetic_dataset(tmp_path / "b", 5, size=(96, 80), seed=7)
    c = make_synthetic_dataset(tmp_path / "c", 5, size=(96, 80), seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    names = sorted(p.name for p in (tmp_path / "a" / "images").iterdir())
    assert len(names) == 5
    for n in names:
        assert (tmp_path / "a" / "images" / n).read_bytes() == (tmp_path / "b" / "images" / n).read_bytes()
    assert any((tmp_path / "a" / "images" / n).read_bytes() != (tmp_path / "c" / "images" / n).read_bytes()
               for n in names)
    # image i depends only on (seed, i)
    img1, anns1 = render_image(np.random.default_rng([7, 3]), (96, 80))
    img2, anns2 = render_image(np.random.default_rng([7, 3]), (96, 80))
    np.testing.assert_array_equal(img1, img2)
    assert anns1 == anns2


def test_valid_coco(dataset):
    path, d = dataset
    assert set(d) >= {"info", "licenses", "images", "annotations", "categories"}
    cat = d["categories"][0]
    assert cat["keypoints"] == list(COCO17.keypoints)
    assert cat["skeleton"] == [[a + 1, b + 1] for a, b in COCO17.skeleton]
    images = {im["id"]: im for im in d["images"]}
    assert len(images) == 40 and all(im["width"] == W and im["height"] == H for im in images.values())
    ids = [a["id"] for a in d["annotations"]]
    assert len(set(ids)) == len(ids)
    n_kp = n_small = n_crowd = 0
    for a in d["annotations"]:
        assert a["image_id"] in images and a["category_id"] == 1
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= W + 1e-6 and y + h <= H + 1e-6
        assert a["area"] > 0
        kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
        assert len(a["keypoints"]) == 51
        assert set(np.unique(kp[:, 2])) <= {0, 1, 2}
        assert a["num_keypoints"] == int((kp[:, 2] > 0).sum())
        assert (kp[kp[:, 2] == 0, :2] == 0).all()
        lab = kp[kp[:, 2] > 0]
        assert ((lab[:, 0] >= -0.5) & (lab[:, 0] < W - 0.5) & (lab[:, 1] >= -0.5) & (lab[:, 1] < H - 0.5)).all()
        # area is the area of the segmentation
        if a["iscrowd"]:
            n_crowd += 1
            assert isinstance(a["segmentation"], dict) and a["segmentation"]["size"] == [H, W]
            assert a["num_keypoints"] == 0
            rle = a["segmentation"]
        else:
            assert isinstance(a["segmentation"], list) and all(len(p) >= 6 for p in a["segmentation"])
            rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], H, W))
            n_kp += a["num_keypoints"] > 0
            n_small += a["num_keypoints"] == 0
        assert float(mask_utils.area(rle)) == pytest.approx(a["area"])
        np.testing.assert_allclose(mask_utils.toBbox(rle), a["bbox"], atol=0.01)
    assert n_kp >= 30 and n_small >= 1 and n_crowd >= 1


def test_pycocotools_self_evaluation_is_perfect(dataset):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    path, d = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        res = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in d["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
        ev = COCOeval(gt, gt.loadRes(res), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        ap = ev.stats[0]
        # the same evaluation is not vacuous: shifted keypoints score far lower
        rng = np.random.default_rng(0)
        bad = []
        for r in res:
            kp = np.asarray(r["keypoints"], float).reshape(-1, 3)
            kp[:, :2] += rng.normal(0, 15, (len(kp), 2))
            bad.append({**r, "keypoints": kp.reshape(-1).tolist()})
        ev2 = COCOeval(gt, gt.loadRes(bad), "keypoints")
        ev2.evaluate()
        ev2.accumulate()
        ev2.summarize()
    assert ap == pytest.approx(1.0)
    assert ev2.stats[0] < 0.5


def test_visibility_flags_match_the_painted_pixels():
    counts = {0: 0, 1: 0, 2: 0}
    for i in range(40):
        img, anns, maps = render_image(np.random.default_rng([123, i]), (W, H), crowd_prob=0.2,
                                       occluder_prob=0.6, return_maps=True)
        owner, part = maps["owner"], maps["part"]
        assert img.shape == (H, W, 3) and owner.shape == (H, W) and part.shape == (H, W)
        for j, a in enumerate(anns):
            m_owner = owner == j + 1
            if a["iscrowd"]:
                seg = mask_utils.decode(a["segmentation"]).astype(bool)
                np.testing.assert_array_equal(seg, m_owner)
                continue
            seg = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], H, W))).astype(bool)
            assert (seg | ~m_owner).all()  # the polygons cover every pixel the person shows (holes may be filled)
            kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
            for k, (x, y, v) in enumerate(kp):
                counts[int(v)] += 1
                if v == 0:
                    continue
                px, py = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
                own_parts = S._KEYPOINTS[COCO17.keypoints[k]][1]
                shows_own = owner[py, px] == j + 1 and part[py, px] in own_parts
                if v == 2:
                    assert shows_own, (i, j, k)
                    assert seg[py, px]
                elif COCO17.keypoints[k] not in S._FACE:
                    # covered: by another instance, an object, or another part of the same body
                    assert not shows_own, (i, j, k)
    assert counts[2] > 200 and counts[1] > 30 and counts[0] > 10


def test_figures_are_anatomical():
    rng = np.random.default_rng(5)
    for _ in range(300):
        f = S._Figure(rng, head_px=10.0)
        body_left = f.R @ np.array([1.0, 0.0, 0.0])
        p = {k: v / 10.0 for k, v in f.pts.items()}  # head heights, camera frame (x, y, z)
        for s in ("left", "right"):
            thigh = p[f"{s}_knee"] - p[f"{s}_hip"]
            shin = p[f"{s}_ankle"] - p[f"{s}_knee"]
            upper = p[f"{s}_elbow"] - p[f"{s}_shoulder"]
            fore = p[f"{s}_wrist"] - p[f"{s}_elbow"]
            # limb lengths in head heights (adult ~1.85 / 1.8 / 1.4 / 1.15, children 0.72x)
            for vec, ln in ((thigh, 1.85), (shin, 1.8), (upper, 1.4), (fore, 1.15)):
                assert 0.72 * 0.93 * ln - 1e-6 <= np.linalg.norm(vec) <= 1.07 * ln + 1e-6
            # knees bend one way only: the hinge axis thigh x shin points to the body's right (a knee bending
            # forwards would point it to the left); elbows bend at most 145 degrees
            hinge = np.cross(thigh, shin) / np.linalg.norm(thigh) / np.linalg.norm(shin)
            if np.linalg.norm(hinge) > 0.05:
                assert np.dot(hinge, body_left) < 0
            cos_e = np.dot(upper, fore) / np.linalg.norm(upper) / np.linalg.norm(fore)
            assert cos_e >= np.cos(np.radians(145.5))
        # the person's left shoulder is on the left side of the body: (left - right) . (body left) > 0
        assert np.dot(p["left_shoulder"] - p["right_shoulder"], body_left) > 0
        assert np.dot(p["left_eye"] - p["right_eye"], body_left) > 0


def test_other_schema_and_bad_arguments():
    img, anns = render_image(np.random.default_rng(1), (64, 64), min_people=2, max_people=2, schema="openpose18")
    assert all(len(a["keypoints"]) == 54 for a in anns)
    with pytest.raises(ValueError, match="16x16"):
        render_image(np.random.default_rng(0), (8, 64))
    with pytest.raises(ValueError, match="min_people"):
        render_image(np.random.default_rng(0), (64, 64), min_people=3, max_people=2)
    from posekit.schema import KeypointSchema

    odd = KeypointSchema.from_names("odd", ["nose", "left_pinky"], sigmas=[0.03, 0.03])
    with pytest.raises(ValueError, match="left_pinky"):
        render_image(np.random.default_rng(0), (64, 64), schema=odd)


def test_cli_writes_files(tmp_path, capsys):
    out = tmp_path / "ds"
    rc = main(["synth", str(out), "--images", "3", "--size", "64x48", "--seed", "2", "--max-people", "2",
               "--crowd-prob", "0"])
    assert rc == 0
    d = json.loads((out / "person_keypoints.json").read_text())
    assert [im["file_name"] for im in d["images"]] == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert all((out / "images" / im["file_name"]).is_file() for im in d["images"])
    assert all(im["width"] == 64 and im["height"] == 48 for im in d["images"])
    assert not any(a["iscrowd"] for a in d["annotations"])
    assert "wrote 3 images" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--size", "0x10"], "--size"),
    (["--size", "64"], "--size"),
    (["--images", "-2"], "--images"),
    (["--min-people", "3", "--max-people", "1"], "--min-people"),
    (["--crowd-prob", "1.5"], "--crowd-prob"),
    (["--schema", "nope"], "unknown keypoint schema"),
])
def test_cli_bad_arguments(tmp_path, capsys, args, message):
    rc = main(["synth", str(tmp_path / "x"), "--images", "1", *args])
    assert rc == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
