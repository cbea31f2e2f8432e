"""CSPDarknet from a YOLOX ONNX export: the depthwise (nano) layout, exact weights from the folded convolutions,
clear errors for the wrong file or backbone, and BatchNorm recalibration that keeps the eval-mode function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posekit.models.backbones.cspdarknet import CSPDarknet
from posekit.models.backbones.yolox_onnx import (YOLOX_NANO, conv_modules_in_run_order, load_cspdarknet_from_onnx,
                                                 recalibrate_folded_batchnorm)
from posekit.models.layers import DepthwiseSeparableConvModule

from conftest import shared_path

HUMANART = ("weights", "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx")
MEGVII = ("weights", "yolox_nano_coco80_416x416.onnx")


def test_depthwise_layout_is_yolox_nano():
    bb = CSPDarknet(**YOLOX_NANO)
    assert isinstance(bb.stage1[0], DepthwiseSeparableConvModule)           # stage downsampling
    assert bb.stage1[0].depthwise_conv.conv.stride == (2, 2)
    assert isinstance(bb.stage2[1].blocks[0].conv2, DepthwiseSeparableConvModule)  # bottleneck 3x3
    assert not isinstance(bb.stem.conv, DepthwiseSeparableConvModule)      # Focus and SPP stay plain
    assert bb.out_channels == [64, 128, 256]
    out = bb(torch.zeros(1, 3, 64, 96))
    assert [tuple(o.shape[2:]) for o in out] == [(8, 12), (4, 6), (2, 3)]


def test_humanart_detector_backbone_loads_exactly():
    bb = CSPDarknet(**YOLOX_NANO)
    rep = load_cspdarknet_from_onnx(bb, shared_path(*HUMANART))
    assert rep["convs"] == 47
    # onnxruntime on the file's own graph vs the loaded backbone, 416 x 416 random image, three outputs
    assert rep["max_rel_diff"] <= 1e-5, rep
    bn = bb.stem.conv.bn
    assert float(bn.weight.detach().min()) == 1.0 and float(bn.running_mean.abs().max()) == 0.0


def test_wrong_file_or_backbone_is_a_clear_error(tmp_path):
    # Megvii's export: same shapes, but each CSP layer's two 1x1 convs in the other order -> caught by the check
    with pytest.raises(ValueError, match="not in MMDetection's CSPDarknet order"):
        load_cspdarknet_from_onnx(CSPDarknet(**YOLOX_NANO), shared_path(*MEGVII))
    with pytest.raises(ValueError, match=r"conv 0 .*expects \(\(32, 12, 3, 3\)"):
        load_cspdarknet_from_onnx(CSPDarknet(0.33, 0.5), shared_path(*HUMANART))
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match="x.onnx"):
        load_cspdarknet_from_onnx(CSPDarknet(**YOLOX_NANO), bad)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        load_cspdarknet_from_onnx(CSPDarknet(**YOLOX_NANO), tmp_path / "missing.onnx")


def test_recalibration_keeps_the_function_and_matches_batch_statistics():
    torch.manual_seed(0)
    bb = CSPDarknet(**YOLOX_NANO)
    load_cspdarknet_from_onnx(bb, shared_path(*HUMANART), verify=False)
    x = torch.rand(4, 3, 96, 64) * 255
    bb.eval()
    with torch.no_grad():
        ref = bb(x)
    mods = conv_modules_in_run_order(bb)
    assert recalibrate_folded_batchnorm(bb, mods, [x[:2], x[2:]]) == 4
    assert float(mods[5].bn.running_var.min()) != pytest.approx(1.0 - mods[5].bn.eps)
    with torch.no_grad():
        after = bb(x)
        bb.train()
        train_mode = bb(x)  # batch statistics of the calibration images == the stored ones
    bb.eval()
    for r, a, t in zip(ref, after, train_mode):
        scale = float(r.abs().max())
        assert float((a - r).abs().max()) <= 1e-4 * scale
        assert float((t - r).abs().max()) <= 1e-3 * scale
    with pytest.raises(ValueError, match="at least one batch"):
        recalibrate_folded_batchnorm(bb, mods, [])


def test_rtmo_task_starts_from_the_detector_backbone(tmp_path):
    from posekit.data.synthetic import make_synthetic_dataset
    from posekit.training.config import load_config
    from posekit.training.tasks.rtmo import RTMOTask

    ann = make_synthetic_dataset(tmp_path / "d", num_images=6, size=(64, 96), seed=0)
    base = [f"data.train_ann={ann}", f"data.train_images={tmp_path / 'd' / 'images'}", "data.input_size=[64,96]",
            "model.name=rtmo-s", "task=rtmo"]
    tiny = ("model.overrides={widen_factor: 0.25, deepen_factor: 0.33, backbone_use_depthwise: true, "
            "neck_widen_factor: 0.125, hidden_dim: 32, num_heads: 2, feedforward_channels: 64, "
            "neck_out_channels: 32, head_in_channels: 128, head_widen_factor: 0.125, cls_feat_channels: 32, "
            "pose_vec_channels: 32, dcc_feat_channels: 16, num_bins: [24, 32], spe_channels: 16, gau_s: 16}")
    cfg = load_config(None, base + [tiny, f"task_options.backbone_onnx={shared_path(*HUMANART)}",
                                    "task_options.bn_calibration_images=4"])
    task = RTMOTask()
    task.build_datasets(cfg)
    model = task.build_model(cfg)
    fresh = CSPDarknet(**YOLOX_NANO)
    load_cspdarknet_from_onnx(fresh, shared_path(*HUMANART), verify=False)
    x = torch.rand(2, 3, 96, 64) * 255
    model.eval()
    fresh.eval()
    with torch.no_grad():
        for a, b in zip(model.backbone(x), fresh(x)):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4 * float(b.abs().max()))
    assert float(model.backbone.stem.conv.bn.running_var.max()) > 1.5  # recalibrated on the 4 images
    with pytest.raises(ValueError, match="bn_calibration_images"):
        RTMOTask().build_datasets(load_config(None, base + ["task_options.bn_calibration_images=0"]))
