"""What ``posekit compare`` runs: :class:`PipelineSpec` (one pipeline) and :class:`CompareConfig` (the data, the
pipelines, the options), from the command line (``--pipeline NAME:key=value,...``) or a small YAML file.

A pipeline is a model card or preset with its weights:

* ``weights: PATH.onnx`` (or none: the card's path / cache) -- the ONNX path of ``PoseEstimator``;
* ``weights: PATH.pth|.pt`` -- the PyTorch preset of that name with these weights;
* ``weights: random`` -- the PyTorch preset built with ``overrides`` and seeded random weights (cost curves are
  real; accuracy is not). It is written as a posekit checkpoint under the output folder and run from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

__all__ = ["PipelineSpec", "CompareConfig", "parse_pipeline_arg", "load_config", "SWEEP_COUNTS"]

#: people per canvas of the scaling sweep.
SWEEP_COUNTS = (1, 2, 4, 8, 16, 32)

_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


@dataclass
class PipelineSpec:
    """One pipeline of a comparison.

    Attributes:
        name: label (file names, tables); letters, digits, ``-``, ``_``, ``.``.
        model: card name or card ``.yaml`` path, or preset name (with ``.pth``/``.pt``/``random`` weights).
        weights: ``.onnx`` / ``.pth`` / ``.pt`` path, ``"random"``, or None (card path / cache).
        detector, detector_weights: top-down person detector card and its ONNX file.
        boxes: top-down box source: ``"model"`` (the detector), ``"gt"`` (ground-truth boxes: oracle) or a COCO
            detections json path.
        input_size: ``(w, h)``: for ``random`` weights the network input (RTMO / OpenPose; top-down presets take
            ``input_size`` in ``overrides``); for an ONNX card its input size (a ``keep-aspect-height`` PAF card:
            the height it resizes to).
        flip_test: top-down flip test.
        threads: intra-op threads of every network (onnxruntime and torch); fixed and printed.
        overrides: preset overrides for ``random`` weights.
        seed: seed of ``random`` weights.
        paradigm: ``top-down`` / ``bottom-up`` / ``one-stage`` (filled from the card when empty).
        stages: run the ``--stages`` study on this pipeline (a CPM / Hourglass / OpenPose PyTorch preset).
    """

    name: str
    model: str
    weights: str | None = None
    detector: str | None = None
    detector_weights: str | None = None
    boxes: str = "model"
    input_size: tuple[int, int] | None = None
    flip_test: bool = False
    threads: int = 1
    overrides: dict = field(default_factory=dict)
    seed: int = 0
    paradigm: str = ""
    stages: bool = False

    def __post_init__(self) -> None:
        import re

        if not self.name or not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.name):
            raise ValueError(f"pipeline name must be letters, digits, '-', '_' or '.', got {self.name!r}")
        if not self.model:
            raise ValueError(f"pipeline '{self.name}': field 'model' is required (a card or preset name)")
        if self.input_size is not None:
            try:
                w, h = (int(v) for v in self.input_size)
            except (TypeError, ValueError):
                raise ValueError(f"pipeline '{self.name}': field 'input_size' must be [w, h], got "
                                 f"{self.input_size!r}") from None
            if w < 16 or h < 16:
                raise ValueError(f"pipeline '{self.name}': field 'input_size' must be at least 16x16, got {w}x{h}")
            self.input_size = (w, h)
        try:
            self.threads = int(self.threads)
        except (TypeError, ValueError):
            raise ValueError(f"pipeline '{self.name}': field 'threads' must be an integer, got "
                             f"{self.threads!r}") from None
        if self.threads < 1:
            raise ValueError(f"pipeline '{self.name}': field 'threads' must be >= 1, got {self.threads}")
        if not isinstance(self.overrides, Mapping):
            raise ValueError(f"pipeline '{self.name}': field 'overrides' must be a mapping, got {self.overrides!r}")
        self.overrides = dict(self.overrides)
        if self.paradigm and self.paradigm not in ("top-down", "bottom-up", "one-stage"):
            raise ValueError(f"pipeline '{self.name}': field 'paradigm' must be top-down, bottom-up or one-stage, "
                             f"got {self.paradigm!r}")
        self.boxes = str(self.boxes)

    @property
    def random_weights(self) -> bool:
        return str(self.weights).lower() == "random"

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["input_size"] = list(self.input_size) if self.input_size else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "<pipeline>") -> "PipelineSpec":
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: a pipeline must be a mapping of fields, got {d!r}")
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"{where}: unknown field(s) {bad}; known: {sorted(known)}")
        if "name" not in d or "model" not in d:
            raise ValueError(f"{where}: fields 'name' and 'model' are required, got {sorted(d)}")
        try:
            return cls(**dict(d))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None


def _value(key: str, text: str) -> Any:
    if key in ("flip_test", "stages"):
        if text.lower() not in _BOOL:
            raise ValueError(f"{key} must be true/false, got {text!r}")
        return _BOOL[text.lower()]
    if key in ("threads", "seed"):
        return int(text)
    if key == "input_size":
        try:
            w, h = (int(p) for p in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"input_size must be WxH (e.g. 416x416), got {text!r}") from None
        return (w, h)
    if key == "overrides":
        import yaml

        v = yaml.safe_load(text)
        if not isinstance(v, dict):
            raise ValueError(f"overrides must be a YAML mapping such as {{num_stages: 2}}, got {text!r}")
        return v
    return text


def parse_pipeline_arg(text: str) -> PipelineSpec:
    """``NAME:key=value,key=value`` (``overrides={...}`` may hold commas inside its braces) -> spec.

    Example: ``tfpose:model=tfpose-mnv2,weights=../shared/weights/openpose_mobilenet_v2_small_432x368.onnx``.
    """
    if ":" not in text:
        raise ValueError(f"--pipeline must be NAME:key=value,... (e.g. tfpose:model=tfpose-mnv2,weights=F.onnx), "
                         f"got {text!r}")
    name, rest = text.split(":", 1)
    parts, depth, cur = [], 0, ""
    for ch in rest:
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        parts.append(cur)
    d: dict[str, Any] = {"name": name}
    known = {f.name for f in fields(PipelineSpec)}
    for p in parts:
        if "=" not in p:
            raise ValueError(f"--pipeline {name}: '{p}' is not key=value")
        k, v = p.split("=", 1)
        k = k.strip().replace("-", "_")
        if k not in known:
            raise ValueError(f"--pipeline {name}: unknown key {k!r}; known: {sorted(known - {'name'})}")
        try:
            d[k] = _value(k, v.strip())
        except ValueError as e:
            raise ValueError(f"--pipeline {name}: {e}") from None
    return PipelineSpec.from_dict(d, f"--pipeline {name}")


@dataclass
class CompareConfig:
    """A whole comparison: data, pipelines and what to measure."""

    annotations: str
    images: str
    pipelines: list[PipelineSpec]
    out_dir: str = "compare-out"
    sweep: bool = False
    sweep_counts: tuple[int, ...] = SWEEP_COUNTS
    sweep_canvas: tuple[int, int] = (768, 576)
    sweep_repeats: int = 5
    stages: bool = False
    warmup: int = 1
    max_images: int | None = None
    progress: bool = True
    dataset: str = "coco"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.pipelines:
            raise ValueError("no pipelines to compare: give --pipeline NAME:model=... or a YAML 'pipelines' list")
        names = [p.name for p in self.pipelines]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"pipeline names must be unique, repeated: {dup}")
        self.sweep_counts = tuple(int(n) for n in self.sweep_counts)
        if not self.sweep_counts or min(self.sweep_counts) < 1:
            raise ValueError(f"sweep_counts must be positive integers, got {self.sweep_counts}")
        self.sweep_canvas = tuple(int(v) for v in self.sweep_canvas)
        if self.dataset not in ("coco", "crowdpose"):
            raise ValueError(f"dataset must be 'coco' or 'crowdpose', got {self.dataset!r}")


def load_config(path: str | Path) -> dict:
    """The YAML comparison file -> a dict of :class:`CompareConfig` fields (pipelines as specs). Relative paths in
    it are taken relative to the current directory (as on the command line)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"compare config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with a 'pipelines' list, got {type(data).__name__}")
    known = {f.name for f in fields(CompareConfig)}
    bad = sorted(set(data) - known - {"threads"})
    if bad:
        raise ValueError(f"{path}: unknown field(s) {bad}; known: {sorted(known | {'threads'})}")
    pipes = data.get("pipelines")
    if not isinstance(pipes, list) or not pipes:
        raise ValueError(f"{path}: field 'pipelines' must be a non-empty list of pipelines")
    threads = data.pop("threads", None) if "threads" in data else None
    out = dict(data)
    out["pipelines"] = []
    for i, p in enumerate(pipes):
        if isinstance(p, Mapping) and threads is not None:
            p = {"threads": threads, **p}
        out["pipelines"].append(PipelineSpec.from_dict(p, f"{path}: pipelines[{i}]"))
    return out
