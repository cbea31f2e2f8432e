"""``posekit evaluate``: COCO / CrowdPose keypoint AP of a results json against annotations.

Output: the evaluator's own summary, then a table of the named stats, and as the LAST line exactly one JSON object
of the stats (``--quiet``: only that line). A later ``--model CARD --images DIR`` mode (predict, then evaluate) can
reuse :func:`print_stats` and :func:`run_evaluation`.
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="COCO/CrowdPose keypoint AP/AR of a results json (pycocotools or xtcocotools)",
        description="Evaluate COCO keypoint results against COCO-format annotations. The last output line is one "
        "JSON object with the named stats.",
    )
    p.add_argument("--annotations", required=True, metavar="GT.json", help="COCO-format keypoint annotations")
    p.add_argument(
        "--results", metavar="RES.json",
        help="COCO keypoint results: a json list of {image_id, category_id, keypoints, score}",
    )
    p.add_argument(
        "--schema", metavar="NAME|FILE",
        help="keypoint schema whose OKS sigmas are used (built-in name or YAML/JSON file); default: COCO-17 "
        "(CrowdPose-14 with --dataset crowdpose)",
    )
    p.add_argument(
        "--no-area", action="store_true",
        help="OKS scale from the ground-truth box (w*h*0.53, as xtcocotools' use_area=False) instead of 'area'",
    )
    p.add_argument(
        "--backend", choices=("pycocotools", "xtcocotools"), default=None,
        help="evaluator (default: pycocotools for coco, xtcocotools for crowdpose)",
    )
    p.add_argument("--dataset", choices=("coco", "crowdpose"), default="coco", help="stat set (default: coco)")
    p.add_argument("--quiet", action="store_true", help="print only the JSON line")
    p.set_defaults(func=run)
    return p


def print_stats(stats) -> None:
    """Print the named stats as an aligned two-column table (values with 3 decimals, as pycocotools prints)."""
    width = max((len(k) for k in stats), default=4)
    print(f"{'metric':<{width}}  value")
    print(f"{'-' * width}  -----")
    for name, value in stats.items():
        print(f"{name:<{width}}  {value:.3f}")


def run_evaluation(args, results) -> dict:
    """Evaluate ``results`` (a path or a list of entries) with the options in ``args``; print as documented."""
    from posekit.evaluation.coco import evaluate_coco_keypoints

    sigmas = None
    if args.schema:
        from posekit.schema import get_schema

        sigmas = get_schema(args.schema)
    stats = evaluate_coco_keypoints(
        args.annotations,
        results,
        sigmas=sigmas,
        use_area=not args.no_area,
        backend=args.backend,
        dataset=args.dataset,
    )
    if not args.quiet:
        print(stats.log, end="" if stats.log.endswith("\n") else "\n")
        print()
        print_stats(stats)
    print(json.dumps(dict(stats)))
    return stats


def run(args) -> int:
    if getattr(args, "model", None) is None and not args.results:
        raise ValueError("--results is required (a COCO keypoint results json)")
    run_evaluation(args, args.results)
    return 0
