"""The data-pipeline speed-ups give the same samples as the straightforward code (bench/data_pipeline.py times
them): one-pass NCHW normalisation, HSV jitter by look-up tables, the top-down flip fused into the crop warp, and
JPEG reduced decoding for RTMO's mosaic."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from posekit.data.batch import images_to_nchw
from posekit.data.coco import CocoPoseDataset
from posekit.data.transforms import (Compose, HSVRandomAug, RandomAffine, RandomBBoxTransform, RandomFlip,
                                     TopDownAffine)
from posekit.schema import COCO17

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def test_images_to_nchw_is_exactly_the_naive_normalisation():
    imgs = np.random.default_rng(0).integers(0, 256, (3, 20, 12, 3), dtype=np.uint8)
    for rgb in (True, False):
        src = imgs.astype(np.float32)[..., ::-1] if rgb else imgs.astype(np.float32)
        ref = np.ascontiguousarray(((src - MEAN) / STD).transpose(0, 3, 1, 2))
        assert np.array_equal(images_to_nchw(list(imgs), MEAN, STD, rgb), ref)
    with pytest.raises(ValueError, match="B x H x W x 3"):
        images_to_nchw(np.zeros((2, 4, 4), np.uint8), MEAN, STD)


def test_hsv_lookup_tables_equal_the_int16_arithmetic():
    img = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    for seed in range(30):
        out = HSVRandomAug()({"image": img, "warp": np.eye(2, 3)}, np.random.default_rng(seed))["image"]
        rng = np.random.default_rng(seed)
        g = (rng.uniform(-1, 1, 3) * np.array([5, 30, 30.0]) * rng.integers(0, 2, 3)).astype(np.int16)
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + g[0]) % 180
        hsv[..., 1:] = np.clip(hsv[..., 1:] + g[1:], 0, 255)
        ref = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR) if g.any() else img
        assert np.array_equal(out, ref), seed


def _mini(shared, mode):
    mini = shared("data", "coco-mini-train")
    return CocoPoseDataset(mini / "person_keypoints.json", mini / "images", mode=mode)


def test_fused_flip_crop_matches_flip_then_crop(shared):
    ds = _mini(shared, "topdown")
    worst = []
    for i in range(0, len(ds), 9):
        s = ds.load_sample(i)
        for udp in (False, True):
            eager = Compose([RandomFlip(COCO17, 1.0), RandomBBoxTransform(), TopDownAffine((192, 256), udp=udp)])
            fused = Compose([RandomFlip(COCO17, 1.0, defer_image=True), RandomBBoxTransform(),
                             TopDownAffine((192, 256), udp=udp)])
            a, b = eager(s, np.random.default_rng(i)), fused(s, np.random.default_rng(i))
            assert np.array_equal(a["keypoints"], b["keypoints"]) and np.allclose(a["warp"], b["warp"])
            assert "flip_pending" not in b
            worst.append(np.abs(a["image"].astype(int) - b["image"].astype(int)).max())
    assert max(worst) <= 1  # the same sampling points; OpenCV's fixed-point rounding may differ by 1
    # two deferred flips cancel; a pixel-reading transform refuses a pending flip
    s = ds.load_sample(0)
    twice = Compose([RandomFlip(COCO17, 1.0, defer_image=True), RandomFlip(COCO17, 1.0, defer_image=True)])(s)
    assert not twice["flip_pending"]
    with pytest.raises(ValueError, match="deferred flip"):
        HSVRandomAug()(RandomFlip(COCO17, 1.0, defer_image=True)(s), np.random.default_rng(0))
    # bottom-up: the fused flip also feeds RandomAffine
    b = _mini(shared, "bottomup").load_sample(1)
    aff = RandomAffine((1.0, 1.0), 0.0, 0.0, (256, 256))
    e = aff(RandomFlip(COCO17, 1.0)(b), np.random.default_rng(0))
    f = aff(RandomFlip(COCO17, 1.0, defer_image=True)(b), np.random.default_rng(0))
    assert np.abs(e["image"].astype(int) - f["image"].astype(int)).max() <= 1


def test_reduced_decode_moves_the_annotations_with_the_pixels(shared):
    ds = _mini(shared, "bottomup")
    for i in range(3):
        full, half = ds.load_sample(i), ds.load_sample(i, reduce=2, with_mask=False)
        H, W = full["image"].shape[:2]
        h, w = half["image"].shape[:2]
        assert (h, w) == ((H + 1) // 2, (W + 1) // 2) and "mask" not in half
        area = cv2.resize(full["image"], (w, h), interpolation=cv2.INTER_AREA).astype(int)
        got = half["image"].astype(int)
        aligned = np.abs(area - got).mean()  # JPEG DCT scaling ~ a 2x2 box filter: close to INTER_AREA ...
        shifted = np.abs(area[:, 1:] - got[:, :-1]).mean()  # ... and much closer than one pixel off
        assert aligned < 5.0 and aligned < 0.6 * shifted, (aligned, shifted)
        sx, sy = w / W, h / H
        assert np.allclose(half["keypoints"][..., 0], (full["keypoints"][..., 0] + 0.5) * sx - 0.5)
        assert np.allclose(half["keypoints"][..., 1], (full["keypoints"][..., 1] + 0.5) * sy - 0.5)
        assert np.allclose(half["areas"], full["areas"] * sx * sy)
        assert np.allclose(half["warp"], [[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])
