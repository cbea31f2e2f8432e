"""Gaussian heatmap codec: MMPose decode parity, exact targets, round trips, flip, background channel."""

import json
import math

import numpy as np
import pytest
import torch

from posekit.codecs.heatmap import (
    HeatmapCodec,
    add_background_channel,
    flip_heatmaps_np,
    gaussian_blur,
    generate_gaussian_heatmaps,
    get_heatmap_maximum,
    heatmap_codec_from_mmpose,
    refine_keypoints,
)
from posekit.models.topdown import flip_heatmaps
from posekit.schema import get_schema
from tests.conftest import shared_path

FLIP = get_schema("coco17").flip_index


def _random_kpts(rng, n=1, k=17, w=192, h=256, margin=30):
    return np.stack([rng.uniform(margin, w - margin, (n, k)), rng.uniform(margin, h - margin, (n, k))],
                    -1).astype(np.float32)


@pytest.mark.parametrize("name", ["simplebaseline-res18", "simplebaseline-res50", "vitpose-simple",
                                  "vitpose-classic"])
def test_decode_matches_mmpose_reference(name):
    root = shared_path("reference", "mmpose-tiny", name)
    meta = json.loads((root / "meta.json").read_text())
    out = torch.load(root / "outputs.pt", weights_only=True)
    codec = heatmap_codec_from_mmpose(meta["codec"])
    kp, sc = codec.decode(out["head.heatmaps"])
    assert kp.shape == (1, 17, 2) and sc.shape == (1, 17)
    np.testing.assert_allclose(kp, out["decode.keypoints"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(sc, out["decode.keypoint_scores"].numpy(), atol=1e-6, rtol=0)


def _loop_msra_target(W, H, kp, sigma):
    """Straightforward per-keypoint reference: cut Gaussian around the rounded cell (MMPose's definition)."""
    K = kp.shape[1]
    hm = np.zeros((K, H, W), np.float64)
    r = int(3 * sigma)
    for k in range(K):
        mx, my = int(kp[0, k, 0] + 0.5), int(kp[0, k, 1] + 0.5)
        for y in range(max(0, my - r), min(H, my + r + 1)):
            for x in range(max(0, mx - r), min(W, mx + r + 1)):
                hm[k, y, x] = max(hm[k, y, x], math.exp(-((x - mx) ** 2 + (y - my) ** 2) / (2 * sigma ** 2)))
    return hm


def test_msra_target_equals_loop_reference():
    rng = np.random.default_rng(1)
    kp = np.stack([rng.uniform(-3, 50, (1, 17)), rng.uniform(-3, 66, (1, 17))], -1).astype(np.float32)
    hm, w = generate_gaussian_heatmaps((48, 64), kp, np.ones((1, 17)), 2.0)
    np.testing.assert_allclose(hm, _loop_msra_target(48, 64, kp, 2.0), atol=1e-6)
    assert np.all(w == 1)


def test_targets_weights_for_invisible_and_outside_points():
    codec = HeatmapCodec((192, 256), (48, 64), 2.0, "msra")
    kp = np.array([[[50, 60], [500, 60], [-100, 10], [96, 128]]], np.float32)
    vis = np.array([[1, 1, 2, 0]], np.float32)
    enc = codec.encode(kp, vis)
    np.testing.assert_array_equal(enc["keypoint_weights"], [[1, 0, 0, 0]])
    hm = enc["heatmaps"]
    assert hm.shape == (4, 64, 48)
    assert hm[0].max() == pytest.approx(1.0) and hm[1:].max() == 0
    # peak at the rounded heatmap cell of (50, 60) / 4 = (12.5, 15) -> int(13.0), int(15.5)
    assert np.unravel_index(hm[0].argmax(), hm[0].shape) == (15, 13)


def test_msra_roundtrip_within_half_cell():
    rng = np.random.default_rng(2)
    codec = HeatmapCodec((192, 256), (48, 64), 2.0, "msra")
    kp = _random_kpts(rng, 1)
    dec, sc = codec.decode(codec.encode(kp)["heatmaps"])
    assert np.abs(dec - kp).max() <= 2.0 + 1e-4  # half a cell of 4 px
    np.testing.assert_allclose(sc, 1.0)


def test_dark_roundtrip_is_subpixel():
    rng = np.random.default_rng(3)
    codec = HeatmapCodec((192, 256), (48, 64), 2.0, "msra", unbiased=True)
    for _ in range(5):
        kp = _random_kpts(rng, 1)
        dec, sc = codec.decode(codec.encode(kp)["heatmaps"])
        assert np.abs(dec - kp).max() < 0.01
        assert sc.min() > 0.9


def test_udp_roundtrip_follows_mmpose_scaling():
    # UDP encodes with (in-1)/(hm-1) but MMPose decodes with in/(hm-1): decoded = kp * in/(in-1).
    rng = np.random.default_rng(4)
    codec = HeatmapCodec((192, 256), (48, 64), 2.0, "udp")
    for _ in range(5):
        kp = _random_kpts(rng, 1)
        dec, _ = codec.decode(codec.encode(kp)["heatmaps"])
        np.testing.assert_allclose(dec, kp * np.array([192 / 191, 256 / 255]), atol=2e-3)


def test_multi_instance_maps_are_merged_by_max():
    codec = HeatmapCodec((192, 256), (48, 64), 2.0, "udp")
    kp = np.array([[[40, 40]], [[41.5, 40]]], np.float32)
    both = codec.encode(kp)["heatmaps"]
    a = codec.encode(kp[:1])["heatmaps"]
    b = codec.encode(kp[1:])["heatmaps"]
    np.testing.assert_array_equal(both, np.maximum(a, b))


def test_udp_flip_consistency():
    rng = np.random.default_rng(5)
    codec = HeatmapCodec((192, 256), (48, 64), 2.0, "udp")
    kp = _random_kpts(rng, 2)
    flipped = kp[:, FLIP].copy()
    flipped[..., 0] = 191 - flipped[..., 0]
    hm = codec.encode(kp)["heatmaps"]
    back = flip_heatmaps_np(codec.encode(flipped)["heatmaps"], FLIP, shift=False)
    np.testing.assert_allclose(back, hm, atol=1e-6)
    t = flip_heatmaps(torch.from_numpy(hm[None]), FLIP, shift=True).numpy()[0]
    np.testing.assert_array_equal(t, flip_heatmaps_np(hm, FLIP, shift=True))


def test_background_channel():
    codec = HeatmapCodec((96, 128), (24, 32), 1.5, "msra", background=True)
    kp = np.array([[[20, 30], [60, 90]]], np.float32)
    hm = codec.encode(kp)["heatmaps"]
    assert hm.shape == (3, 32, 24)
    np.testing.assert_allclose(hm[2], 1 - hm[:2].max(0), atol=1e-7)
    assert hm[2].min() == pytest.approx(0.0) and hm[2].max() == 1.0
    dec, _ = codec.decode(hm)
    assert dec.shape == (1, 2, 2)  # background dropped
    assert np.abs(dec - kp).max() <= 2.0 + 1e-4
    np.testing.assert_array_equal(add_background_channel(hm[:2]), hm)


def test_maximum_and_quarter_refinement_quirk():
    hm = np.zeros((3, 5, 6), np.float32)
    hm[0, 2, 3], hm[0, 2, 4] = 1.0, 0.5        # x=3: refined towards +x
    hm[1, 2, 1], hm[1, 2, 2] = 1.0, 0.5        # x=1: NOT refined (MMPose's 1 < x rule)
    hm[2] -= 1.0                               # all negative -> (-1, -1)
    locs, vals = get_heatmap_maximum(hm)
    np.testing.assert_array_equal(locs, [[3, 2], [1, 2], [-1, -1]])
    np.testing.assert_array_equal(vals, [1.0, 1.0, -1.0])
    ref = refine_keypoints(locs[None], hm)[0]
    np.testing.assert_array_equal(ref, [[3.25, 2], [1, 2], [-1, -1]])


def test_gaussian_blur_keeps_maximum():
    rng = np.random.default_rng(6)
    hm = rng.random((4, 16, 12)).astype(np.float32)
    out = gaussian_blur(hm, 5)
    np.testing.assert_allclose(out.max(axis=(1, 2)), hm.max(axis=(1, 2)), rtol=1e-6)
    assert out.std() < hm.std()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="kind"):
        HeatmapCodec((192, 256), (48, 64), kind="dark")
    codec = HeatmapCodec((192, 256), (48, 64))
    with pytest.raises(ValueError, match="keypoints"):
        codec.encode(np.zeros((2, 17)))
    with pytest.raises(ValueError, match="expects 64x48"):
        codec.decode(np.zeros((17, 32, 24)))
    with pytest.raises(ValueError, match="not a heatmap codec"):
        heatmap_codec_from_mmpose({"type": "SimCCLabel", "input_size": (192, 256)})
