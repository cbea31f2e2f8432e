"""The masked stage L2 of OpenPose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posekit.losses import OpenPoseLoss, masked_l2, openpose_loss


def _rand(*shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def test_masked_l2_matches_formula():
    pred, tgt = _rand(3, 5, 4, 6, seed=1), _rand(3, 5, 4, 6, seed=2)
    mask = (_rand(3, 4, 6, seed=3) > 0).float()
    p, t, m = pred.numpy().astype(np.float64), tgt.numpy().astype(np.float64), mask.numpy().astype(np.float64)
    per_image = (m[:, None] * (p - t) ** 2).sum(axis=(1, 2, 3))
    assert masked_l2(pred, tgt, mask).item() == pytest.approx(per_image.mean(), rel=1e-5)
    assert masked_l2(pred, tgt, mask, "sum").item() == pytest.approx(per_image.sum(), rel=1e-5)
    assert masked_l2(pred, tgt, mask, "mean").item() == pytest.approx(per_image.sum() / p.size, rel=1e-5)
    assert masked_l2(pred, tgt, mask[:, None]).item() == pytest.approx(per_image.mean(), rel=1e-5)
    assert masked_l2(pred, tgt).item() == pytest.approx(((p - t) ** 2).sum() / 3, rel=1e-5)
    assert masked_l2(tgt, tgt, mask).item() == 0


def test_masked_region_gets_no_loss_and_no_gradient():
    pred = _rand(2, 3, 5, 5, seed=4).requires_grad_(True)
    tgt = torch.zeros(2, 3, 5, 5)
    mask = torch.ones(2, 5, 5)
    mask[:, 1:3, 2:4] = 0
    loss = masked_l2(pred, tgt, mask)
    loss.backward()
    assert torch.all(pred.grad[:, :, 1:3, 2:4] == 0)
    assert torch.all(pred.grad[:, :, 0, 0] != 0)
    with torch.no_grad():
        changed = pred.detach().clone()
        changed[:, :, 1:3, 2:4] += 100.0
    assert masked_l2(changed, tgt, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    # Gradient of sum W (p - t)^2 / B is 2 W (p - t) / B.
    assert torch.allclose(pred.grad, 2 * mask[:, None] * pred.detach() / 2)


def test_openpose_loss_sums_every_stage():
    B, C, J, h, w = 2, 38, 19, 4, 5
    paf_t, heat_t = _rand(B, C, h, w, seed=5), _rand(B, J, h, w, seed=6)
    mask = (_rand(B, h, w, seed=7) > -0.5).float()
    pafs = [_rand(B, C, h, w, seed=10 + t) for t in range(4)]
    heats = [_rand(B, J, h, w, seed=20 + t) for t in range(2)]  # TPAMI-like: 4 PAF + 2 confidence stages
    out = openpose_loss(pafs, heats, paf_t, heat_t, mask)
    m = mask.numpy()[:, None].astype(np.float64)
    f_l = [float((m * (p.numpy() - paf_t.numpy()) ** 2).sum() / B) for p in pafs]
    f_s = [float((m * (s.numpy() - heat_t.numpy()) ** 2).sum() / B) for s in heats]
    for t in range(4):
        assert out[f"loss_paf_stage{t + 1}"].item() == pytest.approx(f_l[t], rel=1e-5)
    for t in range(2):
        assert out[f"loss_heatmap_stage{t + 1}"].item() == pytest.approx(f_s[t], rel=1e-5)
    assert "loss_heatmap_stage3" not in out
    assert out["loss_paf"].item() == pytest.approx(sum(f_l), rel=1e-5)
    assert out["loss_heatmap"].item() == pytest.approx(sum(f_s), rel=1e-5)
    assert out["loss"].item() == pytest.approx(sum(f_l) + sum(f_s), rel=1e-5)


def test_openpose_loss_module_on_model_output():
    from posekit.models.presets import build_model

    torch.manual_seed(0)
    model = build_model("openpose-light", num_stages=3, stage_width=16)
    raw = model(torch.zeros(2, 3, 32, 40))
    targets = {"pafs": torch.zeros(2, 38, 4, 5), "heatmaps": torch.zeros(2, 19, 4, 5), "mask": torch.ones(2, 4, 5)}
    out = OpenPoseLoss()(raw, targets)
    expect = sum(float((p.detach() ** 2).sum()) / 2 for p in raw["stage_pafs"]) + sum(
        float((s.detach() ** 2).sum()) / 2 for s in raw["stage_heatmaps"])
    assert out["loss"].item() == pytest.approx(expect, rel=1e-5)
    out["loss"].backward()
    assert model.conv5_1_CPM_L1.weight.grad is not None and model.Mconv1_stage3_L2.weight.grad.abs().sum() > 0
    with pytest.raises(KeyError, match="pafs"):
        OpenPoseLoss()(raw, {"heatmaps": targets["heatmaps"]})


def test_loss_input_errors():
    with pytest.raises(ValueError, match="differ"):
        masked_l2(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match="reduction"):
        masked_l2(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), reduction="avg")
    with pytest.raises(ValueError, match="broadcast"):
        masked_l2(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="at least one"):
        openpose_loss([], [torch.zeros(1)], torch.zeros(1), torch.zeros(1))
