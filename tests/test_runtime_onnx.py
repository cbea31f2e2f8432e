"""OnnxModel: runs, checks the file against the card, falls back to CPU, loops a fixed batch of 1."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from posekit.runtime.cards import load_card
from posekit.runtime.onnx import OnnxModel
from posekit.runtime.onnx_graph import GraphBuilder
from posekit.runtime.testing import fake_simcc


def test_graph_builder_model_runs_with_exact_values(tmp_path):
    g = GraphBuilder()
    x = g.input("input", ["n", 3, 4, 5])
    y = g.node("Add", [g.node("ReduceSum", [x, g.const([1], np.int64)], keepdims=1), g.const(np.float32(1.5))])
    g.output(y, "out", ["n", 1, 4, 5])
    f = g.save(tmp_path / "m.onnx")
    m = OnnxModel(f, threads=1)
    a = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype(np.float32)
    out = m.run(a)
    assert list(out) == ["out"]
    np.testing.assert_allclose(out["out"], a.sum(1, keepdims=True) + 1.5, rtol=1e-6, atol=1e-6)
    assert m.fixed_batch is None and m.input_shape == [None, 3, 4, 5]


def test_card_check_catches_the_wrong_file():
    human = shared_path("weights", "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx")
    OnnxModel(human, card=load_card("yolox-nano-human"))  # the right file passes
    with pytest.raises(ValueError, match="right file for the card") as e:
        OnnxModel(human, card=load_card("yolox-nano-coco"))
    assert "'images'" in str(e.value) and "'input'" in str(e.value)
    with pytest.raises(ValueError, match="input height is 416"):
        OnnxModel(human, card=load_card("rtmo-s"))  # same input name, 416 vs 640


def test_card_check_channels_and_outputs(tmp_path):
    f = tmp_path / "s.onnx"
    f.write_bytes(fake_simcc())
    card = load_card("rtmpose-s")
    OnnxModel(f, card=card)
    import dataclasses

    with pytest.raises(ValueError, match="outputs"):
        OnnxModel(f, card=dataclasses.replace(card, output_names=("simcc_x", "heatmap_y")))
    with pytest.raises(ValueError, match="channels"):
        OnnxModel(f, card=dataclasses.replace(card, input_layout="NHWC"))


def test_provider_fallback_warns_and_uses_cpu(tmp_path):
    f = tmp_path / "s.onnx"
    f.write_bytes(fake_simcc())
    with pytest.warns(UserWarning, match="NoSuchExecutionProvider"):
        m = OnnxModel(f, providers=["NoSuchExecutionProvider"])
    assert m.providers == ["CPUExecutionProvider"]


def test_fixed_batch_of_one_is_looped(tmp_path):
    from posekit.runtime.testing import fake_rtmo

    f = tmp_path / "r.onnx"
    f.write_bytes(fake_rtmo(64))
    m = OnnxModel(f)
    assert m.fixed_batch == 1
    b = np.zeros((2, 3, 64, 64), np.float32)
    b[0, :, 10, 20] = 255  # dot at x=20, y=10
    b[1, :, 40, 5] = 255   # dot at x=5, y=40
    both = m.run(b)
    assert both["dets"].shape == (2, 3, 5) and both["keypoints"].shape == (2, 3, 17, 3)
    np.testing.assert_allclose(both["keypoints"][:, 0, 8, :2], [[20, 10], [5, 40]])
    for i in range(2):
        np.testing.assert_array_equal(both["dets"][i], m.run(b[i:i + 1])["dets"][0])


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        OnnxModel(tmp_path / "none.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="cannot load"):
        OnnxModel(junk)


def test_spinning_option_sets_the_session_and_keeps_outputs():
    path = shared_path("weights", "yolox_nano_coco80_416x416.onnx")
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared absent)")
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)
    on, off = OnnxModel(path, threads=1), OnnxModel(path, threads=1, spinning=False)
    assert off.spinning is False and on.spinning is None
    assert off.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    np.testing.assert_array_equal(on.run(x)["output"], off.run(x)["output"])
