"""Build a :class:`~posekit.pipelines.estimator.PoseEstimator` from a :class:`~posekit.compare.spec.PipelineSpec`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from posekit.compare.spec import PipelineSpec

__all__ = ["build_estimator", "paradigm_of", "write_random_checkpoint", "set_threads"]


def set_threads(threads: int) -> None:
    """Fix torch's intra-op thread count (process-wide; onnxruntime sessions get theirs from ``threads=``)."""
    import torch

    torch.set_num_threads(int(threads))


def paradigm_of(card) -> str:
    """``top-down`` / ``bottom-up`` / ``one-stage`` for a model card."""
    if card.is_topdown:
        return "top-down"
    if card.kind == "rtmo":
        return "one-stage"
    if card.kind == "paf":
        return "bottom-up"
    raise ValueError(f"model card '{card.name}' is a {card.kind!r} model, not a pose model")


def write_random_checkpoint(preset: str, overrides: dict, path: Path, seed: int = 0,
                            input_size: tuple[int, int] | None = None, state_dict=None) -> Path:
    """A posekit checkpoint (``{"model", "config"}``) of preset ``preset`` with ``overrides``: seeded random
    weights, or ``state_dict`` when given; ``input_size`` goes to ``config.data.input_size`` (the input size the
    PyTorch backend gives RTMO / OpenPose)."""
    import torch

    from posekit.models.presets import build_model
    from posekit.training.checkpoint import save_checkpoint

    if state_dict is None:
        torch.manual_seed(int(seed))
        state_dict = build_model(preset, **overrides).state_dict()
    cfg: dict = {"model": {"name": preset, "overrides": {k: (list(v) if isinstance(v, tuple) else v)
                                                         for k, v in overrides.items()}}}
    if input_size is not None:
        cfg["data"] = {"input_size": [int(input_size[0]), int(input_size[1])]}
    return save_checkpoint({"model": state_dict, "config": cfg}, Path(path))


def _card_with_input_size(model: str, input_size):
    """The card ``model`` with its input size replaced (a ``keep-aspect-height`` PAF card: the target height)."""
    from posekit.runtime.cards import load_card

    card = load_card(model)
    w, h = input_size
    if card.kind == "paf" and card.resize == "keep-aspect-height":
        paf = dataclasses.replace(card.paf, params={**dict(card.paf.params), "target_height": int(h)})
        return dataclasses.replace(card, input_size=(int(w), int(h)), paf=paf)
    return dataclasses.replace(card, input_size=(int(w), int(h)))


def build_estimator(spec: PipelineSpec, work_dir: str | Path):
    """The estimator of ``spec`` (threads fixed to ``spec.threads``). ``random`` weights are written as a
    checkpoint under ``work_dir/weights/``. Errors (missing weights, wrong card) propagate with their message."""
    from posekit.pipelines.estimator import PoseEstimator

    set_threads(spec.threads)
    weights = spec.weights
    model = spec.model
    if spec.random_weights:
        weights = str(write_random_checkpoint(spec.model, spec.overrides, Path(work_dir) / "weights" /
                                              f"{spec.name}.pt", spec.seed, spec.input_size))
        if spec.input_size is not None:  # a built-in card of the same name (rtmo-*) would impose its own size
            from posekit.runtime.cards import load_card

            try:
                card = load_card(spec.model)
            except (KeyError, FileNotFoundError, ValueError):
                card = None
            if card is not None and not card.is_topdown:
                model = _card_with_input_size(spec.model, spec.input_size)
    elif spec.overrides:
        raise ValueError(f"pipeline '{spec.name}': 'overrides' only apply to weights: random (a checkpoint "
                         f"carries its own)")
    elif spec.input_size is not None:
        if weights is not None and Path(str(weights)).suffix.lower() in (".pth", ".pt"):
            raise ValueError(f"pipeline '{spec.name}': 'input_size' is not supported with PyTorch checkpoints "
                             f"(their saved input size is used); drop it")
        model = _card_with_input_size(model, spec.input_size)
    if weights is not None and not spec.random_weights and not Path(str(weights)).is_file():
        raise FileNotFoundError(f"pipeline '{spec.name}': weights file not found: {weights}")
    if spec.detector_weights is not None and not Path(spec.detector_weights).is_file():
        raise FileNotFoundError(f"pipeline '{spec.name}': detector weights file not found: {spec.detector_weights}")
    detector, detector_weights = spec.detector, spec.detector_weights
    if detector_weights is not None and Path(str(detector_weights)).suffix.lower() in (".pth", ".pt"):
        # a PyTorch RTMO checkpoint as the person detector: its people's boxes (OneStagePipeline.boxes)
        det = PoseEstimator(model=detector, weights=detector_weights, threads=spec.threads)
        if det.card.kind != "rtmo":
            raise ValueError(f"pipeline '{spec.name}': a PyTorch detector must be an RTMO preset, got "
                             f"{detector!r} ({det.card.kind!r})")
        detector, detector_weights = det.pipeline.boxes, None
    est = PoseEstimator(model=model, weights=weights, detector=detector, detector_weights=detector_weights,
                        threads=spec.threads, flip_test=spec.flip_test)
    para = paradigm_of(est.card)
    if spec.boxes != "model" and para != "top-down":
        raise ValueError(f"pipeline '{spec.name}': boxes={spec.boxes!r} needs a top-down model; "
                         f"'{est.card.name}' is {para}")
    if spec.paradigm and spec.paradigm != para:
        raise ValueError(f"pipeline '{spec.name}': paradigm {spec.paradigm!r} given, but the card "
                         f"'{est.card.name}' is {para}")
    spec.paradigm = para
    return est
