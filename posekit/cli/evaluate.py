"""``posekit evaluate``: COCO / CrowdPose keypoint AP of a results json against annotations.

Two modes:

- ``--results RES.json``: evaluate an existing COCO results file;
- ``--model CARD --images DIR``: run a model (a built-in card name or a card YAML) over the annotation file's
  images first (``--detector`` / ``--boxes gt|DETS.json`` pick the person boxes of top-down models), optionally
  writing the results (``--out-json``), then evaluate them.

``--backend`` picks the evaluator: ``fast`` (default; the numbers of pycocotools, or of xtcocotools for CrowdPose)
or the references ``pycocotools`` / ``xtcocotools``.

Output: the evaluator's own summary, then a table of the named stats, and as the LAST line exactly one JSON object
of the stats (``--quiet``: only that line).
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="COCO/CrowdPose keypoint AP/AR of a results json (pycocotools' numbers, fast; or the references)",
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
        "--backend", choices=("fast", "pycocotools", "xtcocotools"), default="fast",
        help="evaluator: 'fast' (default: posekit's array evaluator, pycocotools' numbers for coco and xtcocotools' "
        "for crowdpose) or a reference, 'pycocotools' / 'xtcocotools' (crowdpose: xtcocotools only)",
    )
    p.add_argument("--dataset", choices=("coco", "crowdpose"), default="coco", help="stat set (default: coco)")
    p.add_argument("--quiet", action="store_true", help="print only the JSON line")
    m = p.add_argument_group("model mode (predict, then evaluate)")
    m.add_argument("--model", metavar="CARD", help="model card name (e.g. tfpose-mnv2, rtmo-s) or card YAML path")
    m.add_argument("--weights", metavar="PATH", help="weights for --model: an ONNX file, or a .pth/.pt checkpoint "
                   "(PyTorch backend); else the cache / download")
    m.add_argument("--detector", metavar="CARD", help="person detector card for a top-down --model")
    m.add_argument("--detector-weights", metavar="PATH", help="ONNX weights for --detector")
    m.add_argument(
        "--boxes", metavar="gt|DETS.json", default="model",
        help="top-down person boxes: 'gt' (ground-truth boxes) or a COCO detections json (default: the detector)",
    )
    m.add_argument("--images", metavar="DIR", help="folder of the annotation file's images (required with --model)")
    m.add_argument("--out-json", metavar="RES.json", help="also write the predicted results here")
    m.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    m.add_argument("--flip-test", action="store_true", help="flip test (top-down models)")
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


def predict_results(args) -> list[dict]:
    """Run ``args.model`` over the images of ``args.annotations`` (model mode); write ``--out-json`` if given."""
    from posekit.pipelines.coco_runner import predict_coco
    from posekit.pipelines.estimator import PoseEstimator

    if not args.images:
        raise ValueError("--images DIR is required with --model (the folder of the annotation file's images)")
    estimator = PoseEstimator(
        model=args.model, detector=args.detector, weights=args.weights, detector_weights=args.detector_weights,
        threads=args.threads, flip_test=args.flip_test,
    )
    results = predict_coco(estimator, args.annotations, args.images, boxes=args.boxes, progress=not args.quiet)
    if args.out_json:
        from posekit.evaluation.results import save_results

        save_results(results, args.out_json)
    return results


def run(args) -> int:
    if args.model and args.results:
        raise ValueError("give either --results (evaluate a file) or --model (predict, then evaluate), not both")
    if args.model:
        run_evaluation(args, predict_results(args))
    elif not args.results:
        raise ValueError("--results is required (a COCO keypoint results json), or --model CARD --images DIR")
    else:
        run_evaluation(args, args.results)
    return 0
