"""COCO keypoint loading/validation, datasets and image I/O (posekit.data.coco, posekit.data.io)."""

from __future__ import annotations

import copy
import json
import math
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from conftest import shared_path
from posekit.data import io as pio
from posekit.data.coco import (
    AnnotationError,
    AnnotationIssue,
    AnnotationWarning,
    CocoPoseDataset,
    load_coco_keypoints,
    segmentation_to_mask,
)
from posekit.data.io import ImageReadError, is_truncated, read_image, write_image
from posekit.schema import COCO17

# pycocotools' mask.decode (used here as the independent reference) warns under numpy 2
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::posekit.data.coco.AnnotationWarning"),  # checked in one test below
]


def _mini():
    return shared_path("data", "coco-mini-train", "person_keypoints.json"), shared_path("data", "coco-mini-train", "images")


def _mmpose():
    return shared_path("data", "mmpose-coco", "person_keypoints.json"), shared_path("data", "mmpose-coco", "images")


def _write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def _decode(seg, h, w) -> np.ndarray:
    """Independent rasterisation with pycocotools (polygons merged, RLE compressed or not)."""
    if isinstance(seg, dict):
        rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
        return mask_utils.decode(rle)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, h, w)))


# ------------------------------------------------------------------------------------------ real shared files
def test_coco_mini_train_counts_and_samples():
    ann_file, image_dir = _mini()
    raw = json.loads(ann_file.read_text())
    idx = load_coco_keypoints(ann_file, image_dir)
    assert idx.schema is COCO17
    assert idx.issues == [] and idx.num_skipped == 0
    assert idx.num_images == 28 and idx.num_loaded == 147
    anns = [a for i in idx.image_ids for a in idx.annotations(i)]
    assert sum(a["iscrowd"] for a in anns) == 5
    assert sum(a["num_keypoints"] > 0 for a in anns) == 86
    assert idx.report().endswith("loaded 147 annotations on 28 images, skipped 0")

    td = CocoPoseDataset(ann_file, image_dir, mode="topdown")
    bu = CocoPoseDataset(ann_file, image_dir, mode="bottomup")
    assert len(td) == 86
    assert len(bu) == len({a["image_id"] for a in raw["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]}) == 28
    assert len(CocoPoseDataset(ann_file, image_dir, min_keypoints=10)) == sum(
        a["num_keypoints"] >= 10 and not a["iscrowd"] for a in raw["annotations"])

    # a top-down sample matches its raw annotation exactly
    by_id = {a["id"]: a for a in raw["annotations"]}
    s = td[5]
    a = by_id[int(s["ann_ids"][0])]
    assert s["image_id"] == a["image_id"] and Path(s["image_path"]).is_file()
    np.testing.assert_array_equal(s["keypoints"][0], np.asarray(a["keypoints"], np.float32).reshape(17, 3))
    x, y, w, h = a["bbox"]
    np.testing.assert_allclose(s["boxes"][0], [x, y, x + w, y + h], rtol=1e-6)
    np.testing.assert_allclose(s["center"], [x + w / 2, y + h / 2], rtol=1e-5)
    np.testing.assert_allclose(s["scale"], [w * 1.25, h * 1.25], rtol=1e-5)
    assert s["areas"][0] == pytest.approx(a["area"], rel=1e-6)
    np.testing.assert_array_equal(s["warp"], np.eye(2, 3))
    assert "mask" not in s and s["image"].dtype == np.uint8 and s["image"].shape[2] == 3

    # aspect ratio enlarges the short side only
    s2 = CocoPoseDataset(ann_file, image_dir, aspect_ratio=1.0)[5]
    assert s2["scale"][0] == pytest.approx(s2["scale"][1]) == pytest.approx(max(w, h) * 1.25, rel=1e-5)


def test_bottomup_masks_zero_exactly_over_crowd_and_unannotated_people():
    ann_file, image_dir = _mini()
    raw = json.loads(ann_file.read_text())
    imgs = {i["id"]: i for i in raw["images"]}
    bu = CocoPoseDataset(ann_file, image_dir, mode="bottomup")
    crowd_px = 0
    zero_px = 0
    for i in range(len(bu)):
        s = bu[i]
        info = imgs[s["image_id"]]
        h, w = info["height"], info["width"]
        anns = [a for a in raw["annotations"] if a["image_id"] == s["image_id"]]
        crowd = np.zeros((h, w), bool)
        for a in anns:
            if a["iscrowd"]:
                assert isinstance(a["segmentation"]["counts"], list)  # uncompressed RLE in this file
                crowd |= _decode(a["segmentation"], h, w) > 0
        unlabelled = np.zeros((h, w), bool)
        for a in anns:
            if not a["iscrowd"] and a["num_keypoints"] == 0:
                unlabelled |= _decode(a["segmentation"], h, w) > 0
        assert s["mask"].shape == (h, w) and s["mask"].dtype == np.uint8
        assert set(np.unique(s["mask"])) <= {0, 1}
        np.testing.assert_array_equal(s["mask"] == 0, crowd | unlabelled)
        # the instances are exactly the non-crowd people with keypoints
        assert sorted(s["ann_ids"].tolist()) == sorted(
            a["id"] for a in anns if not a["iscrowd"] and a["num_keypoints"] > 0)
        assert s["keypoints"].shape == (len(s["ann_ids"]), 17, 3) and s["boxes"].shape == (len(s["ann_ids"]), 4)
        crowd_px += int(crowd.sum())
        zero_px += int((s["mask"] == 0).sum())
    # 5 crowd regions, none overlapping: their RLE areas add up (COCO's 'area' field for crowds differs)
    rle_area = sum(int(mask_utils.area(mask_utils.frPyObjects(a["segmentation"], *a["segmentation"]["size"])))
                   for a in raw["annotations"] if a["iscrowd"])
    assert crowd_px == rle_area == 141365
    assert zero_px == 166855  # measured: crowd regions + 56 people without keypoints


def test_mmpose_coco_and_val538_load_as_they_are():
    ann_file, image_dir = _mmpose()
    idx = load_coco_keypoints(ann_file, image_dir)
    assert (idx.num_images, idx.num_loaded, len(idx.issues)) == (4, 14, 0)
    assert len(CocoPoseDataset(ann_file, image_dir)) == 12
    assert len(CocoPoseDataset(ann_file, image_dir, mode="bottomup")) == 4
    assert len(CocoPoseDataset(ann_file, image_dir, min_keypoints=0)) == 14

    val = load_coco_keypoints(shared_path("data", "annotations", "coco-val2017-538images-person_keypoints.json"),
                              image_dir=None, check_files=False)
    anns = [a for i in val.image_ids for a in val.annotations(i)]
    assert (val.num_images, val.num_loaded, len(val.issues)) == (538, 2213, 0)
    assert sum(a["num_keypoints"] > 0 for a in anns) == 1354
    assert sum(a["iscrowd"] for a in anns) == 49
    assert len(val.coco.getAnnIds()) == 2213  # the pycocotools index holds the cleaned records
    with pytest.raises(ValueError, match="without image_dir"):
        val.image_path(val.image_ids[0])


# ------------------------------------------------------------------------------------------ validation
@pytest.fixture
def mm_raw():
    ann_file, _ = _mmpose()
    return json.loads(ann_file.read_text())


def _first_person(raw):
    return next(a for a in raw["annotations"] if a["num_keypoints"] > 0)


@pytest.mark.parametrize(
    "mutate, field, words",
    [
        (lambda a: a.update(keypoints=a["keypoints"][:48]), "keypoints", "expected 51 values (17 keypoints x 3), got 48"),
        (lambda a: a["keypoints"].__setitem__(9, math.nan), "keypoints", "NaN"),
        (lambda a: a["keypoints"].__setitem__(5, 3), "keypoints", "bad visibility flag 3"),
        (lambda a: a.pop("keypoints"), "keypoints", "missing 'keypoints'"),
        (lambda a: a["bbox"].__setitem__(1, math.inf), "bbox", "NaN/inf"),
        (lambda a: a["bbox"].__setitem__(2, -4.0), "bbox", "non-positive"),
        (lambda a: a["bbox"].__setitem__(3, 0.0), "bbox", "non-positive"),
        (lambda a: a.update(image_id=999999), "image_id", "unknown image id 999999"),
        (lambda a: a.update(segmentation=[[1.0, 2.0, 3.0, 4.0, 5.0]]), "segmentation", "odd number"),
        (lambda a: a.update(segmentation={"size": [10, 10], "counts": [100]}), "segmentation", "does not match"),
        (lambda a: a.update(segmentation="abc"), "segmentation", "polygon list or an RLE"),
        (lambda a: a.update(iscrowd=2), "iscrowd", "0 or 1"),
        (lambda a: a.update(area=math.nan), "area", "finite"),
    ],
)
def test_each_kind_of_bad_annotation_is_one_named_issue(tmp_path, mm_raw, mutate, field, words):
    a = _first_person(mm_raw)
    mutate(a)
    f = _write_json(tmp_path / "bad.json", mm_raw)
    idx = load_coco_keypoints(f)
    assert len(idx.issues) == 1
    issue = idx.issues[0]
    assert isinstance(issue, AnnotationIssue)
    assert (issue.file, issue.ann_id, issue.field) == (str(f), a["id"], field)
    assert words in issue.message
    assert idx.num_loaded == 13 and idx.num_skipped == 1
    assert a["id"] not in idx.coco.anns
    text = str(issue)
    assert str(f) in text and f"ann {a['id']}" in text and f"field '{field}'" in text

    with pytest.raises(AnnotationError) as e:
        load_coco_keypoints(f, strict=True)
    assert isinstance(e.value, ValueError)
    assert str(f) in str(e.value) and f"ann {a['id']}" in str(e.value) and f"'{field}'" in str(e.value)


def test_sixteen_keypoints_in_coco17_file(tmp_path, mm_raw):
    a = _first_person(mm_raw)
    a["keypoints"] = a["keypoints"][:48]
    a["num_keypoints"] = sum(v > 0 for v in a["keypoints"][2::3])
    f = _write_json(tmp_path / "sixteen.json", mm_raw)
    idx = load_coco_keypoints(f)
    (issue,) = idx.issues
    assert issue.field == "keypoints" and issue.ann_id == a["id"] and issue.image_id == a["image_id"]
    assert "(16 keypoints)" in issue.message and issue.file == str(f)


def test_one_bad_in_hundred_loads_99_and_reports_1(tmp_path):
    raw = json.loads(shared_path("data", "annotations", "coco-val2017-538images-person_keypoints.json").read_text())
    anns = [a for a in raw["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0][:100]
    img_ids = {a["image_id"] for a in anns}
    data = {"images": [i for i in raw["images"] if i["id"] in img_ids], "annotations": copy.deepcopy(anns),
            "categories": raw["categories"]}
    bad = data["annotations"][37]
    bad["keypoints"] = bad["keypoints"][:48]
    f = _write_json(tmp_path / "hundred.json", data)
    with pytest.warns(AnnotationWarning, match=r"hundred\.json: skipped 1 annotations and 0 images"):
        idx = load_coco_keypoints(f, check_files=False)
    assert idx.num_loaded == 99 and idx.num_skipped == 1 and len(idx.issues) == 1
    rep = idx.report()
    assert "loaded 99 annotations" in rep and "skipped 1" in rep
    assert f"ann {bad['id']} (image {bad['image_id']}) field 'keypoints': expected 51 values (17 keypoints x 3), got 48" in rep
    with pytest.raises(AnnotationError, match=f"ann {bad['id']}"):
        load_coco_keypoints(f, strict=True, check_files=False)


def test_malformed_top_level_json_names_the_file(tmp_path):
    f = _write_json(tmp_path / "list.json", [1, 2])
    with pytest.raises(ValueError, match="list.json.*got a list"):
        load_coco_keypoints(f)
    f = _write_json(tmp_path / "noann.json", {"images": []})
    with pytest.raises(ValueError, match="noann.json.*'annotations'"):
        load_coco_keypoints(f)
    f = tmp_path / "broken.json"
    f.write_text('{"images": [')
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        load_coco_keypoints(f)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        load_coco_keypoints(tmp_path / "nothere.json")
    f = _write_json(tmp_path / "nocat.json", {"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}]})
    with pytest.raises(ValueError, match="nocat.json.*no category with a 'keypoints'"):
        load_coco_keypoints(f)
    assert load_coco_keypoints(f, schema="coco17").num_loaded == 0  # fine once the schema is given


def test_bad_image_record_skips_its_annotations(tmp_path, mm_raw):
    mm_raw["images"][1]["width"] = -3
    iid = mm_raw["images"][1]["id"]
    n_on = sum(a["image_id"] == iid for a in mm_raw["annotations"])
    f = _write_json(tmp_path / "img.json", mm_raw)
    idx = load_coco_keypoints(f)
    assert [(i.ann_id, i.image_id, i.field) for i in idx.issues] == [(None, iid, "width")]
    assert idx.num_images == 3 and idx.num_skipped == n_on and idx.num_loaded == 14 - n_on


# ------------------------------------------------------------------------------------------ files and datasets
def _dataset_copy(tmp_path, drop=None, truncate=None):
    """The mmpose-coco set with its images linked (or cut in half) into tmp_path/images."""
    ann_file, image_dir = _mmpose()
    out = tmp_path / "images"
    out.mkdir()
    for p in sorted(image_dir.glob("*.jpg")):
        if p.name == drop:
            continue
        if p.name == truncate:
            b = p.read_bytes()
            (out / p.name).write_bytes(b[: len(b) // 2])
        else:
            os.symlink(p, out / p.name)
    return ann_file, out


def test_missing_image_file_is_named(tmp_path):
    name = "000000040083.jpg"
    ann_file, images = _dataset_copy(tmp_path, drop=name)
    idx = load_coco_keypoints(ann_file, images)
    (issue,) = idx.issues
    assert issue.field == "file_name" and str(images / name) in issue.message and issue.image_id == 40083
    assert idx.num_images == 3 and idx.num_skipped_images == 1
    with pytest.raises(AnnotationError, match=re.escape(str(images / name))):
        CocoPoseDataset(ann_file, images, strict=True)
    # without the file check the read fails, naming the path
    ds = CocoPoseDataset(ann_file, images, mode="bottomup", check_files=False)
    i = next(k for k in range(len(ds)) if ds.image_id_of(k) == 40083)
    with pytest.raises(ImageReadError, match=re.escape(str(images / name)) + ".*file not found"):
        ds[i]


def test_truncated_jpg(tmp_path):
    name = "000000196141.jpg"
    ann_file, images = _dataset_copy(tmp_path, truncate=name)
    path = images / name
    assert cv2.imread(str(path)) is not None  # OpenCV alone decodes it (grey bottom)
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    assert e.value.reason.startswith("truncated") and e.value.path == str(path)
    assert str(path) in str(e.value) and isinstance(e.value, ValueError)
    ds = CocoPoseDataset(ann_file, images, mode="bottomup")
    i = next(k for k in range(len(ds)) if ds.image_id_of(k) == 196141)
    with pytest.raises(ImageReadError, match=re.escape(str(path))):
        ds[i]
    # every real jpg passes, and each cut (middle, last 2 bytes, inside the header) is caught
    for p in list(_mini()[1].glob("*.jpg")) + list(_mmpose()[1].glob("*.jpg")):
        b = p.read_bytes()
        assert not is_truncated(b)
        assert all(is_truncated(b[:cut]) for cut in (len(b) // 2, len(b) - 2, 300))


def test_read_image_errors_and_channels(tmp_path):
    with pytest.raises(ImageReadError, match="nope.jpg.*file not found"):
        read_image(tmp_path / "nope.jpg")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image" * 10)
    with pytest.raises(ImageReadError, match="junk.jpg.*not a decodable"):
        read_image(junk)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "empty.png")
    png = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
    (tmp_path / "cut.png").write_bytes(png[:-12])
    with pytest.raises(ImageReadError) as e:
        read_image(tmp_path / "cut.png")
    assert e.value.reason.startswith("truncated")

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    write_image(tmp_path / "grey.png", grey)
    g = read_image(tmp_path / "grey.png")
    assert g.shape == (7, 9, 3) and all(np.array_equal(g[..., c], grey) for c in range(3))
    bgra = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    write_image(tmp_path / "alpha.png", bgra)
    np.testing.assert_array_equal(read_image(tmp_path / "alpha.png"), bgra[..., :3])
    deep = (rng.integers(0, 256, (3, 4, 3)) * 257).astype(np.uint16)
    write_image(tmp_path / "deep.png", deep)
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png"), (deep // 257).astype(np.uint8))


def test_non_ascii_paths_round_trip(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (11, 13, 3), dtype=np.uint8)
    p = tmp_path / "фото ü 照片" / "deep" / "bild é.png"
    assert write_image(p, img) == p
    np.testing.assert_array_equal(read_image(p), img)
    smooth = np.dstack([*np.meshgrid(np.arange(32) * 4, np.arange(24) * 5), np.full((24, 32), 99)]).astype(np.uint8)
    jpg = write_image(p.with_suffix(".JPG"), smooth, quality=100)
    assert np.abs(read_image(jpg).astype(int) - smooth).max() <= 3
    # a whole dataset under a non-ASCII folder
    ann_file, image_dir = _mmpose()
    d = tmp_path / "données"
    d.mkdir()
    for q in image_dir.glob("*.jpg"):
        os.symlink(q, d / q.name)
    s = CocoPoseDataset(ann_file, d, mode="bottomup")[0]
    assert "données" in s["image_path"] and s["image"].shape == (425, 640, 3)


def test_write_image_is_atomic(tmp_path, monkeypatch):
    p = tmp_path / "out" / "img.png"
    first = np.full((6, 6, 3), 7, np.uint8)
    write_image(p, first)
    assert oct(p.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(pio.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        write_image(p, np.zeros((6, 6, 3), np.uint8))
    monkeypatch.undo()
    assert sorted(x.name for x in p.parent.iterdir()) == ["img.png"]  # no temp file left
    np.testing.assert_array_equal(read_image(p), first)  # the old file is untouched

    with pytest.raises(ValueError, match=r"img\.gif.*unknown extension"):
        write_image(tmp_path / "new" / "img.gif", first)
    with pytest.raises(ValueError, match="float64"):
        write_image(tmp_path / "new" / "img.png", first.astype(float))
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


def test_compressed_rle_crowd_and_unlabelled_person_mask(tmp_path):
    """A self-made file: compressed-RLE crowd region + a polygon person without keypoints + one labelled person."""
    h, w = 40, 60
    write_image(tmp_path / "im" / "a.png", np.full((h, w, 3), 50, np.uint8))
    crowd = np.zeros((h, w), np.uint8, order="F")
    crowd[5:15, 40:55] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    rle["counts"] = rle["counts"].decode()
    kps = np.zeros((17, 3))
    kps[0] = [10, 10, 2]
    kps[5] = [12, 20, 1]
    poly = [[2.0, 25.0, 20.0, 25.0, 20.0, 38.0, 2.0, 38.0]]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": w, "height": h}],
        "categories": [COCO17.to_coco_category(1)],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [5, 5, 10, 20],
             "keypoints": kps.reshape(-1).tolist(), "num_keypoints": 2, "area": 200.0},
            {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [40, 5, 15, 10],
             "segmentation": rle, "area": 150.0, "num_keypoints": 0},
            {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [2, 25, 18, 13],
             "segmentation": poly, "keypoints": [0] * 51, "num_keypoints": 0, "area": 234.0},
        ],
    }
    f = _write_json(tmp_path / "tiny.json", data)
    s = CocoPoseDataset(f, tmp_path / "im", mode="bottomup")[0]
    expected = (crowd > 0) | (_decode(poly, h, w) > 0)
    np.testing.assert_array_equal(s["mask"] == 0, expected)
    assert (s["mask"] == 0).sum() == 150 + expected[25:, :21].sum() and expected[25:, :21].sum() > 0
    assert s["ann_ids"].tolist() == [1]
    np.testing.assert_array_equal(s["keypoints"][0], kps.astype(np.float32))
    np.testing.assert_array_equal(segmentation_to_mask([], h, w, bbox=[1, 2, 3, 4]).sum(), 12)
    # top-down with crowd regions included (they need min_keypoints=0)
    assert len(CocoPoseDataset(f, tmp_path / "im")) == 1
    assert len(CocoPoseDataset(f, tmp_path / "im", min_keypoints=0)) == 2
    assert len(CocoPoseDataset(f, tmp_path / "im", min_keypoints=0, include_crowd=True)) == 3
    # a damaged compressed RLE is an issue, not a crash later
    bad = copy.deepcopy(data)
    bad["annotations"][1]["segmentation"]["counts"] = rle["counts"][:-2]
    idx = load_coco_keypoints(_write_json(tmp_path / "bad_rle.json", bad))
    assert [(i.ann_id, i.field) for i in idx.issues] == [(2, "segmentation")]
    assert "compressed RLE" in idx.issues[0].message
    # the image on disk must match the json size
    data["images"][0]["width"] = 61
    data["annotations"] = data["annotations"][:1]
    f2 = _write_json(tmp_path / "wrong_size.json", data)
    with pytest.raises(ValueError, match=r"a\.png is 60x40 but .*wrong_size\.json says 61x40"):
        CocoPoseDataset(f2, tmp_path / "im")[0]


def test_transform_rng_is_reproducible_per_seed_epoch_index():
    ann_file, image_dir = _mmpose()
    seen = []

    def transform(sample, rng):
        sample = dict(sample)
        sample["draw"] = float(rng.random())
        sample["keypoints"] = sample["keypoints"] + 1.0
        seen.append(sample["image_id"])
        return sample

    ds = CocoPoseDataset(ann_file, image_dir, transform=transform, seed=3)
    a0, a0b, a1 = ds[0]["draw"], ds[0]["draw"], ds[1]["draw"]
    assert a0 == a0b and a0 != a1
    ds.set_epoch(1)
    assert ds[0]["draw"] != a0
    ds.set_epoch(0)
    assert ds[0]["draw"] == a0
    assert CocoPoseDataset(ann_file, image_dir, transform=transform, seed=4)[0]["draw"] != a0
    raw = ds.load_sample(0)
    np.testing.assert_array_equal(ds[0]["keypoints"], raw["keypoints"] + 1.0)
    assert ds[-1]["image_id"] == ds.image_id_of(len(ds) - 1)
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]

    import torch.utils.data

    # a plain map-style dataset: DataLoader, Subset and ConcatDataset take it as they take a torch Dataset
    loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False)
    assert [int(s["ann_ids"][0]) for s in loader] == [int(ds[i]["ann_ids"][0]) for i in range(len(ds))]
    both = torch.utils.data.ConcatDataset([ds, torch.utils.data.Subset(ds, [1, 0])])
    assert len(both) == len(ds) + 2 and int(both[len(ds)]["ann_ids"][0]) == int(ds[1]["ann_ids"][0])


def test_bad_constructor_arguments_are_named():
    ann_file, image_dir = _mmpose()
    with pytest.raises(ValueError, match="mode"):
        CocoPoseDataset(ann_file, image_dir, mode="sideways")
    with pytest.raises(ValueError, match="min_keypoints"):
        CocoPoseDataset(ann_file, image_dir, min_keypoints=-1)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        CocoPoseDataset(ann_file, image_dir / "nope")
    with pytest.raises(ValueError, match="schema 'mpii16' has 16"):
        load_coco_keypoints(ann_file, schema="mpii16")
