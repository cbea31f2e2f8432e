"""Tests for posekit.data.transforms: flips, top-down crops, bottom-up affine, letterbox, colour jitter."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from posekit.data.geometry import apply_affine, box_xyxy_to_cs, points_inside
from posekit.data.transforms import (
    ColorJitter,
    Compose,
    Letterbox,
    RandomAffine,
    RandomBBoxTransform,
    RandomFlip,
    RandomHalfBody,
    TopDownAffine,
)
from posekit.schema import COCO17

FAST = settings(max_examples=40, deadline=None)
K = COCO17.num_keypoints


def make_sample(rng, W=320, H=240, N=3, dots=True, subpixel=True):
    """A bottom-up sample on a dark image with a bright dot (radius 3) drawn at every labelled keypoint."""
    kp = np.zeros((N, K, 3), np.float32)
    for n in range(N):
        c = rng.uniform([60, 50], [W - 60, H - 50])
        kp[n, :, :2] = c + rng.uniform(-45, 45, size=(K, 2))
    if not subpixel:
        kp[..., :2] = np.round(kp[..., :2])
    kp[..., 2] = rng.choice([0, 1, 2], size=(N, K), p=[0.15, 0.15, 0.7])
    kp[kp[..., 2] == 0, :2] = 0  # COCO stores unlabelled keypoints at (0, 0)
    img = np.full((H, W, 3), 10, np.uint8)
    if dots:
        for x, y in kp[kp[..., 2] > 0][:, :2]:
            cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), 3 * 16, (255, 255, 255), -1, cv2.LINE_AA, 4)
    lab = kp[..., 2] > 0
    lo = np.where(lab[..., None], kp[..., :2], np.inf).min(axis=1)
    hi = np.where(lab[..., None], kp[..., :2], -np.inf).max(axis=1)
    boxes = np.concatenate([lo, hi], axis=1).astype(np.float32)
    return {
        "image": img,
        "keypoints": kp,
        "boxes": boxes,
        "areas": np.prod(hi - lo, axis=1).astype(np.float32),
        "ann_ids": np.arange(N, dtype=np.int64),
        "image_id": 1,
        "image_path": "synthetic.jpg",
        "mask": np.ones((H, W), np.uint8),
        "warp": np.eye(2, 3),
    }


def to_top_down(sample, i=0):
    s = dict(sample)
    for key in ("keypoints", "boxes", "areas", "ann_ids"):
        s[key] = sample[key][i:i + 1].copy()
    del s["mask"]
    c, sc = box_xyxy_to_cs(s["boxes"][0], padding=1.25)
    s["center"], s["scale"] = c.astype(np.float32), sc.astype(np.float32)
    return s


def check_dots(out, orig_kp):
    """Every still-visible keypoint sits on its (bright) dot; others were labelled 0 only for leaving the image;
    keypoints equal the original ones mapped through ``warp``."""
    img = out["image"].max(axis=2)
    h, w = img.shape
    kp = out["keypoints"]
    vis = kp[..., 2] > 0
    pts = kp[vis][:, :2]
    assert np.all(points_inside(pts, (w, h)))
    ix = np.clip(np.floor(pts + 0.5).astype(int), 0, [w - 1, h - 1])
    pad = np.pad(img, 1)
    neigh = np.max([pad[ix[:, 1] + 1 + dy, ix[:, 0] + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    assert np.all(neigh > 100), f"dark pixel under keypoints: {pts[neigh <= 100]} values {neigh[neigh <= 100]}"
    if np.linalg.det(out["warp"][:, :2]) < 0:  # an odd number of flips: left/right swapped
        orig_kp = orig_kp[:, COCO17.flip_index]
    np.testing.assert_allclose(kp[..., :2], apply_affine(orig_kp[..., :2].astype(np.float64), out["warp"]), atol=2e-3)
    lost = (orig_kp[..., 2] > 0) & ~vis
    assert not np.any(points_inside(kp[lost][:, :2], (w, h)))
    return int(vis.sum())


# ------------------------------------------------------------------------------------------------- flip
@FAST
@given(seed=st.integers(0, 2**31 - 1), W=st.integers(130, 400), grid=st.booleans())
def test_double_flip_is_identity(seed, W, grid):
    rng = np.random.default_rng(seed)
    s = make_sample(rng, W=W, H=110, dots=True)
    s["mask"] = rng.integers(0, 2, size=s["mask"].shape, dtype=np.uint8)
    kp = rng.uniform(-0.5, W - 0.5, size=s["keypoints"].shape[:2] + (2,))
    s["keypoints"][..., :2] = np.round(kp * 64) / 64 if grid else kp
    if grid:
        s["boxes"] = np.round(s["boxes"] * 64) / 64
    flip = RandomFlip(COCO17, prob=1.0)
    once = flip(s, rng)
    twice = flip(once, rng)
    for key in ("image", "mask", "keypoints", "boxes"):
        if grid or key in ("image", "mask"):  # coordinates on a 1/64 grid flip back bit-exactly
            np.testing.assert_array_equal(twice[key], s[key])
        else:
            np.testing.assert_allclose(twice[key], s[key], atol=1e-4)
    np.testing.assert_allclose(twice["warp"], s["warp"], atol=0)
    # single flip: left/right swap and x' = W - 1 - x
    fi = COCO17.flip_index
    l_sh, r_sh = COCO17.index("left_shoulder"), COCO17.index("right_shoulder")
    assert fi[l_sh] == r_sh
    np.testing.assert_allclose(once["keypoints"][:, l_sh, 0], W - 1 - s["keypoints"][:, r_sh, 0], atol=1e-4)
    np.testing.assert_array_equal(once["keypoints"][:, l_sh, 2], s["keypoints"][:, r_sh, 2])
    np.testing.assert_array_equal(once["image"], s["image"][:, ::-1])
    np.testing.assert_allclose(once["boxes"][:, [0, 2]], W - 1 - s["boxes"][:, [2, 0]], atol=1e-4)


def test_flip_top_down_center_and_rotation():
    rng = np.random.default_rng(3)
    s = to_top_down(make_sample(rng))
    s["rotation"] = 25.0
    out = RandomFlip(COCO17, prob=1.0)(s, rng)
    assert out["center"][0] == pytest.approx(s["image"].shape[1] - 1 - s["center"][0])
    assert out["rotation"] == -25.0
    np.testing.assert_array_equal(out["scale"], s["scale"])
    # prob=0 never flips
    same = RandomFlip(COCO17, prob=0.0)(s, rng)
    np.testing.assert_array_equal(same["image"], s["image"])


# -------------------------------------------------------------------------- dots stay under keypoints
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), udp=st.booleans(), flip=st.booleans(), centre=st.booleans())
def test_dot_stays_under_keypoint_bottom_up(seed, udp, flip, centre):
    rng = np.random.default_rng(seed)
    s = make_sample(rng)
    steps = []
    if flip:
        steps.append(RandomFlip(COCO17, prob=1.0))
    order = rng.integers(3)
    ra = RandomAffine(scale_range=(0.8, 1.6), max_rotation=45, max_translate=0.2, output_size=(256, 224), udp=udp)
    lb = Letterbox((288, 256), center=centre, pad_value=0)
    steps += [[ra], [lb], [lb, ra]][order]
    out = Compose(steps)(s, rng)
    check_dots(out, s["keypoints"])
    assert out["image"].shape == (out["image"].shape[0], out["image"].shape[1], 3)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), udp=st.booleans())
def test_dot_stays_under_keypoint_top_down(seed, udp):
    rng = np.random.default_rng(seed)
    s = to_top_down(make_sample(rng), i=int(rng.integers(3)))
    pipe = Compose([
        RandomFlip(COCO17, prob=0.5),
        RandomHalfBody(COCO17, prob=0.5, min_keypoints=6),
        RandomBBoxTransform(shift_factor=0.16, scale_range=(0.75, 1.25), rot_factor=80, rot_prob=0.6),
        TopDownAffine((192, 256), udp=udp),
    ])
    out = pipe(s, rng)
    assert out["image"].shape == (256, 192, 3)
    check_dots(out, s["keypoints"])


def test_dot_checks_are_not_vacuous():
    """Over a fixed set of seeds most keypoints stay visible, and a wrong map (rotation sign) is caught."""
    total = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        s = make_sample(rng)
        total += check_dots(RandomAffine(output_size=(256, 224), max_rotation=30)(s, rng), s["keypoints"])
    assert total > 6 * 3 * K * 0.85 * 0.5
    rng = np.random.default_rng(0)
    s = make_sample(rng)
    out = RandomAffine(scale_range=(1, 1), max_rotation=0, max_translate=0, output_size=(320, 240))(s, rng)
    bad = dict(out)
    bad["image"] = np.ascontiguousarray(out["image"][::-1])  # image moved, keypoints not
    with pytest.raises(AssertionError):
        check_dots(bad, s["keypoints"])


def _blob_sample(x0, y0, W=200, H=160):
    yy, xx = np.mgrid[0:H, 0:W]
    g = 255 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 3.0**2))
    s = make_sample(np.random.default_rng(0), W=W, H=H, N=1, dots=False)
    s["image"] = np.repeat(np.rint(g).astype(np.uint8)[..., None], 3, axis=2)
    s["keypoints"][:] = 0
    s["keypoints"][0, 0] = [x0, y0, 2]
    return s


def _centroid_near(img, p, r=22):
    g = img[..., 0].astype(np.float64)
    x0, y0 = int(round(p[0])), int(round(p[1]))
    win = g[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
    yy, xx = np.mgrid[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
    return np.array([(win * xx).sum(), (win * yy).sum()]) / win.sum()


@pytest.mark.parametrize("name", ["flip", "affine", "affine_udp", "crop", "crop_udp", "letterbox", "letterbox_c"])
def test_subpixel_blob_centroid_follows_keypoint(name):
    """Sharper than the dot test: the centroid of a Gaussian blob follows its keypoint to 0.05 px (measured < 0.01)."""
    rng = np.random.default_rng(7)
    s = _blob_sample(93.3, 71.6)
    td = dict(s, keypoints=s["keypoints"], center=np.float32([100, 80]), scale=np.float32([90, 120]))
    td.pop("mask")
    td["rotation"] = 17.0
    t = {
        "flip": (RandomFlip(COCO17, prob=1.0), s),
        "affine": (RandomAffine((1.3, 1.3), 20, 0.05, (256, 192)), s),
        "affine_udp": (RandomAffine((1.3, 1.3), 20, 0.05, (256, 192), udp=True), s),
        "crop": (TopDownAffine((192, 256)), td),
        "crop_udp": (TopDownAffine((192, 256), udp=True), td),
        "letterbox": (Letterbox((160, 160)), s),
        "letterbox_c": (Letterbox((333, 320), center=True), s),
    }[name]
    out = t[0](t[1], rng)
    kp = out["keypoints"][0, 0]
    assert kp[2] == 2
    np.testing.assert_allclose(_centroid_near(out["image"], kp[:2]), kp[:2], atol=0.05)


# ------------------------------------------------------------------------------------------------- masks
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), udp=st.booleans())
def test_mask_moves_with_image(seed, udp):
    """Bright image pixels <=> mask 0 (an "ignore" region drawn in both), except on a 1-px band at its border;
    the area from outside the source image is dark in the image and 1 in the mask."""
    rng = np.random.default_rng(seed)
    s = make_sample(rng, dots=False)
    H, W = s["mask"].shape
    shape = np.zeros((H, W), np.uint8)
    cv2.ellipse(shape, (int(rng.integers(80, 240)), int(rng.integers(60, 180))), (50, 30), float(rng.uniform(0, 180)),
                0, 360, 1, -1)
    cv2.rectangle(shape, (10, 10), (60, 40), 1, -1)
    s["image"] = np.where(shape[..., None] > 0, 255, 0).astype(np.uint8).repeat(3, axis=2)
    s["mask"] = (1 - shape).astype(np.uint8)
    pipe = Compose([RandomFlip(COCO17), RandomAffine((0.7, 1.5), 40, 0.25, (256, 200), udp=udp),
                    Letterbox((300, 300), center=bool(rng.integers(2)), pad_value=0)])
    out = pipe(s, rng)
    bright = out["image"][..., 0] > 127
    ignore = out["mask"] == 0
    k = np.ones((3, 3), np.uint8)
    band = (cv2.dilate(ignore.astype(np.uint8), k) - cv2.erode(ignore.astype(np.uint8), k)) > 0
    assert ignore.sum() > 100
    assert not np.any((bright != ignore) & ~band)
    assert set(np.unique(out["mask"])) <= {0, 1}


# ---------------------------------------------------------------------------------------------- top-down
def test_half_body_box_of_upper_keypoints():
    rng = np.random.default_rng(5)
    s = to_top_down(make_sample(rng))
    s["keypoints"][..., 2] = 2
    hb = RandomHalfBody(COCO17, prob=1.0, min_keypoints=8, padding=1.5, upper_prob=1.0)
    out = hb(s, rng)
    up = s["keypoints"][0, list(COCO17.upper_body), :2]
    lo, hi = up.min(0), up.max(0)
    np.testing.assert_allclose(out["center"], (lo + hi) / 2, atol=1e-4)
    ar = s["scale"][0] / s["scale"][1]
    np.testing.assert_allclose(out["scale"][0] / out["scale"][1], ar, rtol=1e-5)
    assert np.all(out["scale"] >= (hi - lo) * 1.5 - 1e-3) and np.any(np.isclose(out["scale"], (hi - lo) * 1.5, rtol=1e-5))
    out_lo = RandomHalfBody(COCO17, prob=1.0, upper_prob=0.0)(s, rng)
    low = s["keypoints"][0, list(COCO17.lower_body), :2]
    np.testing.assert_allclose(out_lo["center"], (low.min(0) + low.max(0)) / 2, atol=1e-4)
    s2 = dict(s, keypoints=s["keypoints"].copy())
    s2["keypoints"][..., 2] = 0
    s2["keypoints"][0, :5, 2] = 2  # too few keypoints: unchanged
    np.testing.assert_array_equal(RandomHalfBody(COCO17, prob=1.0)(s2, rng)["center"], s["center"])


def test_bbox_transform_bounds_and_rates():
    rng = np.random.default_rng(11)
    s = to_top_down(make_sample(rng))
    t = RandomBBoxTransform(shift_factor=0.16, scale_range=(0.75, 1.25), rot_factor=80, rot_prob=0.6, shift_prob=0.3)
    rots, shifted, ratios = [], [], []
    for _ in range(600):
        o = t(s, rng)
        d = (o["center"] - s["center"]) / s["scale"]
        assert np.all(np.abs(d) <= 0.16 + 1e-6)
        shifted.append(np.any(np.abs(d) > 0))
        r = o["scale"] / s["scale"]
        assert 0.75 - 1e-6 <= r[0] <= 1.25 + 1e-6 and r[0] == pytest.approx(r[1], rel=1e-5)
        ratios.append(r[0])
        assert abs(o["rotation"]) <= 80
        rots.append(o["rotation"])
    assert abs(np.mean(np.array(rots) != 0) - 0.6) < 0.07
    assert abs(np.mean(shifted) - 0.3) < 0.07
    assert abs(np.mean(ratios) - 1.0) < 0.02 and np.std(ratios) > 0.08


def test_top_down_affine_visibility_rule_and_outputs():
    rng = np.random.default_rng(2)
    s = to_top_down(make_sample(rng))
    s["keypoints"][0, :, 2] = 2
    s["keypoints"][0, :, :2] = s["center"] + rng.uniform(-20, 20, size=(K, 2))  # inside the crop
    s["keypoints"][0, 0, :2] = s["center"] + [s["scale"][0], 0]  # well outside the crop
    out = TopDownAffine((192, 256))(s, rng)
    assert out["keypoints"][0, 0, 2] == 0 and out["keypoints"][0, 1:, 2].min() == 2
    kept = TopDownAffine((192, 256), keep_outside_visibility=True)(s, rng)
    assert kept["keypoints"][0, 0, 2] == 2
    np.testing.assert_array_equal(kept["keypoints"][..., :2], out["keypoints"][..., :2])
    assert out["scale"][0] / out["scale"][1] == pytest.approx(192 / 256)
    assert out["input_size"] == (192, 256)
    b = out["boxes"][0]
    assert 0 <= b[0] <= b[2] <= 191 and 0 <= b[1] <= b[3] <= 255
    with pytest.raises(KeyError, match="center"):
        TopDownAffine((192, 256))(make_sample(rng), rng)


# ------------------------------------------------------------------------------------------------ colour
def test_color_jitter_identity_and_ranges():
    rng = np.random.default_rng(4)
    s = make_sample(rng)
    del s["mask"]
    s["image"] = rng.integers(0, 256, size=s["image"].shape, dtype=np.uint8)
    for cj in (ColorJitter(), ColorJitter(0.0, 0.0, 0.0, 0.0)):
        out = cj(s, rng)
        np.testing.assert_array_equal(out["image"], s["image"])
    strong = ColorJitter(0.4, 0.4, 0.4, 0.1)
    out = strong(s, rng)
    assert out["image"].shape == s["image"].shape and out["image"].dtype == np.uint8
    assert not np.array_equal(out["image"], s["image"])
    np.testing.assert_array_equal(out["keypoints"], s["keypoints"])
    # brightness alone scales the image by a factor in [0.6, 1.4]
    img = np.full((20, 30, 3), 100, np.uint8)
    for _ in range(20):
        v = ColorJitter(brightness=0.4)(dict(s, image=img), rng)["image"]
        assert np.all(v == v[0, 0, 0]) and 60 <= v[0, 0, 0] <= 140
    # saturation/hue leave grey pixels grey; hue turns a pure colour
    grey = np.full((4, 4, 3), 128, np.uint8)
    g = ColorJitter(saturation=0.5, hue=0.5)(dict(s, image=grey), rng)["image"]
    assert np.abs(g.astype(int) - 128).max() <= 1
    blue = np.zeros((4, 4, 3), np.uint8)
    blue[..., 0] = 200
    turned = ColorJitter(hue=0.5)(dict(s, image=blue), np.random.default_rng(0))["image"]
    assert not np.array_equal(turned, blue) and turned.max() == 200


def test_bad_samples_raise_clear_errors():
    rng = np.random.default_rng(0)
    s = make_sample(rng)
    with pytest.raises(ValueError, match="keypoints"):
        RandomAffine()(dict(s, keypoints=np.zeros((3, 17))), rng)
    with pytest.raises(ValueError, match="image"):
        Letterbox((64, 64))(dict(s, image=s["image"].astype(np.float32)), rng)
    with pytest.raises(ValueError, match="mask"):
        RandomFlip(COCO17)(dict(s, mask=np.ones((5, 5), np.uint8)), rng)
    with pytest.raises(ValueError, match="K=5"):
        RandomFlip(COCO17, prob=1.0)(dict(s, keypoints=np.zeros((3, 5, 3), np.float32)), rng)


def test_empty_sample_passes_every_transform():
    rng = np.random.default_rng(0)
    s = make_sample(rng, N=1)
    for key in ("keypoints", "boxes", "areas", "ann_ids"):
        s[key] = s[key][:0]
    pipe = Compose([RandomFlip(COCO17, prob=1.0), RandomAffine(output_size=(128, 96)), Letterbox((64, 64)),
                    ColorJitter(0.2, 0.2, 0.2, 0.05)])
    out = pipe(s, rng)
    assert out["keypoints"].shape == (0, K, 3) and out["boxes"].shape == (0, 4)
    assert out["image"].shape == (64, 64, 3) and out["mask"].shape == (64, 64)
