"""``posekit train CONFIG [--set key=value ...] [--resume PATH]``: run the training engine.

Multi-process: ``torchrun --nproc_per_node N -m posekit.cli train CONFIG`` (``batch_size`` stays the global
batch).
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train a model as the YAML config says (see docs/training.md). Under torchrun every process "
                    "runs this command; only rank 0 logs and saves.",
    )
    p.add_argument("config", help="YAML training config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.lr=1e-3 --set model.overrides.width=32 "
                        "(repeatable; the value is parsed as YAML and typed by the field)")
    p.add_argument("--resume", default=None, metavar="PATH",
                   help="continue from a checkpoint (a file, or a run folder holding last.pt)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from posekit.training.config import config_to_dict, load_config

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    from posekit.training.trainer import train

    out = train(cfg, resume=args.resume)
    best = out["best"]
    if out["last_checkpoint"] is not None:
        msg = f"trained to step {out['step']}; checkpoints in {out['out_dir']}"
        if best.get("value") is not None:
            msg += f"; best {best['metric']} {best['value']:.4f} at step {best['step']}"
        import os

        if int(os.environ.get("RANK", "0")) == 0:
            print(msg)
    return 0
