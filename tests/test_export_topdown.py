"""Top-down ONNX export (posekit.export.topdown): onnxruntime reproduces PyTorch (raw outputs <= 1e-4, decoded
keypoints <= 1e-3 px) for SimCC (RTMPose), MSRA heatmaps (SimpleBaseline), UDP heatmaps with a neck (ViTPose simple
decoder) and a multi-stage model with a background channel (CPM); the card has the official RTMPose interface; the
`posekit export` CLI dispatches top-down and RTMO presets and the exported card runs through `posekit predict`."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import shared_path
from posekit.cli import main
from posekit.data.geometry import box_xyxy_to_cs, get_affine_matrix, warp_image
from posekit.export.topdown import (TopDownExportWrapper, export_topdown_onnx, topdown_card_dict,
                                    topdown_output_names, torch_outputs)
from posekit.models.topdown_presets import build_vitpose
from posekit.runtime.cards import card_from_dict, load_card
from posekit.models.presets import build_model
from posekit.runtime.torch_backend import card_fits_model

SB_TINY = dict(base_channels=16, stem_channels=16, deconv_out_channels=(32, 32, 32))
VIT_TINY = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
IMAGE = ("data", "mmpose-coco", "images", "000000000785.jpg")


def _randomise_bn(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics (fresh ones are 0 / 1)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def _reference(name: str):
    """A reduced-width MMPose reference model (../shared/reference/mmpose-tiny) with its seeded weights, and the
    exact normalised input MMPose used."""
    from posekit.models.topdown_presets import build_topdown_from_mmpose_meta, load_topdown_weights

    root = shared_path("reference", "mmpose-tiny", name)
    meta = json.loads((root / "meta.json").read_text())
    sd = torch.load(root / "state_dict.pt", weights_only=True)
    model = load_topdown_weights(build_topdown_from_mmpose_meta(meta), sd)
    return model.eval(), torch.load(root / "input.pt", weights_only=True).numpy()


def _models():
    """name -> (model, extra input batch or None)."""
    torch.manual_seed(0)
    rtm = build_model("rtmpose-t")
    for m in rtm.modules():  # a fresh CSPNeXt's features fade to ~1e-11: make the output depend on the input
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    with torch.no_grad():  # SimCC logits of a trained model's size (~10), not ~2000
        rtm.head.cls_x.weight.mul_(0.005)
        rtm.head.cls_y.weight.mul_(0.005)
    _randomise_bn(rtm, 0)
    out = {"rtmpose-t": (rtm.eval(), None)}
    for name in ("rtmpose", "simplebaseline-res18", "vitpose-simple", "cpm"):
        out[name] = _reference(name)
    bg = build_model("cpm", num_stages=2, feat_channels=16, middle_channels=8, background=True,
                      stem_channels=(16, 16, 16, 8, 32, 32), middle_widths=(16, 16, 16), input_size=(96, 128),
                      heatmap_size=(12, 16))
    _randomise_bn(bg, 1)
    out["cpm-background"] = (bg.eval(), None)
    return out


def _crops(model, n=3) -> np.ndarray:
    """``n`` real person-sized crops of the shared image, normalised as the model expects: (n, 3, H, W)."""
    img = cv2.imread(str(shared_path(*IMAGE)))
    W, H = model.input_size
    boxes = np.array([[150, 40, 420, 440], [60, 100, 300, 420], [250, 0, 600, 300]][:n], np.float64)
    c, s = box_xyxy_to_cs(boxes, aspect_ratio=W / H, padding=1.25)
    crops = np.stack([warp_image(img, get_affine_matrix(c[i], s[i], 0.0, (W, H)), (W, H)) for i in range(n)])
    return model.preprocess(crops).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("td")
    res = {}
    for name, (m, x) in _models().items():
        onnx_path, card_path = export_topdown_onnx(m, d / f"{name}.onnx")
        res[name] = (m, onnx_path, card_path, x)
    return res


@pytest.mark.parametrize("name", ["rtmpose-t", "rtmpose", "simplebaseline-res18", "vitpose-simple", "cpm",
                                  "cpm-background"])
def test_onnx_reproduces_pytorch_outputs_and_keypoints(exported, name):
    import onnxruntime as ort

    model, onnx_path, _, ref_x = exported[name]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = list(topdown_output_names(model))
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == names
    x = _crops(model, 3)
    if ref_x is not None:  # MMPose's own input for the reference weights first
        x = np.concatenate([ref_x, x[:2]])
    want = torch_outputs(model, x)
    for n in (1, 3):  # dynamic batch
        got = dict(zip(names, sess.run(names, {"input": x[:n]})))
        for k in names:
            assert got[k].shape == want[k][:n].shape
            # 1e-4 relative to the output's scale (as the parity tests): the random-weight RTMPose-t's logits
            # reach ~6, where onnxruntime and PyTorch differ by up to 1.03e-4 with one thread (float32 noise)
            scale = max(1.0, float(np.abs(want[k][:n]).max()))
            assert float(np.abs(got[k] - want[k][:n]).max()) <= 1e-4 * scale, (k, n)
    got = dict(zip(names, sess.run(names, {"input": x})))
    # the model's own decoding (codec) of both outputs: same keypoints to 1e-3 px
    if "simcc_x" in names:
        raw_t = {"pred_x": torch.from_numpy(want["simcc_x"]), "pred_y": torch.from_numpy(want["simcc_y"])}
        raw_o = {"pred_x": torch.from_numpy(got["simcc_x"]), "pred_y": torch.from_numpy(got["simcc_y"])}
    else:
        raw_t, raw_o = {"heatmaps": want["heatmaps"]}, {"heatmaps": got["heatmaps"]}
        if model.codec().background:  # the export drops the background map; the codec drops the last channel
            pad = lambda h: np.concatenate([h, np.zeros_like(h[:, :1])], 1)  # noqa: E731
            raw_t, raw_o = {"heatmaps": pad(want["heatmaps"])}, {"heatmaps": pad(got["heatmaps"])}
    kt, st = model.decode(raw_t)
    ko, so = model.decode(raw_o)
    np.testing.assert_allclose(so, st, rtol=0, atol=1e-4)
    if getattr(model.codec(), "kind", None) == "udp":
        # DARK-UDP's Taylor step divides by the map's curvature: on flat maps (random crops far from what the
        # weights were made for) it throws points hundreds of pixels out of the crop and amplifies float noise
        # there (also for these seeded reference weights). Compare where it is well-conditioned: inside the crop.
        W, H = model.input_size
        inside = (kt[..., 0] >= 0) & (kt[..., 0] <= W) & (kt[..., 1] >= 0) & (kt[..., 1] <= H)
        assert inside.mean() > 0.4, inside.mean()
        np.testing.assert_allclose(ko[inside], kt[inside], rtol=0, atol=1e-3)
    else:
        np.testing.assert_allclose(ko, kt, rtol=0, atol=1e-3)
    # and the export wrapper is the model's forward (no hidden change of the computation)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    key = "pred_x" if "simcc_x" in names else "heatmaps"
    first = want[names[0]]
    np.testing.assert_array_equal(first, ref[key][:, :first.shape[1]].numpy())


def test_rtmpose_card_matches_the_official_card(exported):
    model, onnx_path, card_path, _ = exported["rtmpose-t"]
    card = load_card(card_path)
    official = load_card("rtmpose-t")
    for field in ("kind", "input_name", "input_size", "input_layout", "color", "resize", "output_names", "schema",
                  "box_padding", "simcc"):
        assert getattr(card, field) == getattr(official, field), field
    np.testing.assert_allclose(card.mean, official.mean, atol=1e-9)
    np.testing.assert_allclose(card.std, official.std, atol=1e-9)
    assert card.weights.path == str(onnx_path)  # relative in the file, resolved next to the card
    assert yaml.safe_load(card_path.read_text())["weights"] == {"path": onnx_path.name}
    assert card_fits_model(official, model) is None


def test_heatmap_cards(exported):
    expect = {"simplebaseline-res18": (False, "N,K,32,24", (96, 128)), "vitpose-simple": (True, "N,K,32,24", (96, 128)),
              "cpm": (False, "N,K,16,12", (96, 128)), "cpm-background": (False, "N,K,16,12", (96, 128))}
    for name, (udp, layout, size) in expect.items():
        model, _, card_path, _ = exported[name]
        card = load_card(card_path)
        assert card.kind == "heatmap" and card.heatmap.udp is udp and card.schema == "coco17"
        assert card.output_names == ("heatmaps",) and card.output_layouts["heatmaps"] == layout
        assert card.input_size == size and card.color == "rgb" and card.resize == "crop"
        assert card_fits_model(card, model) is None
        # an UDP card does not fit an MSRA model and vice versa
        other = card_from_dict({**yaml.safe_load(card_path.read_text()), "heatmap": {"udp": not udp}})
        assert "udp" in card_fits_model(other, model)


def test_multi_decoder_and_errors(tmp_path):
    from posekit.codecs.heatmap import HeatmapCodec
    from posekit.models.backbones.resnet import ResNet
    from posekit.models.heads.heatmap import HeatmapHead
    from posekit.models.topdown import TopDownModel
    from posekit.schema import get_schema

    bb = ResNet(18, stem_channels=8, base_channels=8)
    codec = HeatmapCodec((96, 128), (24, 32), 2.0)
    fi = list(get_schema("coco17").flip_index)
    fi14 = list(get_schema("crowdpose14").flip_index)
    m = TopDownModel(bb, {"coco": HeatmapHead(64, 17, (16,) * 3, (4,) * 3),
                          "crowd": HeatmapHead(64, 14, (16,) * 3, (4,) * 3)},
                     {"coco": codec, "crowd": codec}, flip_index={"coco": fi, "crowd": fi14}).eval()
    path, card_path = export_topdown_onnx(m, tmp_path / "crowd.onnx", decoder="crowd")
    assert load_card(card_path).schema == "crowdpose14"
    x = np.random.default_rng(0).standard_normal((2, 3, 128, 96)).astype(np.float32)
    assert torch_outputs(m, x, "crowd")["heatmaps"].shape == (2, 14, 32, 24)
    with pytest.raises(KeyError, match="decoder"):
        TopDownExportWrapper(m)
    with pytest.raises(ValueError, match="TopDownModel"):
        export_topdown_onnx(torch.nn.Conv2d(3, 3, 1), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_topdown_onnx(m, tmp_path / "x.bin", decoder="coco")
    with pytest.raises(ValueError, match="schema"):
        topdown_card_dict(TopDownModel(bb, HeatmapHead(64, 5, (16,), (4,)), codec), "x.onnx", "x")


def test_cli_export_topdown_then_predict(tmp_path, capsys):
    torch.manual_seed(1)
    model = build_model("simplebaseline-r18", **SB_TINY).eval()
    _randomise_bn(model, 7)
    torch.save({"state_dict": model.state_dict(), "preset": "simplebaseline-r18"}, tmp_path / "sb.pth")
    out = tmp_path / "x.onnx"
    rc = main(["export", "--model", "simplebaseline-r18", "--weights", str(tmp_path / "sb.pth"), "--out", str(out),
               "--set", "base_channels=16", "--set", "stem_channels=16", "--set", "deconv_out_channels=[32,32,32]"])
    assert rc == 0 and out.is_file() and (tmp_path / "x.yaml").is_file()
    assert "wrote" in capsys.readouterr().out
    # the file holds the given weights, not a fresh model
    x = _crops(model, 2)
    import onnxruntime as ort

    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["heatmaps"], {"input": x})[0]
    np.testing.assert_allclose(got, torch_outputs(model, x)["heatmaps"], atol=1e-4, rtol=0)

    det = shared_path("weights", "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx")
    res = tmp_path / "res.json"
    rc = main(["predict", "--model", str(tmp_path / "x.yaml"), str(shared_path(*IMAGE)), "--detector",
               "yolox-nano-human", "--detector-weights", str(det), "--out-json", str(res), "--no-progress"])
    assert rc == 0
    results = json.loads(res.read_text())
    assert len(results) == 1  # YOLOX finds the one person of 000000000785 (random pose weights: garbage keypoints)
    assert len(results[0]["keypoints"]) == 51


def test_cli_export_errors_and_random_init(tmp_path, capsys):
    with pytest.raises(SystemExit):  # one of --weights / --random-init is required
        main(["export", "--model", "rtmpose-t", "--out", str(tmp_path / "a.onnx")])
    assert main(["export", "--model", "nope", "--random-init", "--out", str(tmp_path / "a.onnx")]) == 1
    assert "unknown model preset 'nope'" in capsys.readouterr().err
    assert main(["export", "--model", "rtmpose-t", "--weights", str(tmp_path / "missing.pth"),
                 "--out", str(tmp_path / "a.onnx")]) == 1
    assert "missing.pth" in capsys.readouterr().err
    torch.save(build_model("simplebaseline-r18", **SB_TINY).state_dict(), tmp_path / "sb.pth")
    assert main(["export", "--model", "rtmpose-t", "--weights", str(tmp_path / "sb.pth"),
                 "--out", str(tmp_path / "a.onnx")]) == 1  # weights of another preset
    assert "does not fit" in capsys.readouterr().err
    assert main(["export", "--model", "simplebaseline-r18", "--random-init", "--out", str(tmp_path / "t.onnx"),
                 "--set", "base_channels=8", "--set", "stem_channels=8", "--set", "deconv_out_channels=[16,16,16]",
                 "--set", "input_size=[96,128]", "--set", "heatmap_size=[24,32]"]) == 0
    assert "RANDOM weights" in capsys.readouterr().err
    card = load_card(tmp_path / "t.yaml")
    assert card.kind == "heatmap" and card.input_size == (96, 128) and card.output_layouts == {"heatmaps": "N,K,32,24"}
    assert main(["export", "--model", "simplebaseline-r18", "--random-init", "--out", str(tmp_path / "u.onnx"),
                 "--input-size", "100x100"]) == 1
    assert "--set input_size" in capsys.readouterr().err


def test_cli_export_dispatches_rtmo(tmp_path):
    over = ["--set", "widen_factor=0.125", "--set", "neck_widen_factor=0.125", "--set", "hidden_dim=32",
            "--set", "num_heads=2", "--set", "feedforward_channels=64", "--set", "neck_out_channels=32",
            "--set", "head_in_channels=128", "--set", "head_widen_factor=0.125", "--set", "cls_feat_channels=128",
            "--set", "pose_vec_channels=32", "--set", "dcc_feat_channels=16", "--set", "num_bins=[24,32]",
            "--set", "spe_channels=16", "--set", "gau_s=16"]
    assert main(["export", "--model", "rtmo-s", "--random-init", "--input-size", "160x160",
                 "--out", str(tmp_path / "r.onnx"), *over]) == 0
    card = load_card(tmp_path / "r.yaml")
    assert card.kind == "rtmo" and card.input_size == (160, 160) and card.nms_inside
