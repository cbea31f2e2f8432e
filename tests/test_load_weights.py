"""load_weights: layouts (posekit, MMPose-style, CMU flat, pytorch-openpose blocks, prefixes), strict errors."""

from __future__ import annotations

import json

import pytest
import torch

from posekit.models.presets import build_model
from posekit.models.weights import WeightsError, extract_state_dict, load_weights
from conftest import shared_path


@pytest.fixture(scope="module")
def layers():
    return json.loads(shared_path("reference", "openpose-cmu-coco", "layers.json").read_text())


@pytest.fixture(scope="module")
def cmu_flat(layers):
    """A random state_dict with CMU's flat Caffe keys (as in body_pose_model.pth), built from layers.json only."""
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for c in layers["convolutions"]:
        sd[f"{c['name']}.weight"] = torch.randn(c["out_channels"], c["in_channels"], c["kernel"], c["kernel"],
                                                generator=gen) * 0.01
        sd[f"{c['name']}.bias"] = torch.randn(c["out_channels"], generator=gen)
    return sd


@pytest.fixture(scope="module")
def cmu_model():
    return build_model("openpose-cmu-coco")


def _same(model, sd, rename=lambda k: k):
    own = model.state_dict()
    return all(torch.equal(own[rename(k)], v) for k, v in sd.items())


def test_cmu_flat_state_dict_and_file(cmu_model, cmu_flat, tmp_path):
    assert load_weights(cmu_model, cmu_flat) is cmu_model
    assert _same(cmu_model, cmu_flat)
    # The same from a .pth file, with DataParallel's 'module.' prefix.
    path = tmp_path / "body_pose_model.pth"
    torch.save({f"module.{k}": v + 1 for k, v in cmu_flat.items()}, path)
    load_weights(cmu_model, path)
    assert torch.equal(cmu_model.conv1_1.weight, cmu_flat["conv1_1.weight"] + 1)
    assert torch.equal(cmu_model.Mconv7_stage6_L2.bias, cmu_flat["Mconv7_stage6_L2.bias"] + 1)


def test_cmu_pytorch_openpose_block_layout(cmu_model, cmu_flat, layers):
    """pytorch-openpose's own module keys (``model0.conv1_1.weight``, ``model6_2.Mconv7_stage6_L2.bias``)."""
    block_of = {name: block for block, names in layers["pytorch_openpose_blocks"].items() for name in names}
    blocked = {f"{block_of[k.rsplit('.', 1)[0]]}.{k}": -v for k, v in cmu_flat.items()}
    assert "model6_2.Mconv7_stage6_L2.bias" in blocked
    load_weights(cmu_model, blocked)
    assert torch.equal(cmu_model.Mconv7_stage6_L2.bias, -cmu_flat["Mconv7_stage6_L2.bias"])
    # The CMU ONNX initialiser names ('mods.<layer>.weight').
    load_weights(cmu_model, {f"mods.{k}": v for k, v in cmu_flat.items()})
    assert _same(cmu_model, cmu_flat)


def test_checkpoint_dicts_posekit_and_mmpose(tmp_path):
    src = build_model("openpose-light")
    dst = build_model("openpose-light")
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.rand_like(p))
    sd = src.state_dict()
    assert not _same(dst, sd)
    path = tmp_path / "posekit.pt"
    torch.save({"state_dict": sd, "preset": "openpose-light", "epoch": 3}, path)
    load_weights(dst, str(path))
    assert _same(dst, sd)
    # MMPose-style: {"meta": ..., "state_dict": ...} with a data_preprocessor entry that is ignored.
    dst2 = build_model("openpose-light")
    mm = {"meta": {"mmpose_version": "1.3.2"}, "state_dict": {**sd, "data_preprocessor.mean": torch.zeros(3)}}
    load_weights(dst2, mm)
    assert _same(dst2, sd)
    # A trainer-style {"model": ...} and a model object.
    dst3 = build_model("openpose-light")
    load_weights(dst3, {"model": sd, "optimizer": {"state": {}}})
    assert _same(dst3, sd)
    assert extract_state_dict(src)[0].keys() == sd.keys()


def test_preset_mismatch_is_refused():
    model = build_model("openpose-light")
    with pytest.raises(ValueError, match="openpose-tpami"):
        load_weights(model, {"state_dict": model.state_dict(), "preset": "openpose-tpami"})


def test_strict_errors_list_keys_and_shapes(cmu_flat):
    model = build_model("openpose-light")
    sd = dict(model.state_dict())
    sd.pop("conv5_1_CPM_L1.bias")
    sd["extra_head.weight"] = torch.zeros(1)
    sd["Mconv5_stage2_L2.weight"] = torch.zeros(5, 128, 1, 1)
    with pytest.raises(WeightsError) as e:
        load_weights(model, sd)
    msg = str(e.value)
    assert "missing keys (1): conv5_1_CPM_L1.bias" in msg
    assert "unexpected keys (1): extra_head.weight" in msg
    assert "Mconv5_stage2_L2.weight: checkpoint (5, 128, 1, 1) vs model (19, 128, 1, 1)" in msg
    assert isinstance(e.value, RuntimeError)
    # The CMU weights do not fit the light model: the error lists the counts.
    with pytest.raises(WeightsError, match=r"missing keys \(\d+\).*\n.*unexpected keys \(\d+\)"):
        load_weights(model, cmu_flat)


def test_bad_sources(tmp_path):
    model = build_model("openpose-light")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_weights(model, tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        load_weights(model, bad)
    with pytest.raises(ValueError, match="no state_dict"):
        load_weights(model, {"meta": {"a": 1}, "weights": [1, 2]})
    with pytest.raises(ValueError, match="list"):
        load_weights(model, [1, 2, 3])
