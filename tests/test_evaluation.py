"""Evaluation: COCO/CrowdPose AP through pycocotools/xtcocotools, results files, OKS, OKS-NMS, PCK."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from posekit.evaluation.coco import (
    COCO_STAT_NAMES,
    CROWDPOSE_STAT_NAMES,
    evaluate_coco_keypoints,
)
from posekit.evaluation.oks import compute_oks, keypoint_areas, oks_nms, pairwise_oks, soft_oks_nms
from posekit.evaluation.pck import head_sizes_from_boxes, pck_bbox, pckh
from posekit.evaluation.results import load_results, perturbed_results, save_results, validate_results
from posekit.schema import COCO17, CROWDPOSE14
from conftest import shared_path

VAL = ("data", "annotations", "coco-val2017-538images-person_keypoints.json")


# ----------------------------------------------------------------------------------------------- helpers
def make_noisy_results(gt: dict, seed: int = 0) -> list[dict]:
    """Results from the ground truth: per-person noise scaled by the person size, dropped keypoints, missed
    people, false positives anywhere in the image, and scores that loosely follow the quality."""
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    return perturbed_results(gt["annotations"], np.random.default_rng(seed), miss_rate=0.08, fp_rate=0.15,
                             max_level=0.08, image_sizes=sizes)


def pycocotools_direct(gt_path, res_path, image_ids=None, sigmas=None) -> dict:
    """The reference: pycocotools called the plain way."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        dt = coco.loadRes(str(res_path))
        ev = COCOeval(coco, dt, iouType="keypoints")
        if image_ids is not None:
            ev.params.imgIds = image_ids
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, float)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(COCO_STAT_NAMES, ev.stats.tolist())), ev


def assert_stats_close(a: dict, b: dict, tol: float = 1e-12) -> None:
    assert list(a) == list(b)
    for k in a:
        assert abs(a[k] - b[k]) <= tol, (k, a[k], b[k])


@pytest.fixture(scope="module")
def val():
    path = shared_path(*VAL)
    return path, json.loads(path.read_text())


@pytest.fixture(scope="module")
def noisy(val, tmp_path_factory):
    path, gt = val
    res = make_noisy_results(gt)
    res_path = tmp_path_factory.mktemp("res") / "noisy.json"
    save_results(res, res_path)
    ref, ev = pycocotools_direct(path, res_path)
    return res, res_path, ref, ev


# ------------------------------------------------------------------------------------------- COCO AP/AR
def test_matches_pycocotools_directly(val, noisy):
    path, gt = val
    res, res_path, ref, _ = noisy
    # A meaningful operating point, not a degenerate one.
    assert 0.3 < ref["AP"] < 0.9 and ref["AP50"] > ref["AP75"] > 0.1
    stats = evaluate_coco_keypoints(path, res_path)
    assert_stats_close(dict(stats), ref)
    assert "Average Precision" in stats.log and "maxDets= 20" in stats.log
    # dict / COCO-object ground truth and a list of results give the same numbers, and nothing is modified.
    from pycocotools.coco import COCO

    before = json.dumps(res)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    assert_stats_close(dict(evaluate_coco_keypoints(gt, res)), ref)
    assert_stats_close(dict(evaluate_coco_keypoints(coco, res)), ref)
    assert json.dumps(res) == before
    assert "ignore" not in gt["annotations"][0]


def test_perfect_results_give_ap_1(val):
    path, gt = val
    res = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
           for a in gt["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
    stats = evaluate_coco_keypoints(path, res)
    assert stats["AP"] == 1.0 and stats["AP50"] == 1.0 and stats["AR"] == 1.0


def test_xtcocotools_agrees_with_pycocotools(val, noisy):
    path, _ = val
    _, res_path, ref, _ = noisy
    xt = evaluate_coco_keypoints(path, res_path, backend="xtcocotools")
    assert xt.backend == "xtcocotools"
    assert_stats_close(dict(xt), ref)


def test_use_area_false_is_box_area_and_matches_xtcocotools(val, noisy):
    path, gt = val
    _, res_path, ref, _ = noisy
    py = evaluate_coco_keypoints(path, res_path, use_area=False)
    xt = evaluate_coco_keypoints(path, res_path, use_area=False, backend="xtcocotools")
    assert_stats_close(dict(py), dict(xt))
    # It really changes the OKS scale (and the medium/large split).
    assert max(abs(py[k] - ref[k]) for k in ref) > 5e-3
    # ... and it is pycocotools on a ground truth whose area is the box area times 0.53.
    gt2 = json.loads(json.dumps(gt))
    for a in gt2["annotations"]:
        a["area"] = a["bbox"][2] * a["bbox"][3] * 0.53
    gt2_path = res_path.parent / "gt_boxarea.json"
    gt2_path.write_text(json.dumps(gt2))
    direct, _ = pycocotools_direct(gt2_path, res_path)
    assert_stats_close(dict(py), direct)


def test_custom_sigmas_and_image_subset(val, noisy):
    path, gt = val
    _, res_path, ref, _ = noisy
    wide = COCO17.sigmas_array * 2
    s_arr = evaluate_coco_keypoints(path, res_path, sigmas=wide)
    direct, _ = pycocotools_direct(path, res_path, sigmas=wide)
    assert_stats_close(dict(s_arr), direct)
    assert s_arr["AP"] > ref["AP"] + 0.05  # larger tolerance, higher AP
    assert_stats_close(dict(evaluate_coco_keypoints(path, res_path, sigmas=COCO17)), ref)
    with pytest.raises(ValueError, match="sigmas: 14 values"):
        evaluate_coco_keypoints(path, res_path, sigmas=CROWDPOSE14)
    ids = sorted(im["id"] for im in gt["images"])[::5]
    sub = evaluate_coco_keypoints(path, res_path, image_ids=ids)
    direct, _ = pycocotools_direct(path, res_path, image_ids=ids)
    assert_stats_close(dict(sub), direct)
    assert abs(sub["AP"] - ref["AP"]) > 1e-6
    with pytest.raises(ValueError, match="not in"):
        evaluate_coco_keypoints(path, res_path, image_ids=[ids[0], 123456789])


def test_empty_results_give_zeros_with_warning(val):
    path, _ = val
    with pytest.warns(UserWarning, match="no results"):
        stats = evaluate_coco_keypoints(path, [])
    assert dict(stats) == {k: 0.0 for k in COCO_STAT_NAMES}


def test_bad_arguments(val, tmp_path):
    path, _ = val
    with pytest.raises(ValueError, match="crowdpose"):
        evaluate_coco_keypoints(path, [], dataset="crowdpose", backend="pycocotools")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        evaluate_coco_keypoints(tmp_path / "nope.json", [])
    with pytest.raises(ValueError, match="entry 0: field 'keypoints' has 6 numbers, expected 51"):
        evaluate_coco_keypoints(path, [{"image_id": 397133, "category_id": 1, "keypoints": [0] * 6, "score": 1}])


def _crowdpose_set(tmp_path, rng):
    """Three images (easy / medium / hard crowd index), 3 people each, CrowdPose-14 json as the dataset has it."""
    images, anns = [], []
    aid = 1
    for img_id, ci in ((1, 0.05), (2, 0.5), (3, 0.95)):
        images.append({"id": img_id, "file_name": f"{img_id}.jpg", "width": 640, "height": 480, "crowdIndex": ci})
        for p in range(3):
            x0, y0 = 40 + 200 * p + rng.uniform(0, 20), 60 + rng.uniform(0, 40)
            w, h = rng.uniform(90, 130), rng.uniform(250, 330)
            kp = np.stack([x0 + rng.uniform(0, w, 14), y0 + rng.uniform(0, h, 14), np.full(14, 2.0)], 1)
            kp[rng.random(14) < 0.15] = 0.0  # unlabelled joints
            anns.append({
                "id": aid, "image_id": img_id, "category_id": 1, "iscrowd": 0,
                "num_keypoints": int((kp[:, 2] > 0).sum()), "keypoints": kp.ravel().tolist(),
                "bbox": [x0, y0, w, h], "area": w * h * 0.6,
            })
            aid += 1
    gt = {"images": images, "annotations": anns,
          "categories": [CROWDPOSE14.to_coco_category(1) | {"keypoints": list(CROWDPOSE14.keypoints)}]}
    path = tmp_path / "crowdpose_gt.json"
    path.write_text(json.dumps(gt))
    return path, gt


def test_crowdpose_mode(tmp_path):
    rng = np.random.default_rng(3)
    path, gt = _crowdpose_set(tmp_path, rng)
    perfect = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 0.9}
               for a in gt["annotations"]]
    st = evaluate_coco_keypoints(path, perfect, dataset="crowdpose", use_area=False)
    assert list(st) == list(CROWDPOSE_STAT_NAMES)
    assert st["AP"] == 1.0 and st["AP(E)"] == 1.0 and st["AP(M)"] == 1.0 and st["AP(H)"] == 1.0
    assert "type=  easy" in st.log and "type=  hard" in st.log

    noisy = []
    for a in gt["annotations"]:
        kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
        kp[:, :2] += rng.normal(0, rng.uniform(2, 25), (14, 2))
        kp[:, 2] = 0.8
        noisy.append({"image_id": a["image_id"], "category_id": 1, "keypoints": kp.ravel().tolist(),
                      "score": float(rng.uniform(0.1, 1))})
    st = evaluate_coco_keypoints(path, noisy, dataset="crowdpose", use_area=False)
    assert 0.05 < st["AP"] < 0.99
    # The crowd AP is the COCO AP (same matching, CrowdPose sigmas), and AP(E/M/H) the AP of each image group
    # (xtcocotools rounds those to 4 decimals).
    coco = evaluate_coco_keypoints(path, noisy, sigmas=CROWDPOSE14, use_area=False)
    assert abs(st["AP"] - coco["AP"]) <= 1e-12 and abs(st["AR"] - coco["AR"]) <= 1e-12
    for name, img in (("AP(E)", 1), ("AP(M)", 2), ("AP(H)", 3)):
        one = evaluate_coco_keypoints(path, noisy, sigmas=CROWDPOSE14, use_area=False, image_ids=[img])
        assert abs(st[name] - one["AP"]) <= 5e-5 + 1e-12, name
    bad = json.loads(path.read_text())
    del bad["images"][1]["crowdIndex"]
    with pytest.raises(ValueError, match="image 2 has no 'crowdIndex'"):
        evaluate_coco_keypoints(bad, noisy, dataset="crowdpose", use_area=False)


# ---------------------------------------------------------------------------------------------- results
def test_results_round_trip_and_atomic_save(tmp_path):
    res = [{"image_id": np.int64(7), "category_id": 1, "keypoints": np.arange(51, dtype=np.float32) / 3,
            "score": np.float32(0.5), "bbox": [1.0, 2.0, 3.0, 4.0]}]
    p = save_results(res, tmp_path / "out" / "r.json")
    assert sorted(x.name for x in p.parent.iterdir()) == ["r.json"]  # no temp file left
    back = load_results(p, num_keypoints=17, image_ids=[7])
    assert back[0]["image_id"] == 7 and back[0]["bbox"] == [1.0, 2.0, 3.0, 4.0]
    assert back[0]["keypoints"] == [float(np.float32(i / 3)) for i in range(51)]
    # Failed save keeps the old file intact.
    with pytest.raises(ValueError, match="entry 0: missing field 'score'"):
        save_results([{"image_id": 1, "category_id": 1, "keypoints": [0.0] * 51}], p)
    assert load_results(p)[0]["image_id"] == 7


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"category_id": 1, "keypoints": [0] * 51, "score": 1}, "entry 1: missing field 'image_id'"),
        ({"image_id": 1, "category_id": 1, "keypoints": [0] * 50, "score": 1}, "entry 1: field 'keypoints' has 50"),
        ({"image_id": 1, "category_id": 1, "keypoints": [0] * 48, "score": 1}, "entry 1: field 'keypoints' has 48 numbers, expected 51"),
        ({"image_id": 1, "category_id": 1, "keypoints": [0] * 5 + [float("nan")] + [0] * 45, "score": 1},
         r"entry 1: field 'keypoints'\[5\] \(keypoint 1, s\) must be a finite number"),
        ({"image_id": 1, "category_id": 1, "keypoints": [0] * 3 + ["1"] + [0] * 47, "score": 1},
         r"entry 1: field 'keypoints'\[3\] \(keypoint 1, x\)"),
        ({"image_id": 1, "category_id": 1, "keypoints": [0] * 51, "score": float("inf")}, "entry 1: field 'score'"),
        ({"image_id": "1", "category_id": 1, "keypoints": [0] * 51, "score": 1}, "entry 1: field 'image_id' must be an integer"),
        ({"image_id": 99, "category_id": 1, "keypoints": [0] * 51, "score": 1}, r"1 image id\(s\) not in the annotations: 99 \(entry 1\)"),
    ],
)
def test_results_validation_names_entry_and_field(tmp_path, entry, message):
    good = {"image_id": 1, "category_id": 1, "keypoints": [1.0] * 51, "score": 0.5}
    p = tmp_path / "bad.json"
    p.write_text(json.dumps([good, entry]))
    with pytest.raises(ValueError, match=message) as e:
        load_results(p, image_ids=[1, 2])
    assert str(p) in str(e.value)


def test_results_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_results(tmp_path / "missing.json")
    p = tmp_path / "notlist.json"
    p.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="json list"):
        load_results(p)
    assert validate_results([]) == []


# -------------------------------------------------------------------------------------------------- OKS
def test_oks_hand_computed():
    sig = np.array([0.05, 0.1])
    gt = np.array([[[10.0, 10.0, 2], [20.0, 10.0, 1]]])
    pred = np.array([[[13.0, 14.0], [20.0, 10.0]], [[0.0, 0.0], [26.0, 18.0]]])
    area = 400.0
    # pred 0: d^2 = 25 at joint 0, 0 at joint 1; pred 1: d^2 = 200 at joint 0, 100 at joint 1.
    e = lambda d2, s: d2 / (2 * area * (2 * s) ** 2)  # noqa: E731
    want = [(math.exp(-e(25, 0.05)) + 1) / 2, (math.exp(-e(200, 0.05)) + math.exp(-e(100, 0.1))) / 2]
    got = compute_oks(pred, gt, [area], sig)
    assert got.shape == (2, 1)
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-12)
    # An unlabelled keypoint does not count.
    gt2 = gt.copy()
    gt2[0, 1, 2] = 0
    np.testing.assert_allclose(compute_oks(pred, gt2, [area], sig)[:, 0], [math.exp(-e(25, 0.05)), math.exp(-e(200, 0.05))])


def test_oks_matches_pycocotools_ious_on_real_data(val, noisy):
    path, gt = val
    res, _, _, ev = noisy
    by_img = {}
    for a in gt["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    dts = {}
    for i, r in enumerate(res):
        dts.setdefault(r["image_id"], []).append((i, r))
    checked = box_case = 0
    for (img, cat), ious in ev.ious.items():
        if len(ious) == 0:
            continue
        g = by_img[img]
        d = sorted(dts[img], key=lambda t: -t[1]["score"])  # pycocotools: stable sort by score
        pred = np.array([r["keypoints"] for _, r in d]).reshape(len(d), -1, 3)[:20]
        gkp = np.array([a["keypoints"] for a in g], float).reshape(len(g), -1, 3)
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in g])
        got = compute_oks(pred, gkp, [a["area"] for a in g], COCO17, gt_boxes=boxes)
        np.testing.assert_allclose(got, ious, rtol=0, atol=1e-12)
        checked += 1
        box_case += int((gkp[..., 2] == 0).all(axis=1).any())
    assert checked > 300 and box_case > 50  # ground truths without keypoints use the box distance


def test_oks_nms_removes_duplicate_keeps_distinct():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(100, 200, (17, 2)), np.ones((17, 1))], 1)
    dup = a.copy()
    dup[:, :2] += rng.normal(0, 1.0, (17, 2))  # same person, 1 px jitter
    other = a.copy()
    other[:, 0] += 300  # a different person
    kps = np.stack([dup, a, other])
    scores = np.array([0.7, 0.9, 0.8])
    areas = keypoint_areas(kps)
    keep = oks_nms(kps, scores, areas, thr=0.9, sigmas=COCO17)
    assert keep.tolist() == [1, 2]
    ovr = pairwise_oks(kps, areas, COCO17)
    assert ovr[0, 1] > 0.9 and ovr[1, 2] < 1e-6 and np.allclose(np.diag(ovr), 1)
    # vis_thr: only keypoints confident in both count; with none in common the OKS is 0 and both survive.
    kps2 = kps.copy()
    kps2[0, :, 2] = 0.0
    assert oks_nms(kps2, scores, areas, thr=0.9, sigmas=COCO17, vis_thr=0.2).tolist() == [1, 2, 0]
    assert oks_nms(np.zeros((0, 17, 3)), np.zeros(0), np.zeros(0), 0.9, COCO17).shape == (0,)


def test_soft_oks_nms_decays_scores_as_documented():
    rng = np.random.default_rng(1)
    base = np.concatenate([rng.uniform(100, 200, (17, 2)), np.ones((17, 1))], 1)
    b = base.copy()
    b[:, :2] += 8.0
    c = base.copy()
    c[:, 0] += 400
    kps = np.stack([base, b, c])
    scores = np.array([0.9, 0.85, 0.5])
    areas = keypoint_areas(kps)
    o = pairwise_oks(kps, areas, COCO17)
    thr = 0.3
    keep, new = soft_oks_nms(kps, scores, areas, thr, COCO17)
    decayed_b = 0.85 * math.exp(-o[0, 1] ** 2 / thr)
    assert 0.2 < o[0, 1] < 0.95 and decayed_b < 0.5  # b falls below c
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(new, [0.9, 0.5 * math.exp(-o[0, 2] ** 2 / thr),
                                     decayed_b * math.exp(-o[2, 1] ** 2 / thr)], rtol=1e-12)
    keep, new = soft_oks_nms(kps, scores, areas, thr, COCO17, method="linear")
    # linear: o(0, 1) >= thr so b is scaled by (1 - o); c (o ~ 0 < thr) keeps its score.
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(new, [0.9, 0.5, 0.85 * (1 - o[0, 1])], rtol=1e-12)
    keep, _ = soft_oks_nms(kps, scores, areas, thr, COCO17, max_dets=2)
    assert keep.tolist() == [0, 2]


# -------------------------------------------------------------------------------------------------- PCK
def test_pckh_constructed_case():
    gt = np.zeros((2, 3, 3))
    gt[..., 2] = 1
    head = head_sizes_from_boxes([[0, 0, 30, 40], [0, 0, 60, 80]])  # 0.6 * 50 = 30, 0.6 * 100 = 60
    np.testing.assert_allclose(head, [30, 60])
    pred = np.zeros((2, 3, 2))
    pred[0] = [[10, 0], [15, 0], [16, 0]]  # 1/3, 0.5, 0.533 of 30 -> correct, correct (<=), wrong
    pred[1] = [[0, 31], [0, 0], [40, 0]]  # 0.517, 0, 0.667 of 60 -> wrong, correct, wrong
    visible = np.array([[1, 1, 1], [1, 1, 0]], bool)
    r = pckh(pred, gt[..., :2], visible, head, thr=0.5)
    np.testing.assert_allclose(r.per_joint, [0.5, 1.0, 0.0])
    assert r.counts.tolist() == [2, 2, 1]
    assert r.mean == pytest.approx(3 / 5)
    r = pckh(pred, gt, None, head)  # visibility from gt's third column
    assert r.counts.tolist() == [2, 2, 2] and r.mean == pytest.approx(3 / 6)
    never = pckh(pred, gt[..., :2], np.zeros((2, 3), bool), head)
    assert np.isnan(never.per_joint).all() and math.isnan(never.mean)
    b = pck_bbox(pred, gt[..., :2], visible, [[0, 0, 100, 50], [0, 0, 200, 400]], thr=0.1)
    # norm = 100 and 400: distances 0.1, 0.15, 0.16 | 0.0775, 0, (invisible)
    np.testing.assert_allclose(b.per_joint, [1.0, 0.5, 0.0])
