"""OpenPose models: CMU layout against layers.json, forward shapes/stride, TPAMI data flow, light model, presets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from posekit.models.openpose import OpenPose
from posekit.models.presets import PRESETS, build_model
from conftest import shared_path


@pytest.fixture(scope="module")
def layers():
    return json.loads(shared_path("reference", "openpose-cmu-coco", "layers.json").read_text())


@pytest.fixture(scope="module")
def cmu():
    torch.manual_seed(0)
    return build_model("openpose-cmu-coco").eval()


def _run_caffe_graph(layers: dict, state_dict: dict, image: torch.Tensor) -> dict:
    """An independent executor of layers.json's layer sequence (Caffe semantics) with the given weights."""
    blobs = {"image": image}
    for layer in layers["sequence"]:
        kind = layer["type"]
        if kind == "Convolution":
            name = layer["name"]
            blobs[layer["top"]] = F.conv2d(blobs[layer["bottom"]], state_dict[f"{name}.weight"],
                                           state_dict[f"{name}.bias"], stride=layer["stride"], padding=layer["pad"],
                                           dilation=layer["dilation"], groups=layer["group"])
        elif kind == "ReLU":
            blobs[layer["bottom"]] = F.relu(blobs[layer["bottom"]])
        elif kind == "Pooling":
            assert layer["pool"] == "MAX"
            blobs[layer["top"]] = F.max_pool2d(blobs[layer["bottom"]], layer["kernel"], layer["stride"],
                                               layer["pad"], ceil_mode=layer["ceil_mode"])
        elif kind == "Concat":
            blobs[layer["top"]] = torch.cat([blobs[b] for b in layer["bottoms"]], dim=layer["axis"])
        else:  # pragma: no cover - layers.json only has these four
            raise AssertionError(f"unexpected layer type {kind}")
    return blobs


def test_cmu_state_dict_matches_layers_json(cmu, layers):
    expected = []
    for conv in layers["convolutions"]:
        k = conv["kernel"]
        expected.append((f"{conv['name']}.weight", (conv["out_channels"], conv["in_channels"], k, k)))
        expected.append((f"{conv['name']}.bias", (conv["out_channels"],)))
    got = [(k, tuple(v.shape)) for k, v in cmu.state_dict().items()]
    assert got == expected  # same keys, same shapes, same (prototxt) order
    assert len(got) == 2 * 92
    # Every conv has CMU's kernel / stride / padding.
    for conv in layers["convolutions"]:
        m = getattr(cmu, conv["name"])
        assert m.kernel_size == (conv["kernel"],) * 2 and m.stride == (conv["stride"],) * 2
        assert m.padding == (conv["pad"],) * 2


def test_cmu_random_flat_state_dict_loads_strict_and_forward(cmu, layers):
    gen = torch.Generator().manual_seed(1)
    flat = {f"{c['name']}.{p}": (torch.randn(
        (c["out_channels"], c["in_channels"], c["kernel"], c["kernel"]) if p == "weight" else (c["out_channels"],),
        generator=gen) * (1.0 / (c["in_channels"] * c["kernel"] ** 2)) ** 0.5)
        for c in layers["convolutions"] for p in ("weight", "bias")}
    result = cmu.load_state_dict(flat, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(cmu.Mconv7_stage6_L2.bias, flat["Mconv7_stage6_L2.bias"])
    with torch.no_grad():
        out = cmu(torch.randn(2, 3, 64, 64, generator=gen))
    assert out["pafs"].shape == (2, 38, 8, 8)
    assert out["heatmaps"].shape == (2, 19, 8, 8)
    assert len(out["stage_pafs"]) == 6 and len(out["stage_heatmaps"]) == 6
    assert all(p.shape == (2, 38, 8, 8) for p in out["stage_pafs"])
    assert out["stage_pafs"][-1] is out["pafs"] and out["stage_heatmaps"][-1] is out["heatmaps"]


def test_cmu_forward_equals_caffe_graph(cmu, layers):
    """Every stage's maps equal an independent execution of layers.json (odd size: ceil-mode pooling)."""
    torch.manual_seed(2)
    x = torch.randn(1, 3, 60, 44)
    with torch.no_grad():
        out = cmu(x)
        blobs = _run_caffe_graph(layers, cmu.state_dict(), x)
    assert out["pafs"].shape == (1, 38, 8, 6)  # ceil(60/8), ceil(44/8)
    names = [("conv5_5_CPM_L1", "conv5_5_CPM_L2")] + [(f"Mconv7_stage{t}_L1", f"Mconv7_stage{t}_L2")
                                                       for t in range(2, 7)]
    for t, (l1, l2) in enumerate(names):
        scale = blobs[l1].abs().max().item() + 1e-12
        assert torch.allclose(out["stage_pafs"][t], blobs[l1], atol=1e-5 * scale, rtol=1e-4)
        scale = blobs[l2].abs().max().item() + 1e-12
        assert torch.allclose(out["stage_heatmaps"][t], blobs[l2], atol=1e-5 * scale, rtol=1e-4)
    net = torch.cat([out["heatmaps"], out["pafs"]], 1)
    assert torch.allclose(net, blobs["net_output"], atol=1e-5 * blobs["net_output"].abs().max().item())
    # No ReLU after a branch's last conv: raw outputs take negative values.
    assert (out["pafs"] < 0).any() and (out["heatmaps"] < 0).any()


def _small_tpami(**kw):
    args = dict(paf_stages=3, heatmap_stages=2, paf_width=8, heatmap_width=8, paf_mid=16, heatmap_mid=16,
                num_blocks=2)
    args.update(kw)
    return build_model("openpose-tpami", **args).eval()


def test_tpami_stage_counts_and_inputs():
    model = _small_tpami()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 48, 40))
    assert len(out["stage_pafs"]) == 3 and len(out["stage_heatmaps"]) == 2
    assert out["pafs"].shape == (1, 38, 6, 5) and out["heatmaps"].shape == (1, 19, 6, 5)
    head = model.head
    conv_in = lambda stage: stage.blocks[0].conv0.in_channels  # noqa: E731
    assert conv_in(head.paf_stage1) == 128  # L^1 = phi_1(F)
    assert conv_in(head.paf_stage2) == 128 + 38  # L^t = phi_t(F, L^{t-1})
    assert conv_in(head.heatmap_stage1) == 128 + 38  # S^{T_P} = rho(F, L^{T_P})
    assert conv_in(head.heatmap_stage2) == 128 + 38 + 19  # S^t = rho_t(F, L^{T_P}, S^{t-1})


def test_tpami_data_flow():
    """PAFs do not depend on the confidence stages; the confidence maps depend on the last PAF stage."""
    torch.manual_seed(3)
    model = _small_tpami()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model.head.heatmap_stage1.out.bias.add_(1.0)
        a = model(x)
        assert torch.equal(a["pafs"], ref["pafs"])
        assert not torch.allclose(a["heatmaps"], ref["heatmaps"])
        model.head.heatmap_stage1.out.bias.sub_(1.0)
        model.head.paf_stage3.out.bias.add_(1.0)  # changes L^{T_P} only
        b = model(x)
        assert torch.equal(b["stage_pafs"][1], ref["stage_pafs"][1])
        assert not torch.allclose(b["heatmaps"], ref["heatmaps"])


def test_light_model_trains_a_few_steps():
    """The light preset: stride-8 maps, gradients through every stage, loss goes down on one batch."""
    from posekit.codecs.paf import PafCodec
    from posekit.losses import OpenPoseLoss

    torch.manual_seed(4)
    model = build_model("openpose-light")
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    kp = np.zeros((1, 18, 3), np.float32)
    kp[0, :, 0] = np.linspace(20, 70, 18)
    kp[0, :, 1] = np.linspace(15, 50, 18)
    kp[0, :, 2] = 2
    sample = {"image": np.zeros((64, 96, 3), np.uint8), "keypoints": kp}
    tgt = {k: torch.from_numpy(v)[None] for k, v in model.codec.encode(sample).items()}
    assert isinstance(model.codec, PafCodec) and tgt["pafs"].shape == (1, 38, 8, 12)
    x = model.preprocess(sample["image"])
    crit = OpenPoseLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(15):
        out = model(x)
        assert out["heatmaps"].shape == (1, 19, 8, 12)
        loss = crit(out, tgt)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in model.parameters())
    assert losses[-1] < 0.4 * losses[0], losses


def test_model_flat_registration_follows_train_eval_and_to():
    model = build_model("openpose-light")
    model.eval()
    assert not model.backbone.training and not model.stem[1].training
    model.train()
    assert model.backbone.training and model.stem[1].training
    model.to(torch.float64)
    assert model.backbone.stem[0].weight.dtype == torch.float64  # the parts share the registered layers
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 16, 16, dtype=torch.float64))
    assert out["pafs"].dtype == torch.float64


def test_preprocess_pads_and_normalises():
    model = build_model("openpose-light")
    img = np.full((20, 30, 3), 255, np.uint8)
    img[0, 0] = (0, 128, 64)
    x = model.preprocess(img)
    assert x.shape == (1, 3, 24, 32)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([-0.5, 0.0, -0.25]))
    assert float(x[0, 0, 5, 5]) == pytest.approx(127 / 256)
    assert torch.all(x[0, :, 20:, :] == 0) and torch.all(x[0, :, :, 30:] == 0)  # padded with 128 -> 0


def test_build_model_presets_and_errors():
    assert {"openpose-cmu-coco", "openpose-tpami", "openpose-light"} <= set(PRESETS)
    model = build_model("openpose-light", num_stages=3, stage_width=16)
    assert isinstance(model, OpenPose) and model.preset == "openpose-light"
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 32, 32))
    assert len(out["stage_pafs"]) == 3
    assert model.Mconv1_stage3_L1.out_channels == 16
    with pytest.raises(KeyError, match="openpose-light"):
        build_model("openpose-nope")
    with pytest.raises(ValueError, match="num_stages"):
        build_model("openpose-light", no_such_field=1)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(1, 1, 32, 32))


def test_model_decode_finds_people_in_target_maps():
    """decode() on maps equal to a sample's targets returns that person in model-input pixels."""
    model = build_model("openpose-light")
    rng = np.random.default_rng(5)
    kp = np.zeros((1, 18, 3), np.float32)
    base = np.array([[60, 30], [60, 50], [45, 50], [40, 75], [38, 100], [75, 50], [80, 75], [82, 100],
                     [50, 105], [48, 140], [47, 175], [70, 105], [72, 140], [73, 175], [55, 25], [65, 25],
                     [50, 28], [70, 28]], np.float32)
    kp[0, :, :2] = base + rng.uniform(-2, 2, base.shape)
    kp[0, :, 2] = 2
    tgt = model.codec.encode({"image": np.zeros((192, 128, 3), np.uint8), "keypoints": kp})
    raw = {"heatmaps": torch.from_numpy(tgt["heatmaps"])[None], "pafs": torch.from_numpy(tgt["pafs"])[None]}
    (res,) = model.decode(raw)
    assert res["keypoints"].shape == (1, 18, 2) and res["scores"].shape == (1, 18)
    err = np.linalg.norm(res["keypoints"][0] - kp[0, :, :2], axis=1)
    assert err.max() < 2.0, err
    assert np.all(res["scores"][0] > 0.5)
    assert np.allclose(res["boxes"][0], [res["keypoints"][0, :, 0].min(), res["keypoints"][0, :, 1].min(),
                                         res["keypoints"][0, :, 0].max(), res["keypoints"][0, :, 1].max()])
