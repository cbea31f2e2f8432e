"""Model cards: everything posekit needs to know to run an ONNX model, in one YAML file.

A card names the model kind (``paf``, ``rtmo``, ``simcc``, ``heatmap`` or ``detector``), where the weights come
from (a local path, or a URL with an optional sha256 and the file name to keep in the cache), how to build the
input tensor (name, layout, colour order, mean/std, resize policy, size, pad value), the output names and layouts,
the keypoint schema, thresholds, and the kind-specific metadata (PAF part/limb/channel maps, SimCC split ratio,
detector decode). Built-in cards live in ``posekit/runtime/cards/*.yaml``; ``docs/model-cards.md`` documents
every field so that users can describe their own ONNX models.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

__all__ = [
    "ModelCard",
    "WeightsSpec",
    "PafSpec",
    "SimccSpec",
    "HeatmapSpec",
    "DetectorSpec",
    "load_card",
    "list_cards",
    "card_from_dict",
    "CARD_DIR",
    "KINDS",
    "RESIZE_POLICIES",
]

CARD_DIR = Path(__file__).with_name("cards")
KINDS = ("paf", "rtmo", "heatmap", "simcc", "detector")
RESIZE_POLICIES = ("letterbox", "letterbox-center", "fixed", "keep-aspect-height", "crop")
LAYOUTS = ("NCHW", "NHWC")
COLORS = ("bgr", "rgb")
DECODES = ("end2end", "yolox-raw")
# how many outputs each kind reads, in order
_OUTPUTS = {
    "paf": ("maps",),
    "rtmo": ("dets", "keypoints"),
    "simcc": ("simcc_x", "simcc_y"),
    "heatmap": ("heatmaps",),
}


@dataclass(frozen=True)
class WeightsSpec:
    """Where the ONNX file comes from.

    Attributes:
        path: a local file (relative paths are relative to the card file); used when it exists.
        url: download URL (``.onnx`` or a ``.zip`` archive such as an OpenMMLab SDK bundle).
        sha256: full sha256 of the downloaded file (the archive, for a zip), checked after download.
        sha256_prefix: a leading part of that sha256 (e.g. the 8 hex digits some file names carry).
        file: the file name kept in the cache (``$POSEKIT_HOME``); defaults to the URL's or path's base name.
        archive_member: the member extracted from a zip (matched by base name; default ``end2end.onnx``).
    """

    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    file: str | None = None
    archive_member: str | None = None

    @property
    def cache_name(self) -> str:
        if self.file:
            return self.file
        src = self.url or self.path or ""
        base = src.rstrip("/").split("/")[-1]
        if base.endswith(".zip"):
            base = base[:-4] + ".onnx"
        return base


@dataclass(frozen=True)
class PafSpec:
    """Bottom-up PAF metadata (OpenPose): maps are ``(N, h, w, C)`` at ``stride``.

    ``limbs`` are part index pairs; ``paf_channels`` the (x, y) channel pairs of each limb *within the PAF block*
    (add ``paf_offset`` for the full tensor); ``heatmap_channels`` the ``[start, stop)`` range of the part maps;
    ``to_coco17`` maps COCO-17 keypoint k to part ``to_coco17[k]`` (empty: keep the model's parts); ``params``
    are keyword arguments for ``PafParams``.
    """

    part_names: tuple[str, ...]
    limbs: tuple[tuple[int, int], ...]
    paf_channels: tuple[tuple[int, int], ...]
    heatmap_channels: tuple[int, int] = (0, 19)
    paf_offset: int = 19
    stride: int = 8
    to_coco17: tuple[int, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def num_parts(self) -> int:
        return len(self.part_names)


@dataclass(frozen=True)
class SimccSpec:
    """SimCC: outputs ``(N, K, W*split_ratio)`` and ``(N, K, H*split_ratio)``; location = argmax / split_ratio."""

    split_ratio: float = 2.0


@dataclass(frozen=True)
class HeatmapSpec:
    """Top-down heatmaps ``(N, K, h, w)``, decoded as the model's codec does: ``udp`` (UDP mapping and DARK-UDP
    refinement), else MSRA with ``dark`` (DARK refinement) or the quarter-cell shift; ``blur_kernel_size`` for the
    DARK refinements."""

    udp: bool = False
    dark: bool = False
    blur_kernel_size: int = 11


@dataclass(frozen=True)
class DetectorSpec:
    """Detector decode: ``end2end`` (``dets [1,N,5]`` + ``labels [1,N]``, NMS inside) or ``yolox-raw``
    (``[1, A, 5 + C]`` raw head over the ``strides`` grids, NMS in posekit); ``class_id`` is the person class."""

    decode: str = "end2end"
    strides: tuple[int, ...] = (8, 16, 32)
    class_id: int = 0


@dataclass(frozen=True)
class ModelCard:
    """One ONNX model and how to run it. Sizes are ``(w, h)``; all fields are validated by :func:`card_from_dict`.

    Attributes:
        name, kind, description: identity; ``kind`` in ``paf | rtmo | heatmap | simcc | detector``.
        weights: :class:`WeightsSpec`.
        input_name, input_layout (``NCHW``/``NHWC``), color (``bgr``/``rgb``), mean, std (per channel, in the
            model's colour order, applied as ``(x - mean) / std`` to 0..255 pixels).
        resize: ``letterbox`` (top-left), ``letterbox-center``, ``fixed`` (plain resize), ``keep-aspect-height``
            (height = ``input_size[1]``, width rounded up to ``size_multiple``) or ``crop`` (top-down affine crop).
        input_size: ``(w, h)`` model input; pad_value: letterbox fill; size_multiple: for ``keep-aspect-height``.
        interpolation: the whole-image resize filter, ``linear`` (OpenCV's bilinear, the default), ``area``
            (OpenCV's pixel-area averaging: a better filter when the model input is smaller than the image, but slow
            for non-integer ratios) or ``antialias`` (when shrinking, a 3x3 binomial blur, then bilinear: the
            low-pass of ``area`` at a fraction of its cost).
        output_names: names of the outputs the kind reads, in the kind's order.
        output_layouts: per output name, a layout string (documentation and checks, e.g. ``"B,N,5"``).
        schema: keypoint schema name (``coco17``…); score_thr, nms_thr: instance score and NMS IoU thresholds.
        nms_inside: the export already applies NMS (posekit still thresholds, NMS is skipped).
        box_padding: top-down box enlargement (1.25).
        paf, simcc, heatmap, detector: kind-specific specs (None for other kinds).
        quantization: for an INT8 file written by ``posekit quantize`` / ``export --int8``: how it was made
            (method, calibration set, nodes kept in FP32, per-output error against the FP32 file); information
            only, the pipelines run the file as any other (``docs/quantization.md``). None for FP32 files.
        source: the file the card was read from (for error messages).
    """

    name: str
    kind: str
    weights: WeightsSpec
    input_name: str
    input_size: tuple[int, int]
    input_layout: str = "NCHW"
    color: str = "bgr"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: str = "letterbox"
    pad_value: float = 114.0
    size_multiple: int = 1
    interpolation: str = "linear"
    output_names: tuple[str, ...] = ()
    output_layouts: Mapping[str, str] = field(default_factory=dict)
    schema: str = "coco17"
    score_thr: float = 0.3
    nms_thr: float = 0.65
    nms_inside: bool = False
    box_padding: float = 1.25
    description: str = ""
    paf: PafSpec | None = None
    simcc: SimccSpec | None = None
    heatmap: HeatmapSpec | None = None
    detector: DetectorSpec | None = None
    quantization: Mapping[str, Any] | None = None
    source: str = "<dict>"

    @property
    def is_topdown(self) -> bool:
        return self.kind in ("simcc", "heatmap")

    @property
    def needs_normalisation(self) -> bool:
        return any(m != 0 for m in self.mean) or any(s != 1 for s in self.std)

    def with_weights(self, path: str | Path) -> "ModelCard":
        """A copy whose weights are the given local file."""
        return replace(self, weights=replace(self.weights, path=str(path)))


# ----------------------------------------------------------------------------------------------------------------
# validation helpers: every error names the card file and the field


class _Reader:
    def __init__(self, data: Mapping, source: str, prefix: str = "") -> None:
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: {prefix.rstrip('.') or 'card'} must be a mapping, got {type(data).__name__}")
        self.data = data
        self.source = source
        self.prefix = prefix
        self.used: set[str] = set()

    def err(self, key: str, msg: str) -> ValueError:
        return ValueError(f"{self.source}: field '{self.prefix}{key}': {msg}")

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def get(self, key: str, default: Any = None, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.err(key, "is required")
            return default
        return self.data[key]

    def str_(self, key, default=None, required=False, choices=None) -> str | None:
        v = self.get(key, default, required)
        if v is None:
            return None
        if not isinstance(v, str):
            raise self.err(key, f"must be a string, got {v!r}")
        if choices is not None:
            low = v if key == "layout" else v.lower()
            if low not in choices:
                raise self.err(key, f"must be one of {', '.join(choices)}, got {v!r}")
            return low
        return v

    def num(self, key, default=None, required=False, lo=None, hi=None, integer=False):
        v = self.get(key, default, required)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            raise self.err(key, f"must be {'an integer' if integer else 'a number'}, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.err(key, f"must be in [{lo}, {hi}], got {v!r}")
        return int(v) if integer else float(v)

    def bool_(self, key, default=False) -> bool:
        v = self.get(key, default)
        if not isinstance(v, bool):
            raise self.err(key, f"must be true or false, got {v!r}")
        return v

    def ints(self, key, default=None, required=False, length=None, lo=None) -> tuple[int, ...] | None:
        v = self.get(key, default, required)
        if v is None:
            return None
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise self.err(key, f"must be a list of integers, got {v!r}")
        if length is not None and len(v) != length:
            raise self.err(key, f"must have {length} values, got {len(v)}")
        if lo is not None and any(x < lo for x in v):
            raise self.err(key, f"values must be >= {lo}, got {v!r}")
        return tuple(v)

    def floats(self, key, default=None, length=None) -> tuple[float, ...] | None:
        v = self.get(key, default)
        if v is None:
            return None
        if not isinstance(v, (list, tuple)) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v
        ):
            raise self.err(key, f"must be a list of numbers, got {v!r}")
        if length is not None and len(v) != length:
            raise self.err(key, f"must have {length} values, got {len(v)}")
        return tuple(float(x) for x in v)

    def pairs(self, key, required=False, limit=None) -> tuple[tuple[int, int], ...]:
        v = self.get(key, None, required)
        if v is None:
            return ()
        ok = isinstance(v, (list, tuple)) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, int) and x >= 0 for x in p)
            for p in v
        )
        if not ok:
            raise self.err(key, f"must be a list of [a, b] index pairs, got {v!r}")
        if limit is not None and any(x >= limit for p in v for x in p):
            raise self.err(key, f"indices must be < {limit}")
        return tuple((int(a), int(b)) for a, b in v)

    def section(self, key) -> "_Reader | None":
        v = self.get(key)
        if v is None:
            return None
        return _Reader(v, self.source, f"{self.prefix}{key}.")

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.err(unknown[0], f"unknown field (known: {', '.join(sorted(self.used))})")


def card_from_dict(d: Mapping, source: str = "<dict>") -> ModelCard:
    """Build and validate a :class:`ModelCard` from the YAML structure documented in docs/model-cards.md.

    Raises:
        ValueError: naming ``source`` and the offending field (``input.size``, ``weights.url``…).
    """
    r = _Reader(d, source)
    name = r.str_("name", required=True)
    kind = r.str_("kind", required=True, choices=KINDS)
    description = r.str_("description", "") or ""

    w = r.section("weights")
    if w is None:
        raise r.err("weights", "is required (path, or url [+ sha256], and/or file)")
    path = w.str_("path")
    if path is not None and not Path(path).is_absolute() and source not in ("<dict>",) and Path(source).exists():
        path = str((Path(source).resolve().parent / path))
    url = w.str_("url")
    if url is not None and not url.startswith(("http://", "https://", "file://")):
        raise w.err("url", f"must be an http(s):// or file:// URL, got {url!r}")
    sha = w.str_("sha256")
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
        raise w.err("sha256", f"must be 64 hex digits, got {sha!r}")
    prefix = w.str_("sha256_prefix")
    if prefix is not None and (not 4 <= len(prefix) <= 64 or any(c not in "0123456789abcdef" for c in prefix.lower())):
        raise w.err("sha256_prefix", f"must be 4 to 64 hex digits, got {prefix!r}")
    weights = WeightsSpec(
        path=path, url=url, sha256=sha and sha.lower(), sha256_prefix=prefix and prefix.lower(),
        file=w.str_("file"), archive_member=w.str_("archive_member"),
    )
    if not (weights.path or weights.url or weights.file):
        raise w.err("path", "give at least one of path, url or file")
    w.finish()

    i = r.section("input")
    if i is None:
        raise r.err("input", "is required (name, size, layout, color, mean, std, resize, pad_value)")
    default_resize = "crop" if kind in ("simcc", "heatmap") else "letterbox"
    input_name = i.str_("name", required=True)
    size = i.ints("size", required=True, length=2, lo=1)
    layout = i.str_("layout", "NCHW", choices=LAYOUTS)
    color = i.str_("color", "bgr", choices=COLORS)
    mean = i.floats("mean", (0.0, 0.0, 0.0), length=3)
    std = i.floats("std", (1.0, 1.0, 1.0), length=3)
    if any(s == 0 for s in std):
        raise i.err("std", f"must not contain 0, got {list(std)}")
    resize = i.str_("resize", default_resize, choices=RESIZE_POLICIES)
    if kind in ("simcc", "heatmap") and resize != "crop":
        raise i.err("resize", f"a top-down '{kind}' model takes person crops: use 'crop', got {resize!r}")
    if kind not in ("simcc", "heatmap") and resize == "crop":
        raise i.err("resize", f"'crop' is only for top-down models (simcc, heatmap), not {kind!r}")
    pad_value = i.num("pad_value", 114.0, lo=0, hi=255)
    size_multiple = i.num("size_multiple", 1, lo=1, integer=True)
    interpolation = i.str_("interpolation", "linear", choices=("linear", "area", "antialias"))
    i.finish()

    o = r.section("outputs")
    if o is None:
        raise r.err("outputs", "is required (names, layouts)")
    out_names = o.get("names", required=True)
    if not isinstance(out_names, (list, tuple)) or not out_names or not all(isinstance(n, str) for n in out_names):
        raise o.err("names", f"must be a non-empty list of output names, got {out_names!r}")
    layouts = o.get("layouts", {})
    if not isinstance(layouts, Mapping) or not all(isinstance(v, str) for v in layouts.values()):
        raise o.err("layouts", f"must map output names to layout strings, got {layouts!r}")
    for k in layouts:
        if k not in out_names:
            raise o.err("layouts", f"names an output {k!r} that is not in outputs.names {list(out_names)}")
    o.finish()

    schema = r.str_("schema", "coco17")
    if (schema.lower().endswith((".yaml", ".yml", ".json")) and not Path(schema).is_absolute()
            and source != "<dict>" and Path(source).exists()):  # a custom schema file beside the card
        schema = str(Path(source).resolve().parent / schema)
    if kind != "detector":
        from posekit.schema import get_schema

        try:
            get_schema(schema)
        except (KeyError, ValueError, FileNotFoundError) as e:
            raise r.err("schema", f"unknown keypoint schema {schema!r} ({e})") from None

    t = r.section("thresholds")
    score_thr, nms_thr, nms_inside = 0.3, 0.65, False
    if t is not None:
        score_thr = t.num("score", 0.3, lo=0, hi=1)
        nms_thr = t.num("nms", 0.65, lo=0, hi=1)
        nms_inside = t.bool_("nms_inside", False)
        t.finish()

    box_padding = 1.25
    paf = simcc = heatmap = detector = None
    if kind == "paf":
        p = r.section("paf")
        if p is None:
            raise r.err("paf", "is required for kind 'paf' (part_names, limbs, paf_channels, ...)")
        parts = p.get("part_names", required=True)
        if not isinstance(parts, (list, tuple)) or not all(isinstance(n, str) for n in parts) or not parts:
            raise p.err("part_names", f"must be a list of part names, got {parts!r}")
        limbs = p.pairs("limbs", required=True, limit=len(parts))
        chans = p.pairs("paf_channels", required=True)
        if len(chans) != len(limbs):
            raise p.err("paf_channels", f"needs one (x, y) pair per limb: {len(limbs)} limbs, {len(chans)} pairs")
        hm = p.ints("heatmap_channels", (0, len(parts) + 1), length=2, lo=0)
        to_coco = p.ints("to_coco17", (), lo=0) or ()
        if to_coco and (len(to_coco) != 17 or max(to_coco) >= len(parts)):
            raise p.err("to_coco17", f"must list 17 part indices < {len(parts)}, got {list(to_coco)}")
        params = p.get("params", {})
        if not isinstance(params, Mapping):
            raise p.err("params", f"must be a mapping of PafParams fields, got {params!r}")
        paf = PafSpec(
            part_names=tuple(parts), limbs=limbs, paf_channels=chans, heatmap_channels=hm,
            paf_offset=p.num("paf_offset", 19, lo=0, integer=True), stride=p.num("stride", 8, lo=1, integer=True),
            to_coco17=to_coco, params=dict(params),
        )
        p.finish()
    elif kind == "simcc":
        s = r.section("simcc")
        ratio = 2.0
        if s is not None:
            ratio = s.num("split_ratio", 2.0, lo=1e-6)
            box_padding = s.num("box_padding", 1.25, lo=1.0)
            s.finish()
        simcc = SimccSpec(split_ratio=ratio)
    elif kind == "heatmap":
        s = r.section("heatmap")
        udp, dark, blur = False, False, 11
        if s is not None:
            udp = s.bool_("udp", False)
            dark = s.bool_("dark", False)
            blur = s.num("blur_kernel_size", 11, lo=1, integer=True)
            box_padding = s.num("box_padding", 1.25, lo=1.0)
            s.finish()
        heatmap = HeatmapSpec(udp=udp, dark=dark, blur_kernel_size=blur)
    elif kind == "detector":
        s = r.section("detector")
        if s is None:
            raise r.err("detector", "is required for kind 'detector' (decode, strides, class_id)")
        detector = DetectorSpec(
            decode=s.str_("decode", "end2end", choices=DECODES),
            strides=s.ints("strides", (8, 16, 32), lo=1),
            class_id=s.num("class_id", 0, lo=0, integer=True),
        )
        s.finish()
    for other in ("paf", "simcc", "heatmap", "detector"):
        if other != kind and r.has(other):
            raise r.err(other, f"section does not apply to kind {kind!r}")
        r.used.add(other)

    quantization = r.get("quantization")
    if quantization is not None and not isinstance(quantization, Mapping):
        raise r.err("quantization", f"must be a mapping (written by posekit quantize), got {quantization!r}")

    want = 2 if kind == "detector" and detector.decode == "end2end" else (1 if kind == "detector" else len(_OUTPUTS[kind]))
    if len(out_names) != want:
        raise o.err("names", f"kind {kind!r}{' (' + detector.decode + ')' if detector else ''} reads {want} "
                             f"output(s), got {len(out_names)}: {list(out_names)}")
    r.finish()
    return ModelCard(
        name=name, kind=kind, weights=weights, input_name=input_name, input_size=(size[0], size[1]),
        input_layout=layout, color=color, mean=mean, std=std, resize=resize, pad_value=pad_value,
        size_multiple=size_multiple, interpolation=interpolation, output_names=tuple(out_names), output_layouts=dict(layouts), schema=schema,
        score_thr=score_thr, nms_thr=nms_thr, nms_inside=nms_inside, box_padding=box_padding,
        description=description, paf=paf, simcc=simcc, heatmap=heatmap, detector=detector,
        quantization=dict(quantization) if quantization is not None else None, source=source,
    )


def list_cards() -> list[str]:
    """Names of the built-in cards."""
    return sorted(p.stem for p in CARD_DIR.glob("*.yaml"))


def load_card(name_or_path: str | Path | ModelCard) -> ModelCard:
    """A built-in card by name (``"rtmo-s"``) or a card YAML file by path.

    Raises:
        FileNotFoundError: a path that does not exist.
        KeyError: an unknown built-in name (the message lists the built-in cards).
        ValueError: an invalid card (naming the file and the field).
    """
    if isinstance(name_or_path, ModelCard):
        return name_or_path
    s = str(name_or_path)
    p = Path(s)
    if p.suffix.lower() in (".yaml", ".yml") or p.exists() or "/" in s or "\\" in s:
        if not p.is_file():
            raise FileNotFoundError(f"model card file not found: {s}")
        path = p
    else:
        path = CARD_DIR / f"{s}.yaml"
        if not path.is_file():
            raise KeyError(f"unknown model card {s!r}; built-in cards: {', '.join(list_cards())} "
                           f"(or give the path of a card .yaml file)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        raise ValueError(f"{path}: the card file is empty")
    return card_from_dict(data, source=str(path))
