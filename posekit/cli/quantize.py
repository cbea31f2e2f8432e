"""``posekit quantize IN.onnx --card CARD --calibration DIR|ANN.json``: an INT8 ONNX file + card (docs/quantization.md)."""

from __future__ import annotations

import argparse


def add_calibration_args(p, required: bool) -> None:
    """The calibration options shared by ``quantize`` and ``export --int8``."""
    p.add_argument("--calibration", required=required, metavar="DIR|ANN.json",
                   help="real images to calibrate on: a folder of images, or a COCO keypoint json (images in "
                        "images/ beside it or in its folder; top-down models crop its person boxes)")
    p.add_argument("--calibration-method", default="minmax", choices=("minmax", "percentile", "entropy"),
                   help="activation range estimate (default minmax; docs/quantization.md says why)")
    p.add_argument("--calibration-images", type=int, default=32, metavar="N",
                   help="use the first N calibration images (default 32)")
    p.add_argument("--keep-fp32", action="append", default=[], metavar="PATTERN",
                   help="keep the nodes whose name, or the name of a tensor they write (e.g. a graph output), "
                        "matches this fnmatch pattern in FP32; repeatable (e.g. --keep-fp32 'MobilenetV2/*')")
    p.add_argument("--op-types", default=None, metavar="LIST",
                   help="comma-separated operator types to quantize (default Conv,ConvTranspose,MatMul,Gemm; "
                        "'onnxruntime' for onnxruntime's own list, which also quantizes Concat, Add, Mul, Sigmoid...)")
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor instead of per channel")
    p.add_argument("--reduce-range", action="store_true",
                   help="7-bit weights, for CPUs without VNNI where uint8 x int8 products can saturate")
    p.add_argument("--calibration-detector", default=None, metavar="CARD",
                   help="top-down models calibrated on a folder: the detector giving the crops (default "
                        "yolox-nano-human)")
    p.add_argument("--calibration-detector-weights", default=None, metavar="FILE", help="that detector's ONNX file")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "quantize",
        help="INT8 version of an ONNX model (static quantization calibrated on real images)",
        description="Quantize an ONNX model to INT8 with onnxruntime's static quantization (QDQ, int8 per-channel "
                    "weights, uint8 activations), calibrated on real images run through the card's own "
                    "preprocessing, and write OUT.onnx with its card OUT.yaml, which every pipeline runs like the "
                    "FP32 card. Prints each output's error against the FP32 file.",
    )
    p.add_argument("onnx", help="the FP32 ONNX file")
    p.add_argument("--card", required=True, help="the file's model card (a built-in name such as tfpose-mnv2, or "
                                                 "a card .yaml)")
    p.add_argument("--out", default=None, help="the INT8 .onnx to write (default: IN-int8.onnx beside IN)")
    p.add_argument("--name", default=None, help="the new card's name (default: the card's name + -int8)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    add_calibration_args(p, required=True)
    p.set_defaults(func=run)


def settings_from(args):
    from posekit.quantization import QuantizeSettings

    if args.calibration_images is not None and args.calibration_images < 1:
        raise ValueError(f"--calibration-images must be >= 1, got {args.calibration_images}")
    ops = QuantizeSettings().op_types
    if args.op_types:
        ops = None if args.op_types.strip().lower() == "onnxruntime" else tuple(
            o.strip() for o in args.op_types.split(",") if o.strip())
    return QuantizeSettings(method=args.calibration_method, per_channel=not args.per_tensor, op_types=ops,
                            keep_fp32=tuple(args.keep_fp32), max_images=args.calibration_images,
                            reduce_range=args.reduce_range)


def quantize_from_args(args, onnx_in, card, out, name=None) -> None:
    """Run the quantization with the shared options and print the per-output error table."""
    from posekit.quantization import format_errors, quantize_model

    _, _, report = quantize_model(onnx_in, card, args.calibration, out, settings_from(args),
                                  detector=args.calibration_detector,
                                  detector_weights=args.calibration_detector_weights, name=name,
                                  threads=getattr(args, "threads", None), log=print)
    print("error of the INT8 file against the FP32 file on the calibration inputs:")
    print(format_errors(report["errors"]))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    src = Path(args.onnx)
    out = Path(args.out) if args.out else src.with_name(src.stem + "-int8.onnx")
    quantize_from_args(args, src, args.card, out, args.name)
    return 0
