"""SimCC codec and the top-down losses: MMPose decode parity, exact labels, round trips, KLD / MSE values."""

import json
import math

import numpy as np
import pytest
import torch

from posekit.codecs.simcc import (
    SimCCCodec,
    flip_simcc_np,
    get_simcc_maximum,
    simcc_codec_from_mmpose,
)
from posekit.losses.topdown import KLDiscretLoss, keypoint_mse_loss, kl_discret_loss
from posekit.models.topdown import flip_simcc
from posekit.schema import get_schema
from tests.conftest import shared_path

FLIP = get_schema("coco17").flip_index


def test_decode_matches_mmpose_reference():
    root = shared_path("reference", "mmpose-tiny", "rtmpose")
    meta = json.loads((root / "meta.json").read_text())
    out = torch.load(root / "outputs.pt", weights_only=True)
    codec = simcc_codec_from_mmpose(meta["codec"])
    assert codec.num_bins == (192, 256) and codec.sigma == (4.9, 5.66) and not codec.normalize
    kp, sc = codec.decode(out["head.pred_x"], out["head.pred_y"])
    np.testing.assert_allclose(kp, out["decode.keypoints"].numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(sc, out["decode.keypoint_scores"].numpy(), atol=1e-6, rtol=0)


def test_gaussian_labels_exact_values():
    codec = SimCCCodec((192, 256), sigma=(4.9, 5.66), split_ratio=2.0, normalize=False)
    kp = np.array([[[10.3, 100.0], [95.75, 3.2]]], np.float32)
    enc = codec.encode(kp)
    lx, ly = enc["keypoint_x_labels"], enc["keypoint_y_labels"]
    assert lx.shape == (1, 2, 384) and ly.shape == (1, 2, 512)
    mu_x = np.around(kp[0, :, 0] * 2)   # 21, 192 (round-half-even of 191.5)
    mu_y = np.around(kp[0, :, 1] * 2)   # 200, 6
    for k in range(2):
        i = np.arange(384)
        np.testing.assert_allclose(lx[0, k], np.exp(-(i - mu_x[k]) ** 2 / (2 * 4.9 ** 2)), rtol=1e-5, atol=1e-7)
        j = np.arange(512)
        np.testing.assert_allclose(ly[0, k], np.exp(-(j - mu_y[k]) ** 2 / (2 * 5.66 ** 2)), rtol=1e-5, atol=1e-7)
    norm = SimCCCodec((192, 256), sigma=(4.9, 5.66), normalize=True).encode(kp)
    np.testing.assert_allclose(norm["keypoint_x_labels"].sum(-1), 1.0, atol=1e-4)  # a normalised density


def test_roundtrip_exact_on_half_pixel_grid_and_bounded_otherwise():
    rng = np.random.default_rng(0)
    codec = SimCCCodec((192, 256))
    kp = (rng.integers(0, 380, (3, 17, 2)) / 2.0).astype(np.float32)
    kp[..., 1] += 10
    for n in range(3):
        dec, sc = codec.decode(*[codec.encode(kp[n:n + 1])[k] for k in ("keypoint_x_labels", "keypoint_y_labels")])
        np.testing.assert_array_equal(dec, kp[n:n + 1])
        np.testing.assert_allclose(sc, 1.0)
    kp = np.stack([rng.uniform(0, 191, (1, 17)), rng.uniform(0, 255, (1, 17))], -1).astype(np.float32)
    enc = codec.encode(kp)
    dec, _ = codec.decode(enc["keypoint_x_labels"], enc["keypoint_y_labels"])
    assert np.abs(dec - kp).max() <= 0.25 + 1e-6


def test_weights_and_standard_smoothing():
    codec = SimCCCodec((192, 256))
    kp = np.array([[[10, 10], [1000, 10], [50, 50]]], np.float32)
    enc = codec.encode(kp, np.array([[1, 1, 0]]))
    np.testing.assert_array_equal(enc["keypoint_weights"], [[1, 0, 0]])
    assert enc["keypoint_x_labels"][0, 1:].max() == 0
    std = SimCCCodec((192, 256), smoothing="standard", label_smooth_weight=0.1).encode(kp[:, :1])
    lx = std["keypoint_x_labels"][0, 0]
    assert lx[20] == pytest.approx(0.9) and lx[0] == pytest.approx(0.1 / 383)


def test_score_is_min_of_maxima_and_negative_is_minus_one():
    sx = np.array([[[0.1, 3.0, 0.2], [-1.0, -2.0, -0.5]]], np.float32)
    sy = np.array([[[2.0, 0.0], [4.0, 1.0]]], np.float32)
    locs, vals = get_simcc_maximum(sx, sy)
    np.testing.assert_array_equal(vals, [[2.0, -0.5]])
    np.testing.assert_array_equal(locs, [[[1, 0], [-1, -1]]])


def test_flip_vectors_numpy_and_torch_agree_and_invert():
    rng = np.random.default_rng(1)
    x, y = rng.random((2, 17, 384)).astype(np.float32), rng.random((2, 17, 512)).astype(np.float32)
    fx, fy = flip_simcc_np(x, y, FLIP)
    tx, ty = flip_simcc(torch.from_numpy(x), torch.from_numpy(y), FLIP)
    np.testing.assert_array_equal(fx, tx.numpy())
    np.testing.assert_array_equal(fy, ty.numpy())
    bx, by = flip_simcc_np(fx, fy, FLIP)
    np.testing.assert_array_equal(bx, x)
    np.testing.assert_array_equal(by, y)
    # a label of the mirrored point maps back to the label of the point (bin i <-> 383 - i)
    codec = SimCCCodec((192, 256))
    kp = np.array([[[20.0, 30.0]] * 17], np.float32)
    mir = kp.copy()
    mir[..., 0] = 191.5 - mir[..., 0]
    e, m = codec.encode(kp), codec.encode(mir)
    back, _ = flip_simcc_np(m["keypoint_x_labels"], m["keypoint_y_labels"], FLIP)
    np.testing.assert_allclose(back, e["keypoint_x_labels"], atol=1e-7)


def _kl_reference(pred, target, weight, beta=10.0, label_beta=10.0):
    """Plain float64 loops over the documented MMPose formula."""
    total = 0.0
    B, K, _ = pred[0].shape
    for p_ax, t_ax in zip(pred, target):
        for b in range(B):
            for k in range(K):
                lp = p_ax[b, k] * beta
                logq = lp - np.log(np.exp(lp - lp.max()).sum()) - lp.max()
                t = np.exp(t_ax[b, k] * label_beta - (t_ax[b, k] * label_beta).max())
                t = t / t.sum()
                kl = np.where(t > 0, t * (np.log(np.where(t > 0, t, 1)) - logq), 0.0)
                total += kl.mean() * weight[b, k]
    return total / K


def test_kld_loss_matches_formula_and_prefers_correct_prediction():
    rng = np.random.default_rng(2)
    codec = SimCCCodec((192, 256))
    kp = np.stack([rng.uniform(20, 170, (2, 17)), rng.uniform(20, 230, (2, 17))], -1).astype(np.float32)
    labels = [np.concatenate([codec.encode(kp[i:i + 1])[k] for i in range(2)]) for k in
              ("keypoint_x_labels", "keypoint_y_labels")]
    w = np.ones((2, 17), np.float32)
    w[0, 3] = 0
    pred = [rng.normal(size=l.shape).astype(np.float32) for l in labels]
    got = kl_discret_loss([torch.from_numpy(p) for p in pred], [torch.from_numpy(l) for l in labels],
                          torch.from_numpy(w)).item()
    assert got == pytest.approx(_kl_reference(pred, labels, w), rel=1e-5)
    good = KLDiscretLoss()([torch.from_numpy(l) for l in labels], [torch.from_numpy(l) for l in labels],
                           torch.from_numpy(w)).item()
    assert good < 0.1 * got
    assert good == pytest.approx(_kl_reference(labels, labels, w), abs=1e-6)


def test_keypoint_mse_loss_with_target_weight():
    rng = np.random.default_rng(3)
    p, t = rng.random((2, 3, 4, 5)), rng.random((2, 3, 4, 5))
    w = np.array([[1, 0, 1], [0.5, 1, 0]])
    got = keypoint_mse_loss(torch.from_numpy(p), torch.from_numpy(t), torch.from_numpy(w)).item()
    assert got == pytest.approx(((p - t) ** 2 * w[..., None, None]).mean(), rel=1e-12)
    assert keypoint_mse_loss(torch.from_numpy(p), torch.from_numpy(p)).item() == 0.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="smoothing"):
        SimCCCodec((192, 256), smoothing="laplace")
    with pytest.raises(ValueError, match="x-bins"):
        SimCCCodec((192, 256)).decode(np.zeros((1, 17, 100)), np.zeros((1, 17, 512)))
    with pytest.raises(ValueError, match="use_dark"):
        simcc_codec_from_mmpose({"type": "SimCCLabel", "input_size": (192, 256), "use_dark": True})
    assert math.isclose(SimCCCodec((288, 384), sigma=(6.93, 7.99)).num_bins[0], 576)
