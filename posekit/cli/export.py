"""``posekit export --model PRESET --weights CKPT --out FILE.onnx``: ONNX file + model card for the runtime.

Dispatch by model family: OpenPose presets (``openpose-*``: raw-BGR ``maps`` export, ``kind: paf`` card), top-down
presets (SimpleBaseline, ViTPose, RTMPose, CPM, Hourglass, CPN: the MMDeploy RTMPose interface, ``kind: simcc`` /
``kind: heatmap`` card) and RTMO presets (the MMDeploy RTMO interface, ``kind: rtmo`` card).
"""

from __future__ import annotations

import argparse


def _size(text: str) -> tuple[int, int]:
    from posekit.cli import parse_size

    return parse_size(text, "--input-size", 8, "192x192")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a posekit model (OpenPose, top-down, RTMO) to ONNX with a model card",
        description="Export a model preset with trained weights to FILE.onnx and write the model card FILE.yaml "
                    "beside it, so that `posekit predict --model FILE.yaml` and PoseEstimator('FILE.yaml') run it. "
                    "OpenPose presets: raw BGR 0..255 NCHW input, dynamic batch/height/width, one 'maps' output. "
                    "Top-down presets (simplebaseline-*, vitpose-*, rtmpose-*, ...): the official RTMPose MMDeploy "
                    "interface (input 'input', normalised crops, outputs 'simcc_x'/'simcc_y' or 'heatmaps'). RTMO "
                    "presets: the official RTMO MMDeploy interface ('dets', 'keypoints', NMS inside). The file is "
                    "checked against PyTorch in onnxruntime.",
    )
    p.add_argument("--model", required=True,
                   help="model preset the weights belong to (e.g. openpose-light, rtmpose-m, simplebaseline-r50, "
                        "rtmo-s)")
    w = p.add_mutually_exclusive_group(required=True)
    w.add_argument("--weights",
                   help="checkpoint: a posekit training checkpoint (best.pt / last.pt; EMA weights are used when "
                        "present), an official MMPose .pth, or a plain state_dict")
    w.add_argument("--random-init", action="store_true",
                   help="export the preset with random weights (seed 0): for checking the plumbing, not for use")
    p.add_argument("--out", required=True, help="the .onnx file to write (the card goes to the same path .yaml)")
    p.add_argument("--input-size", type=_size, default=None,
                   help="WxH: OpenPose: the card's input size (images are resized to this height, aspect kept; "
                        "default: the checkpoint's training data.input_size, else 192x192); RTMO: the fixed input "
                        "(multiples of 32; default: the model's); top-down: the model's own size (set it with --set "
                        "input_size=[W,H] where the preset allows)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model override (builder keyword argument), e.g. --set stage_width=48; replaces the "
                        "checkpoint's saved model.overrides")
    p.add_argument("--name", default=None, help="card name (default: the file's stem)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights even when the checkpoint has EMA ones")
    from posekit.cli.quantize import add_calibration_args

    p.add_argument("--int8", action="store_true",
                   help="also write an INT8 version, FILE-int8.onnx + FILE-int8.yaml (posekit quantize; needs "
                        "--calibration)")
    add_calibration_args(p, required=False)
    p.set_defaults(func=run)


def _parse_overrides(items: list[str]) -> dict | None:
    import yaml

    if not items:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _load(args, overrides: dict | None):
    """The model (eval mode) from --weights or --random-init."""
    import torch

    from posekit.models.checkpoints import load_preset
    from posekit.models.presets import build_model

    if args.random_init:
        torch.manual_seed(0)
        over = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (overrides or {}).items()}
        return build_model(args.model, **over).eval()
    return load_preset(args.model, args.weights, overrides, use_ema=not args.no_ema)


def _card_schema(saved, out):
    """The card's ``schema``: None (the built-in schema with the model's keypoint count) when the checkpoint saved
    none or a built-in one; for a custom schema, its YAML written beside the card (``<out>.schema.yaml``) and that
    file name (the card loader resolves it from the card's folder)."""
    if not saved:
        return None
    import yaml

    from posekit.data.io import write_bytes_atomic
    from posekit.schema import KeypointSchema, get_schema

    schema = KeypointSchema.from_dict(saved, source="checkpoint schema")
    try:
        if get_schema(schema.name).to_dict() == schema.to_dict():
            return schema.name
    except (KeyError, ValueError, FileNotFoundError):
        pass
    path = out.with_suffix(".schema.yaml")
    write_bytes_atomic(path, yaml.safe_dump(schema.to_dict(), sort_keys=False).encode())
    return path.name


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from posekit.models.checkpoints import checkpoint_settings, preset_family

    try:
        family = preset_family(args.model)
    except KeyError as e:
        raise ValueError(str(e).strip("'\"")) from None
    if not str(args.out).lower().endswith(".onnx"):
        raise ValueError(f"--out must name a .onnx file, got {args.out!r}")
    if getattr(args, "int8", False) and not args.calibration:
        raise ValueError("--int8 needs --calibration DIR|ANN.json (real images to calibrate on)")
    model = _load(args, _parse_overrides(args.overrides))
    if args.random_init:
        print(f"warning: {args.model} exported with RANDOM weights (--random-init)", file=sys.stderr)
    settings = {} if args.random_init else checkpoint_settings(args.weights)
    out = Path(args.out)
    if family == "openpose":
        from posekit.export.onnx import export_openpose_onnx

        size = args.input_size or settings.get("input_size") or (192, 192)
        onnx_path, card_path = export_openpose_onnx(model, out, input_size=size, params=settings.get("paf_params"),
                                                    name=args.name, opset=args.opset)
    elif family == "rtmo":
        from posekit.export.rtmo import export_rtmo_onnx

        onnx_path, card_path = export_rtmo_onnx(model, out, args.input_size, opset=args.opset, name=args.name)
    else:
        from posekit.export.topdown import export_topdown_onnx

        size = tuple(model.input_size)
        if args.input_size is not None and tuple(args.input_size) != size:
            raise ValueError(f"--input-size {args.input_size[0]}x{args.input_size[1]} differs from the top-down "
                             f"model's input {size[0]}x{size[1]}; set the model's size with --set input_size=[W,H]")
        onnx_path, card_path = export_topdown_onnx(model, out, name=args.name, opset=args.opset,
                                                   schema=_card_schema(settings.get("schema"), out))
    print(f"wrote {onnx_path} and its model card {card_path}")
    if getattr(args, "int8", False):
        from posekit.cli.quantize import quantize_from_args

        quantize_from_args(args, onnx_path, card_path, Path(onnx_path).with_name(Path(onnx_path).stem + "-int8.onnx"))
    return 0
