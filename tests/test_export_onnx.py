"""ONNX export of OpenPose models: maps parity with PyTorch, the model card, and PoseEstimator on the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from posekit.export.onnx import export_openpose_onnx, torch_maps  # noqa: E402
from posekit.models.checkpoints import load_openpose_checkpoint  # noqa: E402
from posekit.pipelines.bottomup import torch_paf_pipeline  # noqa: E402
from posekit.models.presets import build_model  # noqa: E402
from posekit.runtime.cards import load_card  # noqa: E402

SMALL = dict(width=0.35, feature_channels=32, stage_width=32, stage_mid=64)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("openpose-light", **SMALL)
    # non-trivial BatchNorm statistics, so that eval-mode folding is exercised
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _model()
    out = tmp_path_factory.mktemp("export") / "light.onnx"
    onnx_path, card_path = export_openpose_onnx(model, out, input_size=(96, 80),
                                                params={"upsample": 2, "peak_threshold": 0.1, "min_parts": 3})
    return model, onnx_path, card_path


@pytest.mark.parametrize("hw", [(80, 96), (64, 64), (101, 75)])
def test_onnx_maps_match_pytorch_with_dynamic_sizes(exported, hw):
    model, onnx_path, _ = exported
    h, w = hw
    x = np.random.default_rng(h * w).uniform(0, 255, (2, 3, h, w)).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(["maps"], {"image": x})[0]
    want = torch_maps(model, x)
    assert got.shape == (2, 19 + 38, -(-h // 8), -(-w // 8))
    assert np.abs(got - want).max() <= 1e-4
    # the graph takes raw pixels: its output equals the model on the normalised input
    with torch.no_grad():
        raw = model((torch.from_numpy(x) - 128.0) / 256.0)
    np.testing.assert_allclose(want[:, :19], raw["heatmaps"].numpy(), atol=1e-5)
    np.testing.assert_allclose(want[:, 19:], raw["pafs"].numpy(), atol=1e-5)


def test_card_describes_the_file(exported):
    model, onnx_path, card_path = exported
    assert card_path == onnx_path.with_suffix(".yaml")
    card = load_card(str(card_path))
    assert card.kind == "paf"
    assert card.input_name == "image" and card.input_layout == "NCHW" and card.color == "bgr"
    assert card.mean == (0.0, 0.0, 0.0) and card.std == (1.0, 1.0, 1.0)
    assert card.input_size == (96, 80) and card.resize == "keep-aspect-height"
    assert card.output_names == ("maps",)
    spec = card.paf
    assert [tuple(l) for l in spec.limbs] == [tuple(l) for l in model.codec.limbs]
    assert [tuple(c) for c in spec.paf_channels] == [tuple(c) for c in model.codec.paf_channels]
    assert tuple(spec.heatmap_channels) == (0, 19) and spec.paf_offset == 19 and spec.stride == 8
    assert list(spec.to_coco17) == [0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10]
    assert dict(spec.params) == {"upsample": 2, "peak_threshold": 0.1, "min_parts": 3}


def test_pose_estimator_on_exported_file_matches_pytorch_pipeline(exported):
    pipelines = pytest.importorskip("posekit.pipelines.estimator")
    model, onnx_path, card_path = exported
    est = pipelines.PoseEstimator(str(card_path))
    ref = torch_paf_pipeline(model, est.pipeline.params)
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (75, 101, 3), dtype=np.uint8)
    # both runtimes see the same network input and give the same maps
    maps_onnx, size_onnx = est.pipeline.network_maps(img)
    maps_torch, size_torch = ref.network_maps(img)
    assert size_onnx == size_torch == (104, 80)  # height 80, width 80 * 101 / 75 rounded to 8
    assert np.abs(maps_onnx - maps_torch).max() <= 1e-4
    # same people (a random network finds few; the trained-model comparison is in test_openpose_training.py)
    a, b = est(img), ref(img)
    assert len(a) == len(b)
    for p, q in zip(a, b):
        np.testing.assert_allclose(p.keypoints, q.keypoints, atol=1e-3)


def test_load_checkpoint_formats(tmp_path):
    model = _model(2)
    sd = model.state_dict()
    torch.save(sd, tmp_path / "plain.pt")
    torch.save({"model": sd, "ema": None, "config": {"model": {"name": "openpose-light", "overrides": SMALL}}},
               tmp_path / "train.pt")
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 48, 40)).astype(np.float32)
    want = torch_maps(model, x)
    for path, over in ((tmp_path / "plain.pt", SMALL), (tmp_path / "train.pt", None)):
        loaded = load_openpose_checkpoint("openpose-light", path, over)
        np.testing.assert_array_equal(torch_maps(loaded, x), want)
    with pytest.raises(ValueError, match="do not fit preset"):
        load_openpose_checkpoint("openpose-light", tmp_path / "plain.pt", {})
    with pytest.raises(ValueError, match="trained as model"):
        load_openpose_checkpoint("openpose-cmu-coco", tmp_path / "train.pt")
    with pytest.raises(FileNotFoundError):
        load_openpose_checkpoint("openpose-light", tmp_path / "missing.pt")


def test_cli_export(tmp_path, capsys):
    from posekit.cli import main

    model = _model(4)
    torch.save({"model": model.state_dict(), "ema": None,
                "config": {"task": "openpose", "model": {"name": "openpose-light", "overrides": SMALL},
                           "data": {"input_size": [64, 48]}}}, tmp_path / "best.pt")
    out = tmp_path / "out" / "m.onnx"
    rc = main(["export", "--model", "openpose-light", "--weights", str(tmp_path / "best.pt"), "--out", str(out)])
    assert rc == 0 and out.is_file() and out.with_suffix(".yaml").is_file()
    card = load_card(str(out.with_suffix(".yaml")))
    assert card.input_size == (64, 48)
    assert card.paf.params["upsample"] == 2  # the training task's evaluation settings
    x = np.random.default_rng(1).uniform(0, 255, (1, 3, 48, 64)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert np.abs(got - torch_maps(model, x)).max() <= 1e-4
    # bad input: one error line, exit code 1
    rc = main(["export", "--model", "openpose-light", "--weights", str(tmp_path / "nope.pt"), "--out", str(out)])
    assert rc == 1 and "weights file not found" in capsys.readouterr().err
    rc = main(["export", "--model", "no-such", "--weights", str(tmp_path / "best.pt"), "--out", str(out)])
    assert rc == 1 and "unknown model preset" in capsys.readouterr().err
