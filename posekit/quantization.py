"""INT8 models: onnxruntime static quantization calibrated on real images through the card's own pipeline.

``quantize_model(onnx_in, card, calibration, out)`` writes ``out`` (an INT8 ONNX file) and the card beside it
(``out.yaml``): the same card with ``weights.path`` pointing at the INT8 file, ``-int8`` added to the name and a
``quantization`` section that records how the file was made and its error against the FP32 file. Every pipeline
runs that card unchanged (same input, same outputs, same post-processing).

How (``docs/quantization.md`` has the measurements and the choices):

* **calibration inputs**: the card's own pipeline (``PoseEstimator`` for pose cards, ``PersonDetector`` for
  detector cards) runs the FP32 file on the calibration images, and the exact network batches it feeds are
  recorded — the same resize, letterbox, crops, colour order, normalisation and multi-scale sizes as at inference.
  Top-down crops come from the annotation file's person boxes (``ANN.json``) or from the detector (a folder);
* **quantization**: ``onnxruntime.quantization.quantize_static`` on the file after ``quant_pre_process`` (shape
  inference and onnxruntime's graph optimisation), QDQ format, int8 weights per output channel, uint8 activations
  (U8S8: onnxruntime's fast path on x86; S8S8 ran slower than FP32 on tf-pose here), only ``Conv``,
  ``ConvTranspose``, ``MatMul`` and ``Gemm`` by default, MinMax calibration by default (``docs/quantization.md``:
  why);
* **FP32 layers**: ``keep_fp32`` patterns (``fnmatch``, matched against node names and the names of the tensors
  the nodes write, so a graph output's name keeps the node that writes it) leave those nodes unquantized;
* **error**: the FP32 and INT8 files run on the recorded batches; per output: max and mean absolute difference,
  and the signal-to-quantization-noise ratio ``10 log10(sum fp32^2 / sum (fp32 - int8)^2)`` in dB.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from posekit.runtime.cards import ModelCard, card_from_dict, load_card

__all__ = ["QuantizeSettings", "calibration_items", "per_image_normalizations", "record_network_inputs",
           "quantize_model", "output_errors", "CALIBRATION_METHODS", "format_errors"]

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class QuantizeSettings:
    """Settings of :func:`quantize_model`.

    Attributes:
        method: calibration method, ``minmax`` (default), ``percentile`` (99.999th percentile of |x|) or
            ``entropy`` (KL divergence of the histograms).
        per_channel: int8 weights with one scale per output channel (default) instead of one per tensor.
        keep_fp32: node-name / tensor-name patterns (``fnmatch``) whose nodes stay FP32.
        max_images: calibration images used (the first ones in name order; None: all).
        reduce_range: 7-bit weights (for CPUs without VNNI, where U8S8 products can saturate).
        op_types: the operator types quantized (their inputs, weights and bias); everything else runs in FP32
            between them. Default: the compute-heavy ``Conv``, ``ConvTranspose``, ``MatMul``, ``Gemm``.
            onnxruntime's default list also quantizes ``Concat``, ``Add``, ``Resize``, ``Sigmoid``..., which puts one
            scale on tensors of different magnitudes (YOLOX's box offsets and its 0..1 scores, tf-pose's features
            and maps) and lost people and AP in the measurements of docs/quantization.md; None: onnxruntime's list.
        extra: more ``extra_options`` for ``quantize_static``.
    """

    method: str = "minmax"
    per_channel: bool = True
    keep_fp32: tuple[str, ...] = ()
    max_images: int | None = 32
    reduce_range: bool = False
    op_types: tuple[str, ...] | None = ("Conv", "ConvTranspose", "MatMul", "Gemm")
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- calibration data
def calibration_items(source: str | Path, max_images: int | None = None
                      ) -> list[tuple[Path, np.ndarray | None]]:
    """``[(image path, person boxes xyxy or None)]`` from a folder of images or a COCO annotation file.

    A folder gives its images in name order without boxes (top-down models then take the detector's boxes). A COCO
    json gives its images (``file_name`` relative to ``images/`` beside the json, or to the json's folder) with the
    non-crowd person boxes of each (images without one are skipped).

    Raises:
        FileNotFoundError: a missing source or image; ValueError: an empty folder, a json without images.
    """
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"calibration source not found: {src} (give a folder of images or a COCO json)")
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"calibration folder {src} has no images ({', '.join(IMAGE_SUFFIXES)})")
        return [(p, None) for p in files[:max_images]]
    from posekit.data.io import read_json

    data = read_json(src)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not data["images"]:
        raise ValueError(f"{src}: calibration json must be a COCO file with a non-empty 'images' list")
    boxes: dict[Any, list] = {}
    for a in data.get("annotations", []) or []:
        b = a.get("bbox")
        if a.get("iscrowd", 0) or not b or len(b) != 4 or b[2] <= 1 or b[3] <= 1:
            continue
        boxes.setdefault(a.get("image_id"), []).append([b[0], b[1], b[0] + b[2], b[1] + b[3]])
    roots = [src.parent / "images", src.parent]
    out = []
    for im in sorted(data["images"], key=lambda r: str(r.get("file_name", ""))):
        if im.get("id") not in boxes:
            continue
        name = str(im.get("file_name", ""))
        path = next((r / name for r in roots if (r / name).is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{src}: image {name!r} (id {im.get('id')}) not found in "
                                    f"{' or '.join(str(r) for r in roots)}")
        out.append((path, np.asarray(boxes[im["id"]], np.float32)))
        if max_images is not None and len(out) >= max_images:
            break
    if not out:
        raise ValueError(f"{src}: no image with a non-crowd person box to calibrate on")
    return out


@contextmanager
def _recording(runner) -> Iterator[list]:
    """Record every batch given to ``runner.run`` (an instance attribute shadows the method for the duration; the
    pipelines call ``runner.run`` on the very object, so what is recorded is exactly what the network gets)."""
    seen: list = []
    original = runner.run

    def run(batch, *args, **kwargs):
        seen.append(np.array(batch, np.float32, copy=True))
        return original(batch, *args, **kwargs)

    runner.run = run
    try:
        yield seen
    finally:
        del runner.run


def record_network_inputs(card: ModelCard, weights: str | Path, items: Sequence[tuple[Path, np.ndarray | None]],
                          detector: str | Path | ModelCard | None = None, detector_weights: str | Path | None = None,
                          threads: int | None = None) -> list[np.ndarray]:
    """The network batches the card's pipeline feeds ``weights`` (the FP32 file) on the calibration images.

    Pose cards run through :class:`~posekit.pipelines.estimator.PoseEstimator` (top-down ones with the item's boxes
    when it has them, else ``detector``, default ``yolox-nano-human``); detector cards through
    :class:`~posekit.detectors.PersonDetector`.
    """
    from posekit.data.io import read_image

    if card.kind == "detector":
        from posekit.detectors import PersonDetector

        pipe = PersonDetector(card, weights, threads=threads)
        runner, call = pipe.model, lambda image, boxes: pipe(image)
    else:
        from posekit.pipelines.estimator import PoseEstimator

        est = PoseEstimator(card, weights=weights, threads=threads, detector=detector if card.is_topdown else None,
                            detector_weights=detector_weights if card.is_topdown else None)
        runner = est.model

        def call(image, boxes):
            return est(image, boxes=boxes) if (card.is_topdown and boxes is not None) else est(image)

    batches: list[np.ndarray] = []
    with _recording(runner) as seen:
        for path, boxes in items:
            call(read_image(path), boxes)
    for b in seen:
        if b.shape[0]:
            batches.append(b)
    if not batches:
        raise ValueError(f"model card '{card.name}': the calibration images gave no network input (a top-down "
                         f"model on images where the detector finds nobody?)")
    return batches


# ---------------------------------------------------------------------------------------------- quantization
def per_image_normalizations(model) -> int:
    """The ``BatchNormalization`` nodes whose mean and variance are computed in the graph (not constants): batch
    norm exported in training mode, which normalises with the statistics of the input itself (tf-pose's
    MobileNetV2 has 39). Static INT8 was measured unusable on such a graph (``docs/quantization.md``)."""
    consts = {i.name for i in model.graph.initializer}
    return sum(1 for n in model.graph.node if n.op_type == "BatchNormalization" and len(n.input) >= 5
               and (n.input[3] not in consts or n.input[4] not in consts))


def _split_batches(batches: Sequence[np.ndarray], fixed_batch: int | None, cap: int = 16) -> list[np.ndarray]:
    """Batches as the file takes them: single items for a fixed batch of 1, else at most ``cap`` at a time."""
    step = 1 if fixed_batch == 1 else cap
    return [b[i:i + step] for b in batches for i in range(0, b.shape[0], step)]


def _nodes_to_exclude(model, patterns: Sequence[str]) -> list[str]:
    """Names of the nodes matched by any pattern (by node name or by one of its output tensors' names)."""
    names: list[str] = []
    unmatched = []
    for pat in patterns:
        hit = [n.name for n in model.graph.node
               if fnmatch.fnmatchcase(n.name, pat) or any(fnmatch.fnmatchcase(o, pat) for o in n.output)]
        if not hit:
            unmatched.append(pat)
        names += [h for h in hit if h not in names]
    if unmatched:
        raise ValueError(f"keep_fp32 pattern(s) {unmatched} match no node or tensor of the model (node names look "
                         f"like {[n.name for n in model.graph.node[:3]]})")
    return names


def _preprocess(src: Path, dst: Path) -> None:
    """``quant_pre_process`` (symbolic shape inference + onnxruntime optimisation); plain ONNX shape inference
    when the symbolic one does not know an op of the graph. Files below opset 13 are converted to opset 13 first
    (per-channel ``DequantizeLinear`` needs its ``axis``, new in opset 13; the YOLOX exports are opset 11)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(src))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset < 13:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, 13)
        except Exception as e:  # onnx's converter raises assorted errors for ops it cannot convert
            raise RuntimeError(f"{src}: opset {opset} file could not be converted to opset 13 for per-channel "
                               f"quantization ({e}); re-export it at opset >= 13") from None
        src = dst.with_name("opset13.onnx")
        onnx.save(model, str(src))
    # the symbolic shape inference writes temporary files (sym_shape_infer_temp.onnx + external data) into the
    # current directory and leaves them there when it fails: run it from the temporary folder
    import os

    here = os.getcwd()
    src, dst = Path(src).resolve(), Path(dst).resolve()
    os.chdir(dst.parent)
    try:
        try:
            quant_pre_process(str(src), str(dst))
        except Exception:  # onnxruntime's symbolic shape inference raises its own errors on unknown ops
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    finally:
        os.chdir(here)


def quantize_model(onnx_in: str | Path, card: str | Path | ModelCard, calibration: str | Path, out: str | Path,
                   settings: QuantizeSettings = QuantizeSettings(), detector: str | Path | ModelCard | None = None,
                   detector_weights: str | Path | None = None, name: str | None = None,
                   threads: int | None = None, log: Callable[[str], None] | None = None) -> tuple[Path, Path, dict]:
    """Write the INT8 file ``out`` and its card ``out.yaml`` (module docstring).

    Args:
        onnx_in: the FP32 ONNX file (the card's weights).
        card: the FP32 file's card (name or file; the new card is that card's YAML with the changes above).
        calibration: a folder of images or a COCO json (see :func:`calibration_items`).
        out: the INT8 ``.onnx`` to write (atomically; the card goes to the same path with ``.yaml``).
        settings: :class:`QuantizeSettings`.
        detector, detector_weights: top-down cards calibrated on a folder take their crops from this detector.
        name: the new card's name (default: the card's name + ``-int8``).
        threads: onnxruntime threads for calibration and the error measurement.
        log: called with progress lines.

    Returns:
        ``(onnx path, card path, report)``; ``report`` is the card's ``quantization`` section.
    """
    import onnx
    import yaml
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from posekit.data.io import write_bytes_atomic
    from posekit.runtime.onnx import OnnxModel

    say = log or (lambda s: None)
    onnx_in, out = Path(onnx_in), Path(out)
    if not onnx_in.is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_in}")
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"the INT8 output must be a .onnx file, got {out}")
    if out.resolve() == onnx_in.resolve():
        raise ValueError(f"the INT8 output {out} would overwrite the FP32 input")
    if settings.method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got "
                         f"{settings.method!r}")
    card = load_card(card)
    if not Path(card.source).is_file():
        raise ValueError(f"model card '{card.name}' was not read from a file; quantize needs the card's YAML file")
    raw_card = yaml.safe_load(Path(card.source).read_text(encoding="utf-8"))
    per_image = per_image_normalizations(onnx.load(str(onnx_in)))
    if per_image:
        msg = (f"{onnx_in.name} normalises {per_image} layer(s) with the statistics of the input itself (batch norm "
               f"exported in training mode); static INT8 lost all of tf-pose's AP (docs/quantization.md): check the "
               f"accuracy of the result before using it")
        if log:
            say(f"warning: {msg}")
        else:
            warnings.warn(msg, stacklevel=2)
    items = calibration_items(calibration, settings.max_images)
    say(f"calibration: {len(items)} image(s) from {calibration} through the '{card.name}' pipeline")
    batches = record_network_inputs(card, onnx_in, items, detector, detector_weights, threads)
    fp32 = OnnxModel(onnx_in, threads=threads, card=card)
    feeds = _split_batches(batches, fp32.fixed_batch)
    say(f"calibration: {len(feeds)} network input(s), shapes {sorted({tuple(f.shape) for f in feeds})[:4]}")

    class Reader(CalibrationDataReader):
        """The recorded inputs, one at a time: with ``CalibStridedMinMax = 1`` onnxruntime collects (and for the
        histogram methods merges) each input's statistics before the next, so inputs of different sizes (whole
        images keep their aspect ratio) can be mixed and memory stays at one input's activations."""

        def __init__(self) -> None:
            self._it = iter(feeds)

        def __len__(self) -> int:
            return len(feeds)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it = iter(feeds[start_index:end_index])

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {card.input_name: x}

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[settings.method]
    extra = {"CalibStridedMinMax": 1}
    extra.update(settings.extra)
    quant_logger = logging.getLogger()  # onnxruntime.quantization warns through the root logger
    level = quant_logger.level
    with tempfile.TemporaryDirectory(prefix="posekit-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        _preprocess(onnx_in, pre)
        exclude = _nodes_to_exclude(onnx.load(str(pre)), settings.keep_fp32) if settings.keep_fp32 else []
        if exclude:
            say(f"keeping {len(exclude)} node(s) in FP32 ({', '.join(settings.keep_fp32)})")
        q = Path(tmp) / "int8.onnx"
        quant_logger.setLevel(logging.ERROR)
        try:
            quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=settings.per_channel,
                            reduce_range=settings.reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=method, nodes_to_exclude=exclude or None,
                            op_types_to_quantize=list(settings.op_types) if settings.op_types else None,
                            extra_options=extra, calibration_providers=["CPUExecutionProvider"])
        finally:
            quant_logger.setLevel(level)
        data = q.read_bytes()
    int8 = OnnxModel(data, threads=threads, card=card)
    errors = output_errors(fp32, int8, feeds, card.output_names)
    report = {
        "format": "QDQ", "weights": "int8 per-channel" if settings.per_channel else "int8 per-tensor",
        "activations": "uint8", "method": settings.method, "reduce_range": bool(settings.reduce_range),
        "calibration": {"source": str(calibration), "images": len(items), "inputs": int(sum(f.shape[0] for f in feeds))},
        "op_types": list(settings.op_types) if settings.op_types else "onnxruntime default",
        "fp32_file": onnx_in.name, "keep_fp32": list(settings.keep_fp32), "fp32_nodes": len(exclude),
        "per_image_normalizations": per_image,
        "errors": errors,
    }
    raw_card["name"] = name or f"{card.name}-int8"
    raw_card["description"] = (f"{raw_card.get('description') or card.name} — INT8 (onnxruntime static "
                               f"quantization, {settings.method} calibration on {len(items)} images)")
    raw_card["weights"] = {"path": out.name}
    raw_card["quantization"] = report
    card_path = out.with_suffix(".yaml")
    text = (f"# written by posekit quantize: the INT8 version of model card '{card.name}' ({card.source})\n"
            + yaml.safe_dump(raw_card, sort_keys=False, default_flow_style=None, width=110))
    card_from_dict(yaml.safe_load(text), source=str(card_path))  # the card must load before anything is written
    write_bytes_atomic(out, data)
    write_bytes_atomic(card_path, text.encode("utf-8"))
    say(f"wrote {out} ({len(data) / 1e6:.2f} MB, FP32 {onnx_in.stat().st_size / 1e6:.2f} MB) and {card_path}")
    return out, card_path, report


def output_errors(fp32, int8, feeds: Sequence[np.ndarray], names: Sequence[str]) -> dict[str, dict]:
    """Per output: ``max_abs``, ``mean_abs``, ``sqnr_db`` (FP32 energy over the energy of the difference) and
    ``compared`` (inputs whose output shapes agreed; outputs with data-dependent sizes such as RTMO's kept
    detections can differ); over all ``feeds``, both runners having ``run(batch, names)``."""
    stats = {n: {"max": 0.0, "sum": 0.0, "count": 0, "signal": 0.0, "noise": 0.0, "ok": 0, "bad": 0}
             for n in names}
    for x in feeds:
        a, b = fp32.run(x, list(names)), int8.run(x, list(names))
        for n in names:
            ra, rb, st = np.asarray(a[n], np.float64), np.asarray(b[n], np.float64), stats[n]
            if ra.shape != rb.shape:
                st["bad"] += 1
                continue
            d = np.abs(ra - rb)
            st["max"] = max(st["max"], float(d.max()) if d.size else 0.0)
            st["sum"] += float(d.sum())
            st["count"] += d.size
            st["signal"] += float((ra ** 2).sum())
            st["noise"] += float((d ** 2).sum())
            st["ok"] += 1
    out = {}
    for n, st in stats.items():
        if st["noise"] == 0:
            sqnr = "inf"
        else:
            sqnr = round(10 * math.log10(st["signal"] / st["noise"]), 2) if st["signal"] > 0 else "-inf"
        out[n] = {"max_abs": round(st["max"], 6), "mean_abs": round(st["sum"] / st["count"], 6) if st["count"] else None,
                  "sqnr_db": sqnr, "compared": st["ok"], "shape_differs": st["bad"]}
    return out


def format_errors(errors: dict[str, dict]) -> str:
    """The per-output error table as text."""
    lines = [f"{'output':<32} {'SQNR dB':>8} {'mean |d|':>10} {'max |d|':>10} {'compared':>9}"]
    for n, e in errors.items():
        mean = "-" if e["mean_abs"] is None else f"{e['mean_abs']:.4g}"
        extra = f" ({e['shape_differs']} with other shapes)" if e.get("shape_differs") else ""
        lines.append(f"{n:<32} {str(e['sqnr_db']):>8} {mean:>10} {e['max_abs']:>10.4g} {e['compared']:>9}{extra}")
    return "\n".join(lines)
