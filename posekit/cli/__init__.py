"""The ``posekit`` command line.

Each sub-command lives in its own module under ``posekit.cli`` and exposes ``add_parser(subparsers)`` (which
registers its arguments and sets ``func``) so that ``posekit --help`` stays fast: heavy imports happen inside the
command functions.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command name -> module under posekit.cli
COMMANDS = {
    "synth": "synth",
    "evaluate": "evaluate",
    "predict": "predict",
    "export": "export",
    "quantize": "quantize",
    "train": "train",
    "compare": "compare",
    "check-training-parity": "check_parity",
    "serve": "serve",
}


def parse_size(text: str, flag: str, minimum: int, example: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(w, h)``; a clear error naming ``flag`` for anything else or a side below ``minimum``."""
    try:
        w, h = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{flag} must be WxH with positive integers (e.g. {example}), got {text!r}") from None
    if w < minimum or h < minimum:
        raise ValueError(f"{flag} must be WxH with both sides at least {minimum} pixels, got {text!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posekit",
        description="Multi-person 2D human pose estimation: predict, evaluate, train, export, synthesise data.",
    )
    from posekit import __version__

    parser.add_argument("--version", action="version", version=f"posekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"posekit.cli.{module}")
        except ModuleNotFoundError as e:  # a command whose module is not part of this build
            if e.name != f"posekit.cli.{module}":
                raise
            continue
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        # Bad input: a clear one-line error naming what is wrong, no traceback.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"posekit {args.command}: error: {msg}", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
