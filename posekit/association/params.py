"""Settings of the bottom-up (PAF) pipeline, as plain data: :class:`PafParams` (input sizing, peaks, limb scoring,
grouping) and :data:`DEFAULT_EVAL_PARAMS` (the association settings for the small maps of CPU-trained models).

They sit here, below the pipelines, because model cards (``paf.params``), exported cards, training checkpoints and
the pipeline all read and write them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

__all__ = ["PafParams", "DEFAULT_EVAL_PARAMS"]

#: association settings for the small maps of CPU-trained models (stride 8 on ~100-200 px inputs): finer peaks
#: (confidence maps upsampled 2x), no length prior (people fill a large part of a small image), 3 parts suffice.
#: The OpenPose training task evaluates with them, and a checkpoint of that task runs with them.
DEFAULT_EVAL_PARAMS: dict = {
    "upsample": 2,
    "peak_threshold": 0.1,
    "min_parts": 3,
    "length_prior": 0.0,
}


@dataclass
class PafParams:
    """Every knob of the bottom-up pipeline. The defaults are posekit's settings for the tf-pose
    MobileNetV2-small network (see docs/association.md for the measurements behind them).

    Input size:
        input_mode: ``"fixed"`` (resize to ``input_size``, aspect not kept, as tf-pose does) or ``"keep_aspect"``
            (height ``target_height``, width from the aspect ratio, both rounded to ``size_multiple``).
        input_size: ``(w, h)`` for ``"fixed"``.
        target_height, size_multiple, max_width: for ``"keep_aspect"`` (``max_width`` caps very wide images).
        scales: input-size factors; maps of every scale are resized to the grid of the first and averaged.
    Peaks:
        upsample: integer factor by which the confidence maps are upsampled (bicubic) before NMS (PAFs are
            sampled on their own grid).
        smooth_sigma: Gaussian smoothing of the (upsampled) confidence maps, in their cells; 0 = none.
        peak_threshold, nms_window, subpixel (``"quadratic"``, ``"centroid"``, ``"none"``), max_peaks (per part).
    Limbs:
        paf_samples: samples of the line integral; paf_sample_threshold: a sample agrees when ``L . u`` exceeds
        it; paf_min_share: share of agreeing samples required; paf_score_threshold: the penalised mean must
        exceed it; length_prior: penalty ``min(length_prior * map_h / length - 1, 0)`` (0 = off); sampling:
        ``"bilinear"`` or ``"nearest"``.
    Grouping:
        matching: ``"greedy"`` or ``"exact"``; min_parts; min_mean_score (OpenPose's subset score / parts).
        instance_score: ``"mean"`` (half OpenPose's subset score / parts), ``"mean_x_share"`` (mean keypoint
        score times parts found / parts) or ``"mean_x_sqrt_share"`` (mean keypoint score times the square root
        of that share).
    Frames:
        map_offset: shift, in network-input pixels, of a map cell's centre from ``s*i + (s-1)/2`` (the area
            convention, 0 for tf-pose's targets).
    """

    input_mode: str = "keep_aspect"
    input_size: tuple[int, int] = (432, 368)
    target_height: int = 432
    size_multiple: int = 8
    max_width: int | None = 1024
    scales: tuple[float, ...] = (1.0,)
    upsample: int = 1
    smooth_sigma: float = 0.0
    peak_threshold: float = 0.05
    nms_window: int = 3
    subpixel: str = "quadratic"
    max_peaks: int = 64
    paf_samples: int = 10
    paf_sample_threshold: float = 0.05
    paf_min_share: float = 0.6
    paf_score_threshold: float = 0.0
    length_prior: float = 0.5
    sampling: str = "bilinear"
    matching: str = "greedy"
    min_parts: int = 4
    min_mean_score: float = 0.4
    instance_score: str = "mean_x_share"
    map_offset: float = 0.0

    def __post_init__(self) -> None:
        choices = {
            "input_mode": ("fixed", "keep_aspect"),
            "subpixel": ("quadratic", "centroid", "none"),
            "sampling": ("bilinear", "nearest"),
            "matching": ("greedy", "exact"),
            "instance_score": ("mean", "mean_x_share", "mean_x_sqrt_share"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"PafParams.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        self.input_size = tuple(int(v) for v in self.input_size)
        self.scales = tuple(float(s) for s in self.scales)
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(f"PafParams.input_size must be (w, h) > 0, got {self.input_size}")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"PafParams.scales must be positive, got {self.scales}")
        if int(self.upsample) != self.upsample or self.upsample < 1:
            raise ValueError(f"PafParams.upsample must be an integer >= 1, got {self.upsample}")
        if self.paf_samples < 2:
            raise ValueError(f"PafParams.paf_samples must be >= 2, got {self.paf_samples}")
        if self.target_height < 1 or self.size_multiple < 1:
            raise ValueError("PafParams.target_height and size_multiple must be >= 1")

    @classmethod
    def tfpose(cls, **overrides) -> "PafParams":
        """tf-pose-estimation's own input: the image resized to 432x368, aspect not kept."""
        return replace(cls(input_mode="fixed", input_size=(432, 368)), **overrides)

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "PafParams":
        """From a plain mapping (e.g. a model card's ``params``); unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"{source}: unknown PafParams fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    def input_size_for(self, image_size: tuple[int, int], scale: float = 1.0) -> tuple[int, int]:
        """Network input ``(w, h)`` for an image of ``(W, H)`` pixels at a scale factor."""
        W, H = image_size
        m = self.size_multiple
        if self.input_mode == "fixed":
            w, h = self.input_size[0] * scale, self.input_size[1] * scale
        else:
            h = self.target_height * scale
            w = h * W / H
            if self.max_width is not None:
                w = min(w, self.max_width * scale)
        return max(m, int(round(w / m)) * m), max(m, int(round(h / m)) * m)
