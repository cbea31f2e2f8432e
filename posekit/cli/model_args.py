"""The model options shared by ``posekit predict`` and ``posekit serve``: ``--model``, ``--weights``,
``--detector``, ``--detector-weights``.

``predict`` takes one model. ``serve`` takes ``--model`` repeated; the ``--weights`` / ``--detector`` /
``--detector-weights`` that follow a ``--model`` belong to it::

    posekit serve --model tfpose-mnv2 --weights a.onnx --model rtmpose-t --detector yolox-nano-human
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

HELP = {
    "model": "built-in card name or card .yaml path",
    "weights": "the model's weights: an ONNX file, or a .pth/.pt checkpoint to run the PyTorch preset of that name "
               "(else the card's path / cache / download)",
    "detector": "top-down models: detector card (default yolox-nano-human) or an rtmo card",
    "detector_weights": "the detector's ONNX file",
}
_FIELDS = ("weights", "detector", "detector_weights")


@dataclass
class ModelSpec:
    """One pose model as the command line names it."""

    model: str
    weights: str | None = None
    detector: str | None = None
    detector_weights: str | None = None

    def build(self, threads: int | None = None, flip_test: bool = False, spinning: bool | None = None):
        """The :class:`~posekit.pipelines.estimator.PoseEstimator` of this spec."""
        from posekit.pipelines.estimator import PoseEstimator

        return PoseEstimator(self.model, detector=self.detector, weights=self.weights, threads=threads,
                             detector_weights=self.detector_weights, flip_test=flip_test, spinning=spinning)


class _SpecAction(argparse.Action):
    """``--model`` starts a new spec; the other options fill in the last one (an error before any ``--model`` or
    when given twice for the same model)."""

    def __call__(self, parser, namespace, value, option_string=None):
        specs = getattr(namespace, "model_specs", None)
        if specs is None:
            specs = []
            setattr(namespace, "model_specs", specs)
        if self.dest == "model":
            specs.append(ModelSpec(value))
            return
        if not specs:
            parser.error(f"{option_string} {value}: give it after the --model it belongs to")
        if getattr(specs[-1], self.dest) is not None:
            parser.error(f"{option_string} given twice for --model {specs[-1].model}")
        setattr(specs[-1], self.dest, value)


def add_model_arguments(parser: argparse.ArgumentParser, multiple: bool = False, default: str = "rtmo-s") -> None:
    """Add the four model options. ``multiple``: ``--model`` may be repeated, each followed by its own options."""
    if not multiple:
        parser.add_argument("--model", default=default, help=f"{HELP['model']} (default {default})")
        for f in _FIELDS:
            parser.add_argument("--" + f.replace("_", "-"), dest=f, help=HELP[f])
        return
    parser.set_defaults(model_specs=None)
    parser.add_argument("--model", action=_SpecAction, dest="model",
                        help=f"{HELP['model']}; repeat it to serve several models, each followed by its own "
                             f"--weights / --detector / --detector-weights (default: one {default})")
    for f in _FIELDS:
        parser.add_argument("--" + f.replace("_", "-"), action=_SpecAction, dest=f,
                            help=f"{HELP[f]}, for the --model before it")
    parser.set_defaults(_model_default=default)


def model_specs(args: argparse.Namespace) -> list[ModelSpec]:
    """The models named on the command line (one for ``predict``; one or more for ``serve``)."""
    specs = getattr(args, "model_specs", None)
    if specs is not None:
        return list(specs)
    default = getattr(args, "_model_default", None)
    if default is not None:  # multiple mode, no --model given
        return [ModelSpec(default)]
    return [ModelSpec(args.model, args.weights, args.detector, args.detector_weights)]
