"""Top-down models against MMPose's own outputs (../shared/reference/mmpose-tiny), presets and weight layouts."""

import json

import numpy as np
import pytest
import torch

from posekit.models.backbones.vit import VisionTransformer
from posekit.models.topdown import TopDownModel
from posekit.models.topdown_presets import (
    SINGLE_STAGE_PRESETS,
    TOPDOWN_PRESETS,
    TOPDOWN_URLS,
    build_topdown_from_mmpose_meta,
    load_topdown_weights,
    topdown_from_mmpose_config,
)
from posekit.models.weights import WeightsError
from tests.conftest import shared_path

MODELS = ["simplebaseline-res18", "simplebaseline-res50", "vitpose-simple", "vitpose-classic", "rtmpose"]
HEAD_KEYS = {"heatmaps": "head.heatmaps", "pred_x": "head.pred_x", "pred_y": "head.pred_y"}


def _load(name):
    root = shared_path("reference", "mmpose-tiny", name)
    meta = json.loads((root / "meta.json").read_text())
    sd = torch.load(root / "state_dict.pt", weights_only=True)
    x = torch.load(root / "input.pt", weights_only=True)
    out = torch.load(root / "outputs.pt", weights_only=True)
    return meta, sd, x, out


def _close(a: torch.Tensor, b: torch.Tensor, tol=1e-4):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), err


@pytest.mark.parametrize("name", MODELS)
def test_parity_with_mmpose(name):
    meta, sd, x, ref = _load(name)
    model = build_topdown_from_mmpose_meta(meta)
    assert set(model.state_dict()) == set(sd)  # the official key layout, nothing more, nothing less
    load_topdown_weights(model, sd)
    with torch.no_grad():
        raw = model(x)
    _close(raw["backbone"][0], ref["backbone.out0"])
    if "neck.out0" in ref:
        _close(raw["neck"][0], ref["neck.out0"])
    checked = [k for k in HEAD_KEYS if HEAD_KEYS[k] in ref]
    assert checked
    for k in checked:
        _close(raw[k], ref[HEAD_KEYS[k]])
    kp, sc = model.decode(raw)
    np.testing.assert_allclose(kp, ref["decode.keypoints"].numpy(), atol=1e-3, rtol=0)
    np.testing.assert_allclose(sc, ref["decode.keypoint_scores"].numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["vitpose-classic", "rtmpose", "simplebaseline-res18"])
def test_flip_test_is_mirror_consistent(name):
    meta, sd, x, _ = _load(name)
    model = load_topdown_weights(build_topdown_from_mmpose_meta(meta), sd)
    with torch.no_grad():
        a = model.forward_flip(x)
        b = model.forward_flip(x.flip(-1))
    fi = model.flip_indices[None]
    if "heatmaps" in a:
        # without the MSRA shift the flip-averaged maps of the mirror are the mirror of the maps
        if not model.shift_heatmap:
            _close(b["heatmaps"].flip(-1)[:, fi], a["heatmaps"], 1e-5)
        plain = model(x)["heatmaps"]
        assert (a["heatmaps"] - plain).abs().max() > 1e-3  # the flip branch really contributes
    else:
        _close(b["pred_x"].flip(-1)[:, fi], a["pred_x"], 1e-5)
        _close(b["pred_y"][:, fi], a["pred_y"], 1e-5)
    kp, _ = model.predict(x, flip_test=True)
    assert kp.shape == (1, 17, 2) and np.isfinite(kp).all()


def test_several_decoders_share_one_backbone():
    meta_s, sd_s, x, ref_s = _load("vitpose-simple")
    meta_c, sd_c, _, ref_c = _load("vitpose-classic")
    single_s = topdown_from_mmpose_config(meta_s["model_cfg"])
    single_c = topdown_from_mmpose_config(meta_c["model_cfg"])
    model = TopDownModel(single_c.backbone, {"coco": single_c.head, "simple": single_s.head},
                         {"coco": single_c.codec(), "simple": single_s.codec()},
                         neck={"coco": torch.nn.Identity(), "simple": single_s.neck}).eval()
    sd = {k: v for k, v in sd_c.items() if k.startswith("backbone.")}
    sd.update({"head.coco." + k[5:]: v for k, v in sd_c.items() if k.startswith("head.")})
    sd.update({"head.simple." + k[5:]: v for k, v in sd_s.items() if k.startswith("head.")})
    load_topdown_weights(model, sd)
    with torch.no_grad():
        outs = model.forward_multi({"coco": x, "simple": torch.cat([x, x.flip(-1)])})
        one = model(x, decoder="simple")
    _close(outs["coco"]["heatmaps"], ref_c["head.heatmaps"])
    _close(outs["simple"]["heatmaps"][:1], ref_s["head.heatmaps"])
    _close(one["heatmaps"], ref_s["head.heatmaps"])
    assert outs["simple"]["heatmaps"].shape[0] == 2
    kp, _ = model.decode(outs["coco"], decoder="coco")
    np.testing.assert_allclose(kp, ref_c["decode.keypoints"].numpy(), atol=1e-3)
    with pytest.raises(KeyError, match="decoder"):
        model(x)


def _to_official_vitpose(sd):
    """posekit / MMPose 1.x names -> the official ViTPose repository's names (with a cls position)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("head."):
            out["keypoint_head." + k[5:]] = v
            continue
        sub = k[len("backbone."):]
        if sub == "pos_embed":
            cls = torch.full_like(v[:, :1], 0.3)
            out["backbone.pos_embed"] = torch.cat([cls, v - cls], 1)
            continue
        sub = (sub.replace("ffn.layers.0.0", "mlp.fc1").replace("ffn.layers.1", "mlp.fc2")
               .replace("patch_embed.projection", "patch_embed.proj").replace("layers.", "blocks.")
               .replace(".ln1.", ".norm1.").replace(".ln2.", ".norm2."))
        if sub.startswith("ln1."):
            sub = "last_norm." + sub[4:]
        out["backbone." + sub] = v
    return out


def test_official_vitpose_checkpoint_layout_loads():
    meta, sd, x, ref = _load("vitpose-classic")
    official = _to_official_vitpose(sd)
    assert "backbone.blocks.0.mlp.fc1.weight" in official and official["backbone.pos_embed"].shape[1] == 49
    model = load_topdown_weights(build_topdown_from_mmpose_meta(meta), {"state_dict": official})
    with torch.no_grad():
        raw = model(x)
    _close(raw["heatmaps"], ref["head.heatmaps"])


def test_strict_loading_reports_bad_keys():
    meta, sd, _, _ = _load("rtmpose")
    model = build_topdown_from_mmpose_meta(meta)
    bad = dict(sd)
    bad.pop("head.gau.w", None)
    bad["head.gau.extra"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="unexpected keys"):
        load_topdown_weights(model, bad)


# official sizes (MMPose model zoo / papers): parameters in millions, rounded to 0.01
PARAMS_M = {"rtmpose-t": 3.34, "rtmpose-s": 5.47, "rtmpose-m": 13.59, "rtmpose-l": 27.66,
            "simplebaseline-r50": 34.00, "vitpose-s": 24.29}


@pytest.mark.parametrize("name", sorted(PARAMS_M))
def test_preset_sizes_match_official(name):
    model = TOPDOWN_PRESETS[name]()
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(n, 2) == PARAMS_M[name]
    assert model.preset == name and model.url == TOPDOWN_URLS[name]
    assert model.url.startswith("https://download.openmmlab.com/mmpose/v1/")
    with torch.no_grad():
        raw = model.eval()(torch.zeros(1, 3, 256, 192))
    kp, sc = model.decode(raw)
    assert kp.shape == (1, 17, 2) and sc.shape == (1, 17)


def test_all_presets_registered():
    expected = {"simplebaseline-r50", "simplebaseline-r18"} | {f"vitpose-{s}" for s in "sblh"} | \
        {f"vitpose-{s}-simple" for s in "sblh"} | {f"rtmpose-{s}" for s in "tsml"}
    assert set(SINGLE_STAGE_PRESETS) == expected == set(TOPDOWN_URLS)
    assert set(TOPDOWN_PRESETS) == expected | {"cpm", "hourglass-52", "cpn-r50", "cpn-tiny"}
    vit = TOPDOWN_PRESETS["vitpose-s-simple"]()
    assert isinstance(vit.backbone, VisionTransformer) and vit.neck is not None
    assert vit.backbone.pos_embed.shape == (1, 192, 384)


def test_rtmcc_block_options():
    from posekit.models.heads.simcc import RTMCCBlock, rope
    from posekit.models.layers import GAU

    torch.manual_seed(0)
    blk = RTMCCBlock(5, 8, 8, s=4, use_rel_bias=True, pos_enc=True)
    n = 5
    bias = blk.rel_pos_bias(n)[0]
    want = torch.stack([torch.stack([blk.w[j - i + n - 1] for j in range(n)]) for i in range(n)])
    assert torch.equal(bias, want)  # Toeplitz: bias[i, j] = w[j - i + n - 1]
    # RoPE rotates each (x1_c, x2_c) pair by position * 10000**(c / half): norms are kept, position 0 unchanged
    z = torch.randn(2, n, 2, 4)
    r = rope(z, dim=1)
    assert torch.equal(r[:, 0], z[:, 0])
    torch.testing.assert_close(r[..., [0, 2]].norm(dim=-1), z[..., [0, 2]].norm(dim=-1))
    ang = 3 * 10000 ** 0.5
    torch.testing.assert_close(r[:, 3, :, 1], z[:, 3, :, 1] * np.cos(ang) - z[:, 3, :, 3] * np.sin(ang))
    # without the options the block computes exactly the shared GAU
    plain = RTMCCBlock(5, 8, 8, s=4, use_rel_bias=False, pos_enc=False)
    gau = GAU(8, 8, 2, 4)
    gau.load_state_dict(plain.state_dict())
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(plain(x), gau(x))
