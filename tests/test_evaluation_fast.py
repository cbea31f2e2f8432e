"""The fast keypoint evaluator gives pycocotools' stats (xtcocotools' for CrowdPose) to 1e-12 on varied sets.

The sets are built to reach every rule of the protocol: crowd regions (matched by any number of detections),
ground truths with ``num_keypoints == 0`` (ignored; OKS against their doubled box), every area range, images with
more than ``maxDets`` detections, tied scores and identical detections (tied OKS), false positives on images without
people, a ground truth with id 0 (pycocotools' ``dtm == 0`` quirk), results with a ``bbox`` (the detection area is
taken from it), image subsets, custom sigmas and ``use_area=False``.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from conftest import shared_path
from posekit.evaluation.coco import COCO_STAT_NAMES, CROWDPOSE_STAT_NAMES, _import_xtcocotools, \
    evaluate_coco_keypoints
from posekit.schema import COCO17, CROWDPOSE14

VAL = ("data", "annotations", "coco-val2017-538images-person_keypoints.json")


def _person(rng, k, x0, y0, w, h, labelled=0.8):
    kp = np.stack([x0 + rng.uniform(0, w, k), y0 + rng.uniform(0, h, k), np.full(k, 2.0)], 1)
    kp[rng.random(k) > labelled] = 0.0
    return kp


def varied_set(rng, k: int = 17, n_images: int = 60, crowd_index: bool = False) -> tuple[dict, list[dict]]:
    """Ground truth and results that exercise every matching rule (see the module docstring)."""
    images, anns, res = [], [], []
    aid = 1
    zero = None  # the first labelled person gets id 0 and a close detection (pycocotools' dtm == 0 quirk)
    for img in range(1, n_images + 1):
        im = {"id": img, "file_name": f"{img}.jpg", "width": 800, "height": 600}
        if crowd_index:
            im["crowdIndex"] = float(rng.choice([0.05, 0.5, 0.95]))
        images.append(im)
        people = []
        for _ in range(int(rng.integers(0, 9)) if img % 7 else 0):  # every 7th image has nobody
            w = float(rng.choice([rng.uniform(8, 30), rng.uniform(40, 90), rng.uniform(110, 400)]))
            h = w * rng.uniform(1.2, 2.5)
            x0, y0 = rng.uniform(0, 600), rng.uniform(0, 400)
            kind = rng.random()
            kp = _person(rng, k, x0, y0, w, h)
            a = {"id": aid, "image_id": img, "category_id": 1, "bbox": [x0, y0, w, h],
                 "area": float(w * h * rng.uniform(0.4, 0.7)), "iscrowd": 0}
            if kind < 0.1:  # a crowd region
                kp[:] = 0.0
                a["iscrowd"] = 1
            elif kind < 0.2:  # a person without labelled keypoints
                kp[:] = 0.0
            elif kind < 0.25:  # integer coordinates, as COCO files have them
                kp = np.round(kp)
            a["keypoints"] = kp.ravel().tolist()
            a["num_keypoints"] = int((kp[:, 2] > 0).sum())
            first = zero is None and a["num_keypoints"] > 0 and not a["iscrowd"]
            if first:
                zero = a
                a["id"] = 0
            anns.append(a)
            people.append((kp, x0, y0, w, h, first))
            aid += 1
        for kp, x0, y0, w, h, first in people:  # detections around each person, some duplicated
            for j in range(int(rng.integers(0, 4)) + first):
                pred = _person(rng, k, x0, y0, w, h, labelled=1.0)
                lab = kp[:, 2] > 0
                noise = 0.001 if first and j == 0 else rng.uniform(0.005, 0.1)
                pred[lab, :2] = kp[lab, :2] + rng.normal(0, noise * np.sqrt(w * h), (lab.sum(), 2))
                pred[:, 2] = rng.uniform(0, 1, k)
                if rng.random() < 0.05:
                    pred[:, 2] = 0.0  # no keypoint score > 0 (xtcocotools drops these)
                score = float(np.round(rng.uniform(0, 1), 1))  # tied scores
                res.append({"image_id": img, "category_id": 1, "keypoints": pred.ravel().tolist(), "score": score})
                if rng.random() < 0.15:
                    res.append(dict(res[-1]))  # an identical detection: tied OKS
        for _ in range(int(rng.integers(0, 4)) + (25 if img % 11 == 0 else 0)):  # false positives; > maxDets
            pred = _person(rng, k, rng.uniform(0, 700), rng.uniform(0, 500), 60, 120, labelled=1.0)
            pred[:, 2] = rng.uniform(0, 1, k)
            res.append({"image_id": img, "category_id": 1, "keypoints": pred.ravel().tolist(),
                        "score": float(np.round(rng.uniform(0, 1), 2))})
    schema = CROWDPOSE14 if k == 14 else COCO17
    cat = schema.to_coco_category(1) | {"keypoints": list(schema.keypoints)}
    return {"images": images, "annotations": anns, "categories": [cat]}, res


def _close(a, b):
    assert list(a) == list(b)
    for name in a:
        assert abs(a[name] - b[name]) <= 1e-12, (name, a[name], b[name])


def _pycocotools_direct(gt: dict, res: list[dict], sigmas, image_ids=None) -> dict:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(res))), iouType="keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, float)
        if image_ids is not None:
            ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(COCO_STAT_NAMES, ev.stats.tolist()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_varied_sets_match_pycocotools(seed):
    rng = np.random.default_rng(seed)
    gt, res = varied_set(rng)
    assert any(a["id"] == 0 for a in gt["annotations"]) and any(a["iscrowd"] for a in gt["annotations"])
    assert max(np.bincount([r["image_id"] for r in res])) > 20
    fast = evaluate_coco_keypoints(gt, res)
    assert fast.backend == "fast" and "Average Precision" in fast.log
    ref = evaluate_coco_keypoints(gt, res, backend="pycocotools")
    _close(fast, ref)
    _close(fast, _pycocotools_direct(gt, res, COCO17.sigmas_array))
    assert 0.05 < fast["AP"] < 0.95 and fast["APm"] != fast["APl"]
    # results with boxes (their area decides the medium/large ignores), a subset, wide sigmas, box areas
    boxed = [dict(r, bbox=[10.0, 10.0, float(rng.uniform(20, 150)), float(rng.uniform(20, 300))]) for r in res]
    _close(evaluate_coco_keypoints(gt, boxed), evaluate_coco_keypoints(gt, boxed, backend="pycocotools"))
    subset = sorted(rng.choice([im["id"] for im in gt["images"]], 25, replace=False).tolist())
    _close(evaluate_coco_keypoints(gt, res, image_ids=subset),
           evaluate_coco_keypoints(gt, res, image_ids=subset, backend="pycocotools"))
    wide = COCO17.sigmas_array * 2
    _close(evaluate_coco_keypoints(gt, res, sigmas=wide), evaluate_coco_keypoints(gt, res, sigmas=wide,
                                                                                   backend="pycocotools"))
    _close(evaluate_coco_keypoints(gt, res, use_area=False),
           evaluate_coco_keypoints(gt, res, use_area=False, backend="pycocotools"))


def test_real_val_set_matches_pycocotools():
    gt = json.loads(shared_path(*VAL).read_text())
    rng = np.random.default_rng(5)
    res = []
    for a in gt["annotations"]:
        if a["num_keypoints"] == 0 or rng.random() < 0.1:
            continue
        kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
        kp[:, :2] += rng.normal(0, rng.uniform(0.01, 0.1) * np.sqrt(a["area"]), (17, 2))
        kp[:, 2] = rng.uniform(0.1, 1, 17)
        res.append({"image_id": a["image_id"], "category_id": 1, "keypoints": kp.ravel().tolist(),
                    "score": float(rng.uniform(0, 1))})
    fast = evaluate_coco_keypoints(gt, res)
    _close(fast, evaluate_coco_keypoints(gt, res, backend="pycocotools"))
    assert 0.3 < fast["AP"] < 0.95


@pytest.mark.parametrize("use_area", [False, True])
def test_crowdpose_matches_xtcocotools(use_area, tmp_path):
    rng = np.random.default_rng(7 + use_area)
    gt, res = varied_set(rng, k=14, crowd_index=True)
    fast = evaluate_coco_keypoints(gt, res, dataset="crowdpose", use_area=use_area)
    ref = evaluate_coco_keypoints(gt, res, dataset="crowdpose", use_area=use_area, backend="xtcocotools")
    assert list(fast) == list(CROWDPOSE_STAT_NAMES) and fast.backend == "fast" and ref.backend == "xtcocotools"
    _close(fast, ref)
    assert 0.05 < fast["AP"] < 0.95 and len({fast["AP(E)"], fast["AP(M)"], fast["AP(H)"]}) == 3
    assert "type=  hard" in fast.log

    # xtcocotools itself, called the plain way (it reads crowdIndex from the file)
    COCO, COCOeval = _import_xtcocotools()
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(res))), iouType="keypoints_crowd",
                      sigmas=CROWDPOSE14.sigmas_array, use_area=use_area)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    _close(fast, dict(zip(CROWDPOSE_STAT_NAMES, ev.stats.tolist())))


def test_crowdpose_empty_split_and_subset():
    rng = np.random.default_rng(11)
    gt, res = varied_set(rng, k=14, n_images=30, crowd_index=True)
    for im in gt["images"]:
        im["crowdIndex"] = min(im["crowdIndex"], 0.5)  # nobody in the hard split: xtcocotools gives -1
    fast = evaluate_coco_keypoints(gt, res, dataset="crowdpose", use_area=False)
    _close(fast, evaluate_coco_keypoints(gt, res, dataset="crowdpose", use_area=False, backend="xtcocotools"))
    assert fast["AP(H)"] == -1.0
    ids = [im["id"] for im in gt["images"]][::2]
    _close(evaluate_coco_keypoints(gt, res, dataset="crowdpose", use_area=False, image_ids=ids),
           evaluate_coco_keypoints(gt, res, dataset="crowdpose", use_area=False, image_ids=ids,
                                   backend="xtcocotools"))


def test_input_outside_the_array_evaluator_goes_to_the_reference():
    rng = np.random.default_rng(4)
    gt, res = varied_set(rng, n_images=20)
    # a second category whose annotations have no keypoints: pycocotools takes it, the array evaluator does not
    gt["categories"].append({"id": 2, "name": "bag", "supercategory": "accessory"})
    gt["annotations"].append({"id": 99999, "image_id": 1, "category_id": 2, "bbox": [1, 2, 30, 40], "area": 900.0,
                              "iscrowd": 0, "num_keypoints": 0})
    st = evaluate_coco_keypoints(gt, res)
    assert st.backend == "pycocotools" and "evaluated by pycocotools" in st.log
    _close(st, _pycocotools_direct(gt, res, COCO17.sigmas_array))
    with pytest.raises(ValueError, match="backend must be one of 'fast', 'pycocotools', 'xtcocotools'"):
        evaluate_coco_keypoints(gt, res, backend="faster")
