"""``posekit compare``: several pose pipelines side by side on one COCO-format set.

    posekit compare --annotations GT.json --images DIR --out-dir OUT \
        --pipeline NAME:model=CARD,weights=F,... [--pipeline ...] | --config configs/compare-offline.yaml
        [--sweep] [--stages] [--threads N] [--max-images N] [--no-progress]

Writes ``OUT/results/<pipeline>.json``, ``OUT/compare.json``, ``OUT/compare.md``, PNG plots and ``OUT/report.html``;
the last output line is one JSON object ``{pipeline: AP}``.
"""

from __future__ import annotations

import argparse
import json

PIPELINE_HELP = ("NAME:key=value,... with keys model (card or preset), weights (.onnx / .pth / .pt / random), "
                 "detector, detector_weights, boxes (model | gt | DETS.json), input_size (WxH), flip_test, threads, "
                 "overrides ({k: v}, for random weights), seed, stages (true: run --stages on it). Repeatable.")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare",
        help="pose pipelines side by side on the same images: accuracy, cost, scaling sweep, stages, report",
        description="Run several pose pipelines (top-down, bottom-up, one-stage) over one COCO-format set and write "
        "their results, accuracy (the numbers of posekit evaluate), cost per image and per stage, an optional "
        "scaling sweep and multi-stage study, and a self-contained report.html.",
    )
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file: annotations, images, pipelines: [...], options")
    p.add_argument("--annotations", metavar="GT.json", help="COCO-format keypoint annotations")
    p.add_argument("--images", metavar="DIR", help="folder of the annotation file's images")
    p.add_argument("--pipeline", action="append", default=[], metavar="NAME:key=value,...", help=PIPELINE_HELP)
    p.add_argument("--out-dir", metavar="DIR", help="output folder (default: compare-out, or the config's out_dir)")
    p.add_argument("--sweep", action="store_true", help="controlled scaling sweep: N = 1..32 people on one canvas")
    p.add_argument("--sweep-counts", metavar="N,N,...", help="people per canvas (default 1,2,4,8,16,32)")
    p.add_argument("--sweep-repeats", type=int, metavar="R", help="repeats of every canvas (default 5)")
    p.add_argument("--stages", action="store_true",
                   help="multi-stage study on the pipelines with stages=true (CPM, Hourglass, OpenPose presets)")
    p.add_argument("--threads", type=int, metavar="N", help="threads of every pipeline (overrides their own)")
    p.add_argument("--max-images", type=int, metavar="N", help="only the first N images of the annotation file")
    p.add_argument("--warmup", type=int, metavar="N", help="images run untimed first (default 1)")
    p.add_argument("--dataset", choices=("coco", "crowdpose"), help="stat set of the AP (default coco)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def config_from_args(args):
    """The :class:`~posekit.compare.CompareConfig` of the command line (and ``--config``)."""
    from posekit.compare.spec import CompareConfig, load_config, parse_pipeline_arg

    fields: dict = load_config(args.config) if args.config else {"pipelines": []}
    fields["pipelines"] = list(fields.get("pipelines", [])) + [parse_pipeline_arg(t) for t in args.pipeline]
    for key in ("annotations", "images", "out_dir", "max_images", "warmup", "dataset", "sweep_repeats"):
        v = getattr(args, key, None)
        if v is not None:
            fields[key] = v
    if args.sweep:
        fields["sweep"] = True
    if args.stages:
        fields["stages"] = True
    if args.sweep_counts:
        try:
            fields["sweep_counts"] = tuple(int(v) for v in args.sweep_counts.split(","))
        except ValueError:
            raise ValueError(f"--sweep-counts must be integers separated by commas, got {args.sweep_counts!r}") \
                from None
    if args.no_progress:
        fields["progress"] = False
    for key in ("annotations", "images"):
        if not fields.get(key):
            raise ValueError(f"--{key} is required (or '{key}' in the --config file)")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        for s in fields["pipelines"]:
            s.threads = args.threads
    if fields.get("stages") and not any(s.stages for s in fields["pipelines"]):
        raise ValueError("--stages needs at least one pipeline with stages=true (a CPM, Hourglass or OpenPose preset "
                         "with .pth/.pt or random weights)")
    return CompareConfig(**fields)


def run(args) -> int:
    from posekit.compare.core import run_compare

    cfg = config_from_args(args)
    report = run_compare(cfg)
    failed = []
    for name, e in report["pipelines"].items():
        if e["status"] == "ok":
            s = e["accuracy"]["stats"]
            c = e["cost"]["total"]
            print(f"{name:<24} {e['paradigm']:<10} threads {e['threads']}  AP {s['AP']:.3f}  "
                  f"median {c['median']:.1f} ms  p90 {c['p90']:.1f} ms")
        else:
            failed.append(name)
            print(f"{name:<24} ERROR: {e['error']}")
    for c in report["claims"]:
        print(f"- {c['claim']}: {c['measured']}")
    print(f"report: {cfg.out_dir}/report.html")
    print(json.dumps({n: (e["accuracy"]["stats"]["AP"] if e["status"] == "ok" else None)
                      for n, e in report["pipelines"].items()}))
    return 1 if len(failed) == len(report["pipelines"]) else 0
