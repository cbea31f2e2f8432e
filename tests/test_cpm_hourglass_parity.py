"""CPM and Stacked Hourglass: parity with MMPose's own outputs (../shared/reference/mmpose-tiny/{cpm,hourglass}),
strict loading of the official key layout, presets, stage losses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import shared_path
from posekit.codecs.heatmap import HeatmapCodec
from posekit.losses.stage import StageL2Loss, keypoint_mse, stage_l2_loss
from posekit.models.backbones.hourglass import HourglassNet
from posekit.models.topdown import flip_heatmaps
from posekit.models.topdown_presets import (
    MULTI_STAGE_PRESETS,
    STAGE_CONFIGS,
    TOPDOWN_PRESETS,
    CPMConfig,
    HourglassConfig,
    build_stage_model,
    build_topdown_from_mmpose_meta,
    load_topdown_weights,
    stage_config_from_mmpose,
)
from posekit.models.weights import WeightsError

MODELS = ("cpm", "hourglass")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module", params=MODELS)
def ref(request):
    name = request.param
    meta = json.loads(shared_path("reference", "mmpose-tiny", name, "meta.json").read_text())
    sd = torch.load(shared_path("reference", "mmpose-tiny", name, "state_dict.pt"), weights_only=True)
    x = torch.load(shared_path("reference", "mmpose-tiny", name, "input.pt"), weights_only=True)
    out = torch.load(shared_path("reference", "mmpose-tiny", name, "outputs.pt"), weights_only=True)
    model = build_topdown_from_mmpose_meta(meta).eval()
    load_topdown_weights(model, sd)  # strict
    with torch.no_grad():
        raw = model(x)
    return dict(name=name, meta=meta, sd=sd, x=x, out=out, model=model, raw=raw)


# ---------------------------------------------------------------------------------------------------- parity
def test_state_dict_layout_equals_mmpose(ref):
    own = {k: tuple(v.shape) for k, v in ref["model"].state_dict().items()}
    theirs = {k: tuple(s) for k, s, _ in ref["meta"]["state_dict"]}
    assert own == theirs
    assert len(own) == ref["meta"]["state_dict_num_keys"]


def test_every_backbone_and_head_output_matches(ref):
    out, raw = ref["out"], ref["raw"]
    bb_keys = sorted(k for k in out if k.startswith("backbone.out"))
    head_keys = sorted(k for k in out if k.startswith("head.heatmaps.stage"))
    assert len(bb_keys) == len(raw["backbone"]) and len(head_keys) == len(raw["stage_heatmaps"]) >= 1
    for i, k in enumerate(bb_keys):
        assert raw["backbone"][i].shape == out[k].shape
        assert _rel(raw["backbone"][i], out[k]) <= 1e-4, k
    for i, k in enumerate(head_keys):
        assert raw["stage_heatmaps"][i].shape == out[k].shape
        assert _rel(raw["stage_heatmaps"][i], out[k]) <= 1e-4, k
    assert torch.equal(raw["heatmaps"], raw["stage_heatmaps"][-1])


def test_decoded_keypoints_match(ref):
    kp, sc = ref["model"].decode(ref["raw"])
    ref_kp = ref["out"]["decode.keypoints"].numpy()
    ref_sc = ref["out"]["decode.keypoint_scores"].numpy()
    assert kp.shape == ref_kp.shape
    assert np.abs(kp - ref_kp).max() <= 1e-3
    assert np.abs(sc - ref_sc).max() <= 1e-4
    # the reference is not degenerate: keypoints spread over the crop, quarter-pixel refinements present
    W, H = ref["model"].input_size
    assert ref_kp[..., 0].std() > W / 10 and ref_kp[..., 1].std() > H / 10


def test_config_from_meta(ref):
    cfg = ref["model"].config
    bb = ref["meta"]["model_cfg"]["backbone"]
    codec = ref["meta"]["codec"]
    assert tuple(cfg.input_size) == tuple(codec["input_size"])
    assert tuple(cfg.heatmap_size) == tuple(codec["heatmap_size"])
    if ref["name"] == "cpm":
        assert isinstance(cfg, CPMConfig)
        assert (cfg.num_stages, cfg.feat_channels, cfg.middle_channels) == (
            bb["num_stages"], bb["feat_channels"], bb["middle_channels"])
    else:
        assert isinstance(cfg, HourglassConfig)
        assert cfg.stage_channels == tuple(bb["stage_channels"]) and cfg.num_stacks == bb["num_stacks"]


def test_flip_test_averages_mirrored_heatmaps(ref):
    m, x = ref["model"], ref["x"]
    with torch.no_grad():
        flipped = m(x.flip(-1))["heatmaps"]
        avg = m.forward_flip(x)["heatmaps"]
    expect = 0.5 * (ref["raw"]["heatmaps"] + flip_heatmaps(flipped, m.flip_indices[None], shift=True))
    assert torch.allclose(avg, expect, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- loading
def test_strict_loading_reports_missing_unexpected_and_shapes(ref):
    sd = dict(ref["sd"])
    key = next(iter(sd))
    model = build_topdown_from_mmpose_meta(ref["meta"])
    with pytest.raises(WeightsError, match="missing keys"):
        load_topdown_weights(model, {k: v for k, v in sd.items() if k != key})
    with pytest.raises(WeightsError, match="unexpected keys"):
        load_topdown_weights(model, dict(sd, **{"backbone.extra.weight": torch.zeros(1)}))
    wrong = dict(sd)
    wrong[key] = torch.zeros(*[s + 1 for s in sd[key].shape])
    with pytest.raises(WeightsError, match="shape mismatches"):
        load_topdown_weights(model, wrong)


def test_mmpose0x_keypoint_head_keys_and_file_path(ref, tmp_path):
    sd = {("keypoint_head." + k[5:] if k.startswith("head.") else k): v for k, v in ref["sd"].items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": sd, "meta": {"epoch": 210}}, path)
    model = build_topdown_from_mmpose_meta(ref["meta"]).eval()
    load_topdown_weights(model, str(path))
    with torch.no_grad():
        assert torch.equal(model(ref["x"])["heatmaps"], ref["raw"]["heatmaps"])
    with pytest.raises(FileNotFoundError):
        load_topdown_weights(model, tmp_path / "nope.pth")


def test_unsupported_mmpose_config_is_named():
    meta = json.loads(shared_path("reference", "mmpose-tiny", "cpm", "meta.json").read_text())
    cfg = json.loads(json.dumps(meta["model_cfg"]))
    cfg["backbone"]["type"] = "HRNet"
    with pytest.raises(ValueError, match="backbone.type"):
        stage_config_from_mmpose(cfg)
    cfg = json.loads(json.dumps(meta["model_cfg"]))
    cfg["head"]["num_stages"] = 5
    with pytest.raises(ValueError, match="num_stages"):
        stage_config_from_mmpose(cfg)


# ---------------------------------------------------------------------------------------------------- presets
def test_official_presets():
    assert set(STAGE_CONFIGS) >= {"cpm", "hourglass-52", "cpn-r50", "cpn-tiny"}
    assert set(MULTI_STAGE_PRESETS) == set(STAGE_CONFIGS) and set(MULTI_STAGE_PRESETS) <= set(TOPDOWN_PRESETS)
    assert STAGE_CONFIGS["cpm"].url.endswith("cpm_coco_256x192-aa4ba095_20200817.pth")
    assert STAGE_CONFIGS["hourglass-52"].url.endswith("hourglass52_coco_256x256-4ec713ba_20200709.pth")
    cpm = MULTI_STAGE_PRESETS["cpm"]().eval()
    assert cpm.preset == "cpm" and cpm.input_size == (192, 256)
    with torch.no_grad():
        raw = cpm(torch.zeros(1, 3, 256, 192))
    assert len(raw["stage_heatmaps"]) == 6 and raw["heatmaps"].shape == (1, 17, 32, 24)
    hg = build_stage_model("hourglass-52")
    n = sum(p.numel() for p in hg.parameters())
    assert abs(n / 1e6 - 94.85) < 0.01  # MMPose model zoo: Hourglass-52 has 94.85 M parameters
    with pytest.raises(KeyError, match="unknown multi-stage preset"):
        build_stage_model("cpm-7")
    with pytest.raises(ValueError, match="unknown CPMConfig field"):
        build_stage_model("cpm", num_stacks=2)
    with pytest.raises(ValueError, match="heatmap_size"):
        build_stage_model("cpm", input_size=(192, 192))


def _tiny_hourglass(**kw):
    return HourglassNet(downsample_times=2, stage_channels=(8, 8, 12), stage_blocks=(1, 1, 1), feat_channel=8,
                        stem_channels=(8, 8), **kw)


def test_hourglass_stacks_maxpool_and_input_check():
    x = torch.randn(2, 3, 32, 48)
    for down in ("conv", "maxpool"):
        net = _tiny_hourglass(num_stacks=2, down=down).eval()
        outs = net(x)
        assert len(outs) == 2 and all(o.shape == (2, 8, 8, 12) for o in outs)
        assert not torch.allclose(outs[0], outs[1])
    # the max-pool variant has no parameters for its pooling and no stride-2 block on the down path
    names = dict(_tiny_hourglass(down="maxpool").named_modules())
    assert names["hourglass_modules.0.low1.0"].conv1.stride == (1, 1)
    assert names["hourglass_modules.0.low1.0"].downsample is None
    assert dict(_tiny_hourglass().named_modules())["hourglass_modules.0.low1.0"].conv1.stride == (2, 2)
    with pytest.raises(ValueError, match="multiples of 16"):
        _tiny_hourglass()(torch.randn(1, 3, 40, 48))


def test_hourglass_skip_is_elementwise_sum_of_nearest_upsampling():
    hg = _tiny_hourglass().hourglass_modules[0].eval()
    x = torch.randn(1, 8, 8, 12)
    low = hg.low3(hg.low2(hg.low1(x)))
    expect = hg.up1(x) + low.repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert torch.allclose(hg(x), expect, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- CPM + loss
def _tiny_cpm(**kw):
    return build_stage_model(CPMConfig(num_stages=3, feat_channels=8, middle_channels=4,
                                       stem_channels=(8, 8, 8, 4, 8, 8), middle_widths=(8, 8, 8),
                                       input_size=(32, 48), heatmap_size=(4, 6), sigma=1.0, **kw))


def test_cpm_later_stages_use_previous_beliefs():
    model = _tiny_cpm().eval()
    x = torch.randn(1, 3, 48, 32)
    with torch.no_grad():
        a = model(x)["stage_heatmaps"]
        model.backbone.stem[-1].conv.bias.add_(1.0)  # changes b_1 only ...
        b = model(x)["stage_heatmaps"]
    assert torch.allclose(b[0], a[0] + 1.0, atol=1e-5)
    assert (b[1] - a[1]).abs().max() > 1e-4 and (b[2] - a[2]).abs().max() > 1e-6  # ... which feeds b_2, b_3


def test_cpm_background_map_and_stage_l2():
    model = _tiny_cpm(background=True).eval()
    assert model.flip_indices[None][-1] == 17
    codec = model.codec()
    assert isinstance(codec, HeatmapCodec) and codec.background
    kps = np.array([[[10.0 + i, 20.0] for i in range(17)]])
    enc = codec.encode(kps, np.ones((1, 17)))
    assert enc["heatmaps"].shape == (18, 6, 4)
    target = torch.from_numpy(enc["heatmaps"])[None]
    weight = torch.from_numpy(enc["keypoint_weights"])
    raw = model(torch.randn(1, 3, 48, 32))
    assert raw["heatmaps"].shape == (1, 18, 6, 4)
    kp, sc = model.decode(raw)
    assert kp.shape == (1, 17, 2) and sc.shape == (1, 17)
    losses = StageL2Loss()(raw, {"heatmaps": target, "keypoint_weights": weight})
    assert len([k for k in losses if k.startswith("loss_stage")]) == 3
    per = [float(((s.detach() - target) ** 2).mean()) for s in raw["stage_heatmaps"]]  # all weights are 1
    assert [losses[f"loss_stage{t}"].item() for t in (1, 2, 3)] == pytest.approx(per, rel=1e-5)
    assert losses["loss"].item() == pytest.approx(sum(per), rel=1e-5)
    losses["loss"].backward()
    assert model.backbone.stem[0].conv.weight.grad.abs().sum() > 0


def test_keypoint_mse_weights():
    g = torch.Generator().manual_seed(0)
    p, t = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    w = torch.tensor([[1.0, 0.0, 0.5], [0.0, 2.0, 1.0]])
    expect = ((w[:, :, None, None] * (p - t)) ** 2).mean()
    assert float(keypoint_mse(p, t, w)) == pytest.approx(float(expect), rel=1e-6)
    assert float(keypoint_mse(p, t)) == pytest.approx(float(((p - t) ** 2).mean()), rel=1e-6)
    out = stage_l2_loss([p, 2 * p], t, w)
    assert float(out["loss"]) == pytest.approx(float(keypoint_mse(p, t, w) + keypoint_mse(2 * p, t, w)), rel=1e-6)
    with pytest.raises(ValueError, match="target_weight"):
        keypoint_mse(p, t, w[:, :2])
