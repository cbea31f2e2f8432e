"""``PoseEstimator``: one object for every model card kind (bottom-up PAF, one-stage RTMO, top-down SimCC/heatmap).

    est = PoseEstimator("rtmo-s")                      # or "rtmpose-m" (+ detector), "tfpose-mnv2", "my_card.yaml"
    people = est(image)                                # list[Person] in image pixels
    for i, frame, people in est.video("clip.mp4"):     # track ids from a greedy OKS tracker
        ...
    print(est.timer.format())                          # per-stage times
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from posekit.data.io import is_torch_weights
from posekit.runtime.cards import ModelCard, load_card
from posekit.runtime.download import resolve_weights
from posekit.pipelines.video import VideoRunner, open_video
from posekit.runtime.onnx import OnnxModel
from posekit.structures import Person

__all__ = ["PoseEstimator", "StageTimer", "open_video"]

STAGE_ORDER = ("decode", "detector", "preprocess", "network", "postprocess", "grouping", "draw")


class StageTimer:
    """Accumulates wall time per named stage (``with timer.stage("network"): ...``)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] += float(seconds)
        self.counts[name] += 1

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"count", "total_ms", "mean_ms"}}`` in pipeline order."""
        names = [n for n in STAGE_ORDER if n in self.totals] + sorted(set(self.totals) - set(STAGE_ORDER))
        return {n: {"count": self.counts[n], "total_ms": 1e3 * self.totals[n],
                    "mean_ms": 1e3 * self.totals[n] / max(self.counts[n], 1)} for n in names}

    def format(self) -> str:
        rows = self.summary()
        lines = [f"{'stage':<12} {'calls':>6} {'mean ms':>9} {'total ms':>10}"]
        for n, r in rows.items():
            lines.append(f"{n:<12} {r['count']:>6d} {r['mean_ms']:>9.2f} {r['total_ms']:>10.1f}")
        return "\n".join(lines)


class PoseEstimator:
    """Multi-person pose estimation from a model card.

    Args:
        model: card name or path: ``rtmo-*`` (one-stage), ``rtmpose-*`` or any ``simcc``/``heatmap`` card
            (top-down), ``tfpose-mnv2`` or any ``paf`` card (bottom-up); with PyTorch weights also a preset name
            that has no built-in card (``simplebaseline-r50``, ``vitpose-b``, ``openpose-light``…); or a PyTorch
            posekit model (``nn.Module``: top-down, RTMO or OpenPose) to run as it is.
        detector: top-down only: a detector card (default ``yolox-nano-human``), an ``rtmo`` card (RTMO boxes), or a
            callable ``image -> (boxes, scores)``.
        weights: the model's ONNX file (else the card's path / cache / download), or a PyTorch checkpoint
            (``.pth`` / ``.pt``: the preset of the card's name runs in PyTorch, see ``backend``);
            detector_weights: the detector's ONNX file.
        threads, providers: onnxruntime settings for every network.
        spinning: onnxruntime's thread spinning for every ONNX network (``OnnxModel``; None: onnxruntime's default,
            on). Off when the networks run beside other work on the same cores (``posekit serve``, docs/serve.md).
        flip_test: top-down flip test.
        score_thr: override the card's instance score threshold (one-stage) / detector threshold (top-down).
        oks_nms_thr: top-down OKS-NMS threshold (None: off).
        backend: ``"onnx"``, ``"torch"`` or None (PyTorch for ``.pth``/``.pt`` weights or an ``nn.Module``, else
            ONNX). The PyTorch backend runs the preset named by ``model`` (the card's name) with the weights
            (``posekit.models.checkpoints.load_preset``) through the family's export wrapper, so the
            pipelines see the outputs an exported file would give. Its card is the card given (a ``.yaml`` path,
            which must fit the model), else the built-in card of that name when it fits the model (same kind,
            input size, colour, mean/std) and a training checkpoint's input size, else the card ``posekit export``
            would write for the model.
        device: torch device for the PyTorch backend (default: CPU, or the module's own device).

    Attributes:
        card, timer (:class:`StageTimer`), pipeline (the underlying pipeline object), backend (``"onnx"`` or
        ``"torch"``), model (the network runner: an ``OnnxModel`` or a ``TorchModel``), torch_model (the PyTorch
        module, or None).
    """

    def __init__(self, model: str | Path | ModelCard = "rtmo-s", detector: str | Path | ModelCard | Callable | None = None,
                 weights: str | Path | None = None, threads: int | None = None,
                 providers: Sequence[str] | None = None, flip_test: bool = False,
                 detector_weights: str | Path | None = None, score_thr: float | None = None,
                 oks_nms_thr: float | None = None, backend: str | None = None, device=None,
                 spinning: bool | None = None) -> None:
        self.timer = StageTimer()
        self.card, self.model, self.torch_model = self._resolve(model, weights, backend, threads, device)
        self.backend = "onnx" if self.torch_model is None else "torch"
        runner = self.model
        kind = self.card.kind
        self._bottomup = False
        if kind == "detector":
            raise ValueError(f"model card '{self.card.name}' is a person detector, not a pose model; use it as "
                             f"detector= with a top-down pose model")
        if detector is not None and not self.card.is_topdown:
            raise ValueError(f"detector= only applies to top-down models; '{self.card.name}' is a {kind!r} model")
        if flip_test and not self.card.is_topdown:
            raise ValueError(f"flip_test is implemented for top-down models; '{self.card.name}' is {kind!r}")
        if kind == "rtmo":
            from posekit.pipelines.onestage import OneStagePipeline

            self.pipeline = OneStagePipeline(self.card, weights, threads, providers, score_thr=score_thr,
                                             model=runner, timer=self.timer, spinning=spinning)
            self.model = self.pipeline.model
        elif self.card.is_topdown:
            from posekit.pipelines.topdown import TopDownPipeline

            box_source = self._box_source(detector, detector_weights, threads, providers, score_thr, spinning)
            self.pipeline = TopDownPipeline(self.card, box_source, weights, threads, providers,
                                            flip_test=flip_test, oks_nms_thr=oks_nms_thr, model=runner,
                                            timer=self.timer, spinning=spinning)
            self.model = self.pipeline.model
        else:  # paf
            if runner is None:
                runner = OnnxModel(resolve_weights(self.card, weights), threads=threads, providers=providers,
                                   card=self.card, spinning=spinning)
            self.model = runner
            self.pipeline = self._build_paf(runner)
            self._bottomup = True

    # ------------------------------------------------------------------------------------------------ building
    @staticmethod
    def _box_source(detector, weights, threads, providers, score_thr, spinning=None):
        """The top-down box source. With no detector given, the default ``yolox-nano-human`` is built on first use,
        so that calls with ``boxes=`` (ground truth, a detections json) never need its weights."""
        if callable(detector) and not isinstance(detector, (str, Path, ModelCard)):
            return detector
        if detector is None:
            built = []

            def default_detector(image):
                if not built:
                    built.append(PoseEstimator._box_source("yolox-nano-human", weights, threads, providers,
                                                           score_thr, spinning))
                return built[0](image)

            return default_detector
        card = load_card(detector)
        if card.kind == "detector":
            from posekit.detectors import PersonDetector

            return PersonDetector(card, weights, threads, providers, score_thr=score_thr, spinning=spinning)
        if card.kind == "rtmo":
            from posekit.pipelines.onestage import OneStagePipeline

            return OneStagePipeline(card, weights, threads, providers, score_thr=score_thr, spinning=spinning).boxes
        raise ValueError(f"detector card '{card.name}' is a {card.kind!r} model; use a 'detector' or 'rtmo' card")

    @staticmethod
    def _resolve(model, weights, backend, threads, device):
        """``(card, runner or None, torch module or None)``: the ONNX path (runner built by the pipeline) or the
        PyTorch backend (see the class docstring)."""
        if backend not in (None, "auto", "onnx", "torch"):
            raise ValueError(f"backend must be 'onnx', 'torch' or None, got {backend!r}")
        module = None
        if not isinstance(model, (str, Path, ModelCard)):
            import torch

            if not isinstance(model, torch.nn.Module):
                raise ValueError(f"model must be a card name, a card .yaml path, a ModelCard or a PyTorch posekit "
                                 f"model, got {type(model).__name__}")
            module = model
        torch_weights = is_torch_weights(weights)
        if backend == "onnx" and (module is not None or torch_weights):
            what = f"weights {weights}" if torch_weights else "a PyTorch model"
            raise ValueError(f"backend='onnx' cannot run {what}; use backend='torch' or an .onnx file")
        if module is None and not torch_weights and backend != "torch":
            return load_card(model), None, None  # the ONNX path: torch is never imported
        from posekit.models import checkpoints as ck
        from posekit.runtime import torch_backend as tb

        if module is not None:
            if weights is not None:
                raise ValueError("weights= is for card names; load the weights into the PyTorch model yourself "
                                 "(posekit.load_weights)")
            net, given = module.eval(), None
            name = getattr(module, "preset", None)
            settings: dict = {}
        else:
            if weights is None:
                raise ValueError(f"backend='torch' needs weights= (a .pth / .pt checkpoint) for {str(model)!r}")
            if Path(str(weights)).suffix.lower() == ".onnx":
                raise ValueError(f"backend='torch' cannot run the ONNX file {weights}; use backend='onnx'")
            given = None
            s = str(model)
            if isinstance(model, ModelCard) or Path(s).suffix.lower() in (".yaml", ".yml") or "/" in s or "\\" in s:
                given = load_card(model)
                name = given.name
            else:
                name = s
            try:
                ck.preset_family(name)
            except KeyError:
                where = f"model card '{name}' ({given.source})" if given is not None else f"{name!r}"
                raise KeyError(f"{where}: PyTorch weights {weights} need the model preset of the same name, and "
                               f"there is none; use the preset's name (posekit.list_models()) or an .onnx "
                               f"file") from None
            ckpt = ck.read_checkpoint(weights)  # read once: the model and its running settings
            net = ck.load_preset(name, weights, checkpoint=ckpt)
            settings = ck.checkpoint_settings(ckpt)
        if device is not None:
            net = net.to(device)
        if given is not None:
            card = given
        else:
            card = None
            if name:
                try:
                    built_in = load_card(name)
                except (KeyError, FileNotFoundError):
                    built_in = None
                trained = settings.get("input_size")  # a checkpoint runs at the size it was trained at
                if built_in is not None and tb.card_fits_model(built_in, net) is None and (
                        trained is None or tuple(trained) == tuple(built_in.input_size)):
                    card = built_in
            if card is None:
                card = tb.card_for_model(net, name, input_size=settings.get("input_size"),
                                         paf_params=settings.get("paf_params"))
        return card, tb.torch_runner(net, card, device=device, threads=threads), net

    def _build_paf(self, model):
        from posekit.pipelines.bottomup import PafParams, PafPipeline

        card = self.card
        out_name = card.output_names[0]
        timer = self.timer

        def run_network(batch: np.ndarray) -> np.ndarray:
            with timer.stage("network"):
                return model.run(batch, [out_name])[out_name]

        spec = card.paf
        p = dict(spec.params)
        if "input_mode" not in p:  # the card's resize policy, unless paf.params overrides it
            if card.resize == "fixed":
                p.update(input_mode="fixed", input_size=tuple(card.input_size))
            elif card.resize == "keep-aspect-height":
                p.setdefault("target_height", card.input_size[1])
                p.setdefault("size_multiple", card.size_multiple)
                p["input_mode"] = "keep_aspect"
            else:
                raise ValueError(f"{card.source}: field 'input.resize': a paf model takes 'fixed' or "
                                 f"'keep-aspect-height', got {card.resize!r}")
        try:
            params = PafParams(**p)
        except TypeError as e:
            raise ValueError(f"{card.source}: field 'paf.params': {e}") from None
        kwargs = dict(num_parts=spec.num_parts, heatmap_channels=tuple(spec.heatmap_channels),
                      paf_offset=spec.paf_offset, stride=spec.stride, input_layout=card.input_layout)
        kwargs["to_coco17"] = tuple(spec.to_coco17) if spec.to_coco17 else None
        return PafPipeline(run_network, params, [tuple(l) for l in spec.limbs],
                           [tuple(c) for c in spec.paf_channels], **kwargs)

    # ------------------------------------------------------------------------------------------------ running
    def __call__(self, image: np.ndarray, boxes: np.ndarray | None = None) -> list[Person]:
        """People in one ``HxWx3`` uint8 BGR image. ``boxes`` (``(N, 4)`` xyxy image pixels) replace the detector of
        a top-down model."""
        if boxes is not None and not self.card.is_topdown:
            raise ValueError(f"boxes= needs a top-down model; '{self.card.name}' is a {self.card.kind!r} model")
        if self._bottomup:
            net_before = self.timer.totals.get("network", 0.0)
            t0 = time.perf_counter()
            people = self.pipeline(image)
            total = time.perf_counter() - t0
            self.timer.add("grouping", total - (self.timer.totals.get("network", 0.0) - net_before))
            return people
        if boxes is not None:
            return self.pipeline(image, boxes=np.asarray(boxes, np.float32).reshape(-1, 4))
        return self.pipeline(image)

    def video(self, source: str | int | Path, tracker=None, max_frames: int | None = None, pipelined: bool = True,
              queue_size: int = 4) -> Iterator[tuple[int, np.ndarray, list[Person]]]:
        """Yield ``(frame_index, frame, people)`` for a video file or webcam index; people carry ``track_id`` from
        ``tracker`` (default: a fresh :class:`~posekit.pipelines.tracking.GreedyTracker` on the card's schema).

        Decoding and the model run in their own threads, ahead of the caller by at most ``queue_size`` frames per
        queue (:class:`~posekit.pipelines.video.VideoRunner`), so the caller's drawing and encoding overlap them;
        frames, people and track ids are those of the sequential loop (``pipelined=False``)."""
        from posekit.pipelines.tracking import GreedyTracker

        tracker = tracker or GreedyTracker(self.card.schema)
        runner = VideoRunner(self, tracker=tracker, timer=self.timer, pipelined=pipelined, queue_size=queue_size,
                             split=self.video_stages())
        return runner.run(source, max_frames=max_frames)

    def video_stages(self) -> tuple[Callable, Callable] | None:
        """``(network, decoding)`` with ``decoding(image, network(image))`` equal to ``self(image)``, for the video
        runner to run in two threads: bottom-up (maps, then grouping) and one-stage (outputs, then NMS and
        back-mapping) cards; None for top-down ones (detector and pose network in one stage)."""
        pipe = self.pipeline
        if self._bottomup:
            nhwc = pipe.input_layout == "NHWC"

            def decoding(image, state):
                maps, size = state
                with self.timer.stage("grouping"):
                    return pipe.from_maps(maps if nhwc else maps.transpose(2, 0, 1),
                                          (image.shape[1], image.shape[0]), size)

            return pipe.network_maps, decoding
        if self.card.kind == "rtmo" and hasattr(pipe, "network"):

            def post(image, state):
                with self.timer.stage("postprocess"):
                    return pipe.postprocess(state[0], state[1], image.shape)

            return pipe.network, post
        return None
