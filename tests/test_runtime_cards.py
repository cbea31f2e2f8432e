"""Model cards: built-ins load with the official URLs, every bad field gives an error naming file and field."""

from __future__ import annotations

import copy

import pytest
import yaml

from posekit.runtime.cards import card_from_dict, list_cards, load_card

RTMO = "https://download.openmmlab.com/mmpose/v1/projects/rtmo/onnx_sdk/"
POSE = "https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/onnx_sdk/"


def test_builtin_cards_load_and_have_expected_interfaces():
    names = list_cards()
    for n in ["tfpose-mnv2", "yolox-nano-human", "yolox-nano-coco"] + [f"rtmo-{s}" for s in "tsml"] + [
            f"rtmpose-{s}" for s in "tsml"]:
        assert n in names
        card = load_card(n)
        assert card.name == n
    assert load_card("rtmo-t").input_size == (416, 416)
    for s in "sml":
        c = load_card(f"rtmo-{s}")
        assert c.input_size == (640, 640) and c.output_names == ("dets", "keypoints")
        assert (c.score_thr, c.nms_thr, c.resize, c.pad_value, c.color) == (0.1, 0.65, "letterbox", 114.0, "bgr")
        assert c.weights.url.startswith(RTMO) and c.weights.url.endswith(".zip")
    assert load_card("rtmo-l").weights.url == RTMO + "rtmo-l_16xb16-600e_body7-640x640-b37118ce_20231211.zip"
    for s, h in zip("tsml", ["026a1439", "acd4a1ef", "e48f03d0", "4dba18fc"]):
        c = load_card(f"rtmpose-{s}")
        assert c.weights.url == POSE + f"rtmpose-{s}_simcc-body7_pt-body7_420e-256x192-{h}_20230504.zip"
        assert c.input_size == (192, 256) and c.simcc.split_ratio == 2.0 and c.box_padding == 1.25
        assert c.mean == (123.675, 116.28, 103.53) and c.std == (58.395, 57.12, 57.375)
    tf = load_card("tfpose-mnv2")
    assert tf.input_layout == "NHWC" and tf.weights.url is None
    assert tf.paf.limbs[0] == (1, 2) and tf.paf.paf_channels[-1] == (26, 27) and len(tf.paf.limbs) == 19
    assert load_card("yolox-nano-coco").detector.decode == "yolox-raw"
    assert load_card("yolox-nano-human").nms_inside


def _base():
    return yaml.safe_load(open(load_card("rtmo-s").source))


@pytest.mark.parametrize("path,value,field", [
    (("kind",), "blob", "kind"),
    (("input", "size"), [640], "input.size"),
    (("input", "layout"), "NWHC", "input.layout"),
    (("input", "std"), [1, 0, 1], "input.std"),
    (("input", "resize"), "crop", "input.resize"),
    (("weights", "sha256"), "abc", "weights.sha256"),
    (("weights", "url"), "ftp://x/y.onnx", "weights.url"),
    (("outputs", "names"), ["dets", "keypoints", "x"], "outputs.names"),
    (("thresholds", "score"), 1.5, "thresholds.score"),
    (("schema",), "nope17", "schema"),
    (("input", "colour"), "bgr", "input.colour"),
])
def test_bad_fields_are_named(tmp_path, path, value, field):
    d = copy.deepcopy(_base())
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError) as e:
        load_card(f)
    assert str(f) in str(e.value) and f"'{field}'" in str(e.value)


def test_missing_sections_and_unknown_names(tmp_path):
    d = _base()
    del d["input"]
    with pytest.raises(ValueError, match="field 'input': is required"):
        card_from_dict(d, "x.yaml")
    with pytest.raises(KeyError, match="rtmo-s"):
        load_card("rtmo-xxl")
    with pytest.raises(FileNotFoundError):
        load_card(tmp_path / "missing.yaml")


def test_relative_weight_path_resolves_against_card_file(tmp_path):
    d = _base()
    d["weights"] = {"path": "models/m.onnx"}
    f = tmp_path / "card.yaml"
    f.write_text(yaml.safe_dump(d))
    assert load_card(f).weights.path == str(tmp_path / "models" / "m.onnx")
