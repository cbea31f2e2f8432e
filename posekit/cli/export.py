"""``posekit export --model PRESET --weights CKPT --out FILE.onnx``: ONNX file + model card for the runtime."""

from __future__ import annotations

import argparse


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--input-size must be WxH with positive integers (e.g. 192x192), got {text!r}") from None
    if w < 8 or h < 8:
        raise ValueError(f"--input-size must be WxH with both sides at least 8 pixels, got {text!r}")
    return w, h


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a trained OpenPose model to ONNX with a model card",
        description="Export an OpenPose preset with trained weights to FILE.onnx (raw BGR 0..255 NCHW input, "
                    "dynamic batch/height/width, one 'maps' output) and write the model card FILE.yaml beside it, "
                    "so that `posekit predict --model FILE.yaml` and PoseEstimator('FILE.yaml') run it. The file "
                    "is checked against PyTorch in onnxruntime.",
    )
    p.add_argument("--model", required=True, help="model preset the weights belong to (e.g. openpose-light)")
    p.add_argument("--weights", required=True,
                   help="checkpoint: a posekit training checkpoint (best.pt / last.pt; EMA weights are used when "
                        "present) or a plain state_dict")
    p.add_argument("--out", required=True, help="the .onnx file to write (the card goes to the same path .yaml)")
    p.add_argument("--input-size", type=_size, default=None,
                   help="WxH: the card's input size (images are resized to this height, aspect kept); default: the "
                        "checkpoint's training data.input_size, else 192x192")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model override (builder keyword argument), e.g. --set stage_width=48; replaces the "
                        "checkpoint's saved model.overrides")
    p.add_argument("--name", default=None, help="card name (default: the file's stem)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights even when the checkpoint has EMA ones")
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


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from posekit.export.onnx import export_openpose_onnx, load_openpose_checkpoint
    from posekit.models.presets import PRESETS

    if args.model not in PRESETS:
        raise ValueError(f"unknown model preset {args.model!r}; known: {sorted(PRESETS)}")
    if not str(args.out).lower().endswith(".onnx"):
        raise ValueError(f"--out must name a .onnx file, got {args.out!r}")
    model = load_openpose_checkpoint(args.model, args.weights, _parse_overrides(args.overrides),
                                     use_ema=not args.no_ema)
    size, params = args.input_size, None
    ckpt = torch.load(args.weights, map_location="cpu", weights_only=True)
    cfg = ckpt.get("config") if isinstance(ckpt, dict) else None
    if isinstance(cfg, dict):
        if size is None and (cfg.get("data") or {}).get("input_size"):
            size = tuple(int(v) for v in cfg["data"]["input_size"])
        if cfg.get("task") == "openpose":
            from posekit.training.tasks.openpose import DEFAULT_EVAL_PARAMS

            params = {**DEFAULT_EVAL_PARAMS, **dict((cfg.get("task_options") or {}).get("paf_params") or {})}
    onnx_path, card_path = export_openpose_onnx(model, Path(args.out), input_size=size or (192, 192),
                                                params=params, name=args.name, opset=args.opset)
    print(f"wrote {onnx_path} and its model card {card_path}")
    return 0
