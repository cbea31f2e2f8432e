"""The model options shared by ``posekit predict`` and ``posekit serve`` (``posekit/cli/model_args.py``)."""

from __future__ import annotations

import pytest

from posekit.cli import build_parser
from posekit.cli.model_args import ModelSpec, model_specs


def test_serve_takes_several_models_each_with_its_options():
    p = build_parser()
    args = p.parse_args(["serve", "--model", "tfpose-mnv2", "--weights", "a.onnx", "--port", "9000",
                         "--model", "rtmpose-t", "--detector", "yolox-nano-human", "--weights", "b.pth",
                         "--detector-weights", "y.onnx"])
    assert model_specs(args) == [ModelSpec("tfpose-mnv2", "a.onnx"),
                                 ModelSpec("rtmpose-t", "b.pth", "yolox-nano-human", "y.onnx")]
    assert args.port == 9000
    assert model_specs(p.parse_args(["serve"])) == [ModelSpec("rtmo-s")]  # predict's default


@pytest.mark.parametrize("argv, words", [
    (["serve", "--weights", "a.onnx", "--model", "x"], "give it after the --model it belongs to"),
    (["serve", "--model", "x", "--detector", "d", "--detector", "e"], "--detector given twice for --model x"),
])
def test_serve_model_option_errors(argv, words, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    assert words in capsys.readouterr().err


def test_predict_keeps_one_model_in_any_order():
    args = build_parser().parse_args(["predict", "img.jpg", "--weights", "w.onnx", "--model", "tfpose-mnv2"])
    assert model_specs(args) == [ModelSpec("tfpose-mnv2", "w.onnx")]
    assert model_specs(build_parser().parse_args(["predict", "img.jpg"])) == [ModelSpec("rtmo-s")]


def test_serve_builds_its_models_without_onnxruntime_spinning():
    """``posekit serve`` runs its ONNX networks with spinning off (docs/serve.md: on, the busy-waiting threads take
    the cores the event loop needs); ``--ort-spinning on`` gives onnxruntime's default back."""
    from conftest import shared_path
    from posekit.cli.serve import build_service

    weights = str(shared_path("weights", "openpose_mobilenet_v2_small_432x368.onnx"))
    for flag, want in ((None, False), ("on", True)):
        argv = ["serve", "--model", "tfpose-mnv2", "--weights", weights, "--threads", "1"]
        argv += ["--ort-spinning", flag] if flag else []
        app, _ = build_service(build_parser().parse_args(argv))
        (est,) = app.state.service.workers["tfpose-mnv2"].estimators
        assert est.model.spinning is want
        session_value = est.model.session.get_session_options().get_session_config_entry(
            "session.intra_op.allow_spinning")
        assert session_value == ("1" if want else "0")
