"""The PyTorch backend (posekit.runtime.torch_backend + PoseEstimator's backend choice): a .pth runs the preset of
the card's name through the family's export wrapper and the unchanged pipelines, and gives the same people as the
exported ONNX file (through its own card and through the official built-in card): top-down with ground-truth boxes
and with the YOLOX detector, flip test, batching; OpenPose (PAF) and RTMO; cards generated for presets without a
built-in card; clear errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import shared_path
from posekit.cli import main
from posekit.pipelines.estimator import PoseEstimator
from posekit.runtime.cards import load_card
from posekit.models.checkpoints import load_preset, model_family, preset_family
from posekit.models.presets import build_model
from posekit.runtime.torch_backend import TorchModel, card_for_model

DATA = ("data", "mmpose-coco")
SB_TINY = {"base_channels": 8, "stem_channels": 8, "deconv_out_channels": [16, 16, 16]}


def _det():
    return str(shared_path("weights", "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx"))


def _image_and_gt_boxes(stem="000000196141"):
    """An mmpose-coco image and its non-crowd ground-truth person boxes (xyxy)."""
    root = shared_path(*DATA)
    data = json.loads((root / "person_keypoints.json").read_text())
    im = next(i for i in data["images"] if i["file_name"].startswith(stem))
    boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
             for a in data["annotations"] if a["image_id"] == im["id"] and not a.get("iscrowd", 0)]
    return cv2.imread(str(root / "images" / im["file_name"])), np.array(boxes, np.float32)


def _randomise_bn(model, seed):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def _liven(model):
    """Kaiming-normal convolutions and linear layers: a fresh CSPNeXt's features fade to ~1e-11 through its depth,
    so a randomly initialised RTMPose gives the same output for every crop; this one depends on its input."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    with torch.no_grad():  # SimCC logits of a trained model's size (~10), not ~2000
        model.head.cls_x.weight.mul_(0.005)
        model.head.cls_y.weight.mul_(0.005)
    return model


def _same_people(a, b, tol=1e-3):
    """Same people (paired by box: random weights can give near-equal instance scores in any order)."""
    assert len(a) == len(b) > 0
    for p in a:
        q = min(b, key=lambda r: float(np.abs(r.box - p.box).max()))
        np.testing.assert_allclose(p.box, q.box, rtol=0, atol=tol)
        np.testing.assert_allclose(p.keypoints[:, :2], q.keypoints[:, :2], rtol=0, atol=tol)
        np.testing.assert_allclose(p.keypoints[:, 2], q.keypoints[:, 2], rtol=1e-5, atol=1e-4)
        assert abs(p.score - q.score) <= 1e-5 * max(1.0, abs(q.score))


# ------------------------------------------------------------------------------------------ the runner
def test_torch_model_interface():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return y, y.mean((2, 3))

    torch.manual_seed(0)
    net = Two()
    r = TorchModel(net, "input", ["maps", "pooled"])
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 6)).astype(np.float32)
    out = r.run(x)
    assert list(out) == ["maps", "pooled"] and out["maps"].shape == (5, 4, 8, 6) and out["maps"].dtype == np.float32
    with torch.no_grad():
        np.testing.assert_array_equal(out["pooled"], net(torch.from_numpy(x))[1].numpy())
    chunked = TorchModel(net, "input", ["maps", "pooled"], max_batch=2).run(x, ["pooled"])
    assert list(chunked) == ["pooled"]
    np.testing.assert_allclose(chunked["pooled"], out["pooled"], atol=1e-6, rtol=0)
    assert r.fixed_batch is None and r.input_name == "input" and r.providers == ["torch:cpu"]
    with pytest.raises(KeyError, match="no outputs"):
        r.run(x, ["nope"])
    with pytest.raises(RuntimeError, match="returned 2 outputs"):
        TorchModel(net, "input", ["only"]).run(x)
    with pytest.raises(ValueError, match="nn.Module"):
        TorchModel(lambda b: b)
    card = load_card("rtmpose-t")
    with pytest.raises(ValueError, match="reads outputs"):
        r.check(card)
    with pytest.raises(ValueError, match="expects input"):
        TorchModel(net, "image", ["simcc_x", "simcc_y"]).check(card)


def test_families():
    assert preset_family("rtmpose-m") == "topdown" and preset_family("vitpose-b") == "topdown"
    assert preset_family("rtmo-s") == "rtmo" and preset_family("openpose-light") == "openpose"
    assert preset_family("cpm") == "topdown"  # multi-stage top-down presets come through their own builders
    with pytest.raises(KeyError, match="unknown model preset"):
        preset_family("tfpose-mnv2")
    assert model_family(build_model("simplebaseline-r18", **SB_TINY)) == "topdown"
    with pytest.raises(ValueError, match="not a posekit"):
        model_family(torch.nn.Conv2d(1, 1, 1))


# ------------------------------------------------------------------------------------------ top-down
@pytest.fixture(scope="module")
def rtmpose(tmp_path_factory):
    """rtmpose-t with random weights, saved as a .pth, and its ONNX export (+ card)."""
    from posekit.export.topdown import export_topdown_onnx

    d = tmp_path_factory.mktemp("rtm")
    torch.manual_seed(0)
    m = _liven(build_model("rtmpose-t")).eval()
    torch.save(m.state_dict(), d / "rtmpose-t.pth")
    onnx_path, card_path = export_topdown_onnx(m, d / "exported.onnx")
    return d / "rtmpose-t.pth", onnx_path, card_path


@pytest.fixture(scope="module")
def estimators(rtmpose):
    """flip -> (torch backend, posekit export through its card, the export through the official card)."""
    pth, onnx_path, card_path = rtmpose
    out = {}
    for flip in (False, True):
        kw = dict(detector_weights=_det(), flip_test=flip, threads=1)  # 1 thread: OpenMP spin-waits on a busy CPU
        out[flip] = (PoseEstimator("rtmpose-t", weights=pth, **kw), PoseEstimator(str(card_path), **kw),
                     PoseEstimator("rtmpose-t", weights=onnx_path, **kw))
    return out


@pytest.mark.parametrize("flip", [False, True])
def test_topdown_torch_equals_onnx_gt_boxes(estimators, flip):
    img, boxes = _image_and_gt_boxes()
    assert len(boxes) >= 4
    boxes = boxes[:3]
    torch_est, exported, official = estimators[flip]
    assert torch_est.backend == "torch" and isinstance(torch_est.model, TorchModel)
    assert torch_est.card.source.endswith("rtmpose-t.yaml")  # the built-in card fits the preset: it is used
    assert exported.backend == official.backend == "onnx"
    a = torch_est(img, boxes=boxes)
    _same_people(a, exported(img, boxes=boxes))
    _same_people(a, official(img, boxes=boxes))
    # batching: all crops in one forward == one crop at a time (torch with flip, ONNX without)
    for est in ((torch_est,) if flip else (exported,)):
        together = est.pipeline.predict_boxes(img, boxes)
        alone = [est.pipeline.predict_boxes(img, boxes[i:i + 1])[0] for i in range(len(boxes))]
        _same_people(together, alone, tol=1e-4)


def test_topdown_flip_changes_results_and_matches_model_flip(estimators):
    """The pipeline's flip test on the torch backend is the model's own forward_flip (MMPose's flip test)."""
    from posekit.data.geometry import apply_affine, invert_affine
    from posekit.runtime.preprocess import prepare_crops

    img, boxes = _image_and_gt_boxes()
    est, plain = estimators[True][0], estimators[False][0]
    got = est.pipeline.predict_boxes(img, boxes[:1])[0]
    assert np.abs(got.keypoints[:, 2] - plain.pipeline.predict_boxes(img, boxes[:1])[0].keypoints[:, 2]).max() > 1e-3
    batch, Ms = prepare_crops(img, boxes[:1], est.card)
    with torch.no_grad():
        raw = est.torch_model.forward_flip(torch.from_numpy(batch))
    sx, sy = raw["pred_x"].numpy(), raw["pred_y"].numpy()
    locs = np.stack([sx.argmax(-1), sy.argmax(-1)], -1) / 2.0
    np.testing.assert_allclose(got.keypoints[:, :2], apply_affine(locs[0], invert_affine(Ms[0])), atol=1e-3)
    np.testing.assert_allclose(got.keypoints[:, 2], np.minimum(sx.max(-1), sy.max(-1))[0], rtol=1e-5)


def test_topdown_torch_equals_onnx_with_yolox(estimators):
    img, _ = _image_and_gt_boxes()
    torch_est, exported, _ = estimators[False]
    a = torch_est(img)
    assert len(a) >= 3  # YOLOX finds the people of 000000196141; random pose weights put keypoints anywhere
    _same_people(a, exported(img))


def test_preset_without_builtin_card_gets_a_generated_card(tmp_path):
    """simplebaseline-r18 (no built-in card) from a posekit training checkpoint with saved overrides (and EMA)."""
    from posekit.export.topdown import export_topdown_onnx

    torch.manual_seed(3)
    m = build_model("simplebaseline-r18", **{k: tuple(v) if isinstance(v, list) else v
                                               for k, v in SB_TINY.items()}).eval()
    _randomise_bn(m, 3)
    raw = {k: v + 1.0 if v.is_floating_point() else v for k, v in m.state_dict().items()}  # "raw" != EMA weights
    ckpt = {"model": raw, "ema": {"module": m.state_dict()},
            "config": {"model": {"name": "simplebaseline-r18", "overrides": SB_TINY}}}
    torch.save(ckpt, tmp_path / "best.pt")
    onnx_path, card_path = export_topdown_onnx(m, tmp_path / "sb.onnx")
    img, boxes = _image_and_gt_boxes()
    est = PoseEstimator("simplebaseline-r18", weights=tmp_path / "best.pt", detector_weights=_det())
    assert est.backend == "torch" and est.card.source.startswith("<card generated")
    gen, exp = est.card, load_card(card_path)
    for f in ("kind", "input_name", "input_size", "color", "mean", "std", "resize", "output_names", "schema",
              "heatmap", "box_padding"):
        assert getattr(gen, f) == getattr(exp, f), f
    _same_people(est(img, boxes=boxes), PoseEstimator(str(card_path), detector_weights=_det())(img, boxes=boxes))
    # an nn.Module runs as it is, with the same card
    direct = PoseEstimator(m, detector_weights=_det())
    assert direct.card.name == "simplebaseline-r18" and direct.torch_model is m
    _same_people(direct(img, boxes=boxes), est(img, boxes=boxes))


# ------------------------------------------------------------------------------------------ OpenPose / RTMO
def test_openpose_torch_equals_exported_onnx(tmp_path):
    small = dict(width=0.35, feature_channels=32, stage_width=32, stage_mid=64)
    torch.manual_seed(0)
    m = build_model("openpose-light", **small).eval()
    _randomise_bn(m, 5)
    ckpt = {"model": m.state_dict(), "ema": None,
            "config": {"task": "openpose", "model": {"name": "openpose-light", "overrides": small},
                       "data": {"input_size": [160, 160]}}}
    torch.save(ckpt, tmp_path / "best.pt")
    assert main(["export", "--model", "openpose-light", "--weights", str(tmp_path / "best.pt"),
                 "--out", str(tmp_path / "op.onnx")]) == 0
    est = PoseEstimator("openpose-light", weights=tmp_path / "best.pt")
    assert est.backend == "torch" and est.card.kind == "paf"
    exported = yaml.safe_load((tmp_path / "op.yaml").read_text())
    generated = card_for_model(m, "op", input_size=(160, 160), paf_params=None)
    assert est.card.paf.params == exported["paf"]["params"]  # the checkpoint's association settings, as export
    assert est.card.input_size == tuple(exported["input"]["size"]) == (160, 160)
    assert generated.paf.limbs == est.card.paf.limbs
    onnx_est = PoseEstimator(str(tmp_path / "op.yaml"))
    img = cv2.imread(str(shared_path(*DATA, "images", "000000196141.jpg")))
    a, b = est(img), onnx_est(img)
    assert len(a) == len(b)
    for p, q in zip(a, b):
        np.testing.assert_allclose(p.keypoints, q.keypoints, rtol=0, atol=1e-3)
    # the network outputs themselves
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 96, 128)).astype(np.float32)
    np.testing.assert_allclose(est.model.run(x)["maps"], onnx_est.model.run(x)["maps"], rtol=0, atol=1e-4)


def test_rtmo_torch_equals_onnx_through_the_official_card(tmp_path):
    """rtmo-s (reduced width: the seeded MMPose reference weights of ../shared/reference/mmpose-tiny/rtmo) from a
    posekit checkpoint, and the same weights exported at 640, both run through the built-in ``rtmo-s`` card."""
    import dataclasses

    from posekit.export.rtmo import export_rtmo_onnx
    from posekit.models.rtmo import RTMO_PRESETS, build_rtmo_from_mmpose_meta

    root = shared_path("reference", "mmpose-tiny", "rtmo")
    m = build_rtmo_from_mmpose_meta(json.loads((root / "meta.json").read_text())).eval()
    m.load_mmpose_checkpoint(torch.load(root / "state_dict.pt", weights_only=True))
    base = RTMO_PRESETS["rtmo-s"]
    over = {f.name: getattr(m.config, f.name) for f in dataclasses.fields(m.config)
            if f.name not in ("url", "alt_urls") and getattr(m.config, f.name) != getattr(base, f.name)}
    over = {k: list(v) if isinstance(v, tuple) else v for k, v in over.items()}
    torch.save({"model": m.state_dict(), "config": {"model": {"name": "rtmo-s", "overrides": over}}},
               tmp_path / "rtmo.pt")
    onnx_path, _ = export_rtmo_onnx(m, tmp_path / "rtmo640.onnx", (640, 640), write_card=False, check=False)
    est = PoseEstimator("rtmo-s", weights=tmp_path / "rtmo.pt")
    assert est.backend == "torch" and est.card.source.endswith("rtmo-s.yaml")
    img = cv2.imread(str(shared_path(*DATA, "images", "000000196141.jpg")))
    a = est(img)
    b = PoseEstimator("rtmo-s", weights=onnx_path)(img)
    assert len(a) == len(b) > 10
    for p, q in zip(a, b):
        assert abs(p.score - q.score) <= 1e-5
        # boxes come from exp() of the regression: float noise is relative (a 300 px side moves by ~6e-3 px)
        np.testing.assert_allclose(p.box, q.box, rtol=1e-4, atol=1e-3)
    # The DCC scales keypoint offsets by the box's shape: these untrained weights also give boxes < 1 px wide and
    # 400 px high, where float noise becomes pixels. Compare the keypoints of the well-shaped people.
    w = np.array([p.box[2] - p.box[0] for p in a])
    h = np.array([p.box[3] - p.box[1] for p in a])
    ok = (np.minimum(w, h) >= 8) & (np.maximum(w, h) <= 4 * np.minimum(w, h))
    assert ok.sum() >= 5
    kd = max(float(np.abs(p.keypoints - q.keypoints).max()) for p, q, k in zip(a, b, ok) if k)
    assert kd <= 2e-2, kd  # measured: 1e-3 .. 1e-2 px (run-to-run thread scheduling changes the float noise)


# ------------------------------------------------------------------------------------------ rules and errors
def test_backend_rules_and_errors(rtmpose, tmp_path):
    pth, onnx_path, card_path = rtmpose
    det = dict(detector_weights=_det())
    with pytest.raises(ValueError, match="backend='onnx' cannot run"):
        PoseEstimator("rtmpose-t", weights=pth, backend="onnx", **det)
    with pytest.raises(ValueError, match="needs weights"):
        PoseEstimator("rtmpose-t", backend="torch", **det)
    with pytest.raises(ValueError, match="cannot run the ONNX file"):
        PoseEstimator("rtmpose-t", weights=onnx_path, backend="torch", **det)
    with pytest.raises(ValueError, match="backend must be"):
        PoseEstimator("rtmpose-t", backend="tensorrt")
    with pytest.raises(KeyError, match="preset of the same name"):
        PoseEstimator(str(card_path), weights=pth, **det)  # card 'exported' is no preset
    with pytest.raises(KeyError, match="unknown model card"):
        PoseEstimator("simplebaseline-r18", **det)  # no card, no weights: nothing to run
    with pytest.raises(FileNotFoundError):
        PoseEstimator("rtmpose-t", weights=tmp_path / "missing.pth", **det)
    # weights of another preset: a strict load error that names the keys
    torch.save(build_model("simplebaseline-r18", **{k: tuple(v) if isinstance(v, list) else v
                                                     for k, v in SB_TINY.items()}).state_dict(), tmp_path / "sb.pth")
    with pytest.raises(RuntimeError, match="missing keys"):
        PoseEstimator("rtmpose-t", weights=tmp_path / "sb.pth", **det)
    # a card given by path must fit the PyTorch model
    bad = yaml.safe_load((card_path.parent / "exported.yaml").read_text())
    bad.update(name="rtmpose-t")
    bad["input"]["color"] = "bgr"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="does not fit the PyTorch model"):
        PoseEstimator(str(tmp_path / "bad.yaml"), weights=pth, **det)
    # the same card with the right colour order is used as given
    bad["input"]["color"] = "rgb"
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(bad))
    est = PoseEstimator(str(tmp_path / "good.yaml"), weights=pth, **det)
    assert est.card.source == str(tmp_path / "good.yaml") and est.backend == "torch"
    model = load_preset("rtmpose-t", pth)
    assert not model.training and model.preset == "rtmpose-t"


def test_cli_predict_runs_a_pth(rtmpose, tmp_path, capsys):
    pth, _, _ = rtmpose
    img = shared_path(*DATA, "images", "000000196141.jpg")
    rc = main(["predict", str(img), "--model", "rtmpose-t", "--weights", str(pth), "--detector-weights", _det(),
               "--out-json", str(tmp_path / "r.json"), "--no-progress"])
    assert rc == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert len(res) >= 3 and all(len(r["keypoints"]) == 51 for r in res)


def test_training_checkpoints_run_at_their_training_input_size(tmp_path):
    """A posekit training checkpoint rebuilds the model it was trained as: a top-down model trained on 64x64 crops
    (the task sets input_size and heatmap_size from data.input_size) and an RTMO trained at 256x192 run at those
    sizes, not at the preset's or the built-in card's (rtmo-t's card is 416x416)."""
    from posekit.models.checkpoints import trained_overrides

    torch.manual_seed(0)
    sb = build_model("simplebaseline-r18", base_channels=8, stem_channels=8, deconv_out_channels=(16, 16, 16),
                     input_size=(64, 64), heatmap_size=(16, 16))
    cfg = {"task": "topdown", "model": {"name": "simplebaseline-r18", "overrides": SB_TINY},
           "data": {"input_size": [64, 64]}}
    torch.save({"model": sb.state_dict(), "ema": None, "config": cfg}, tmp_path / "sb.pt")
    assert trained_overrides("simplebaseline-r18", tmp_path / "sb.pt")["heatmap_size"] == (16, 16)
    est = PoseEstimator("simplebaseline-r18", weights=tmp_path / "sb.pt", detector=lambda im: (
        np.array([[10, 10, 90, 150]], np.float32), np.array([0.9], np.float32)))
    assert tuple(est.card.input_size) == (64, 64) and est.backend == "torch"
    people = est(np.full((200, 120, 3), 90, np.uint8))
    assert len(people) == 1 and people[0].keypoints.shape == (17, 3)

    tiny = {"widen_factor": 0.125, "neck_widen_factor": 0.125, "hidden_dim": 32, "num_heads": 2,
            "feedforward_channels": 64, "neck_out_channels": 32, "head_in_channels": 128, "head_widen_factor": 0.125,
            "cls_feat_channels": 128, "pose_vec_channels": 32, "dcc_feat_channels": 16, "num_bins": [24, 32],
            "spe_channels": 16, "gau_s": 16}
    rtmo = build_model("rtmo-t", **{k: tuple(v) if isinstance(v, list) else v for k, v in tiny.items()},
                       input_size=(256, 192))
    torch.save({"model": rtmo.state_dict(), "ema": None,
                "config": {"task": "rtmo", "model": {"name": "rtmo-t", "overrides": tiny},
                           "data": {"input_size": [256, 192]}}}, tmp_path / "rtmo.pt")
    assert tuple(load_card("rtmo-t").input_size) != (256, 192)
    est = PoseEstimator("rtmo-t", weights=tmp_path / "rtmo.pt")
    assert tuple(est.card.input_size) == (256, 192)
    with pytest.raises(ValueError, match="trained as model 'rtmo-t', not 'rtmo-s'"):
        load_preset("rtmo-s", tmp_path / "rtmo.pt")
