"""``posekit check-training-parity DIR``: posekit's targets, losses and gradients against MMPose's training-side
references (a folder in the layout of ``../shared/reference/mmpose-tiny-train``, see docs/training-parity.md).

Prints one row per model and term (posekit value, MMPose value, max difference, tolerance, pass/FAIL): top-down
targets, losses and gradients; RTMO's assignment, DCC values, losses and gradients in every training phase.
``--json FILE`` also writes the rows. Exit status 0 when every checked row passes, 1 when one fails or a reference
file is missing or malformed (the error names the file).
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check-training-parity",
        help="compare posekit's training targets, losses and gradients with MMPose's reference dumps",
        description="DIR is an mmpose-tiny-train folder (one sub-folder per model with batch.pt, targets.pt, "
                    "loss.pt, grads.pt, meta.json; RTMO also assignment.pt). The weights come from the matching "
                    "mmpose-tiny folder beside it (DIR/../mmpose-tiny/<name>) or from --forward. Exit status 0 "
                    "when everything checked passes, 1 otherwise.",
    )
    p.add_argument("dir", metavar="DIR", help="the mmpose-tiny-train folder (or one model folder inside it)")
    p.add_argument("--forward", metavar="DIR", default=None,
                   help="the mmpose-tiny folder with each model's meta.json + state_dict.pt "
                        "(default: DIR/../mmpose-tiny)")
    p.add_argument("--models", default=None, metavar="A,B",
                   help="only these model folders (comma-separated names; default: all)")
    p.add_argument("--no-trainmode", action="store_true",
                   help="skip the train-mode (BatchNorm batch statistics) loss rows")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the rows as a JSON list to FILE")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from posekit.training.parity import all_passed, check_reference, format_rows

    torch.set_num_threads(1)
    root = Path(args.dir)
    if not root.is_dir():
        raise FileNotFoundError(f"reference folder not found: {root}")
    names = [n for n in args.models.split(",") if n] if args.models else None
    forward = Path(args.forward) if args.forward else None
    if (root / "meta.json").is_file():  # one model folder
        names = [root.name]
        if forward is None:
            forward = root.parent.parent / "mmpose-tiny"
        root = root.parent
    if forward is not None and not forward.is_dir():
        raise FileNotFoundError(f"forward reference folder not found: {forward}")
    rows = check_reference(root, forward, names=names, trainmode=not args.no_trainmode)
    print(format_rows(rows))
    checked = [r for r in rows if r.passed is not None]
    failed = [r for r in checked if not r.passed]
    print(f"\n{len(checked) - len(failed)} of {len(checked)} checked rows pass, {len(failed)} fail, "
          f"{len(rows) - len(checked)} not checked")
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_dict() for r in rows], indent=1))
    return 0 if all_passed(rows) else 1
