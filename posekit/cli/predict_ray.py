"""``posekit predict ... --engine ray``: the options of a batch run on Ray and the run itself (posekit.batch).
``posekit predict`` registers these options and hands the parsed arguments here when ``--engine ray`` is given."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``--engine ray`` options of ``posekit predict``."""
    g = p.add_argument_group("batch inference on Ray (--engine ray; docs/scale.md)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: a Ray Data actor pool, exactly once and resumable "
                        "(needs --out-json; pip install 'posekit[ray]')")
    g.add_argument("--address", help="join a Ray cluster: 'auto' or ray://HEAD:10001 (default: a local instance "
                                     "with this machine's CPUs)")
    g.add_argument("--actors", type=int, help="actors in the pool, one PoseEstimator each (default: as many as "
                                               "the cluster's CPUs / --cpus-per-actor, or GPUs / --gpus-per-actor)")
    g.add_argument("--cpus-per-actor", type=float, default=1.0,
                   help="CPUs per actor; onnxruntime gets that many threads (1)")
    g.add_argument("--gpus-per-actor", type=float, default=0.0,
                   help="GPUs per actor; > 0 runs onnxruntime's CUDA execution provider (0)")
    g.add_argument("--resume", action="store_true",
                   help="skip the units whose shard is complete (a killed run, resumed, gives every image once)")
    g.add_argument("--shard-dir", help="the shards, one JSONL per unit (default OUT_JSON.shards); local or a URI")
    g.add_argument("--images-per-unit", type=int, default=16, help="images per unit / shard (16)")
    g.add_argument("--frames-per-unit", type=int, default=64,
                   help="video frames per unit, so a long video spreads over the actors (64)")
    g.add_argument("--image-dir", help="where the images of a COCO annotation-file SOURCE are (default: the "
                                       "'images' folder beside it, else its folder)")


def run(args: argparse.Namespace) -> int:
    """Run ``posekit predict`` on Ray; the exit status follows ``posekit predict`` (0, or 3 when some sources
    could not be read; ``--strict``: 1)."""
    if not args.out_json:
        raise ValueError("--engine ray writes its results to --out-json (and shards beside it); give --out-json")
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        raise RuntimeError("--engine ray needs Ray: pip install 'posekit[ray]' (or pip install 'ray[data]')") from None
    from posekit.batch import BatchConfig, run_batch

    cfg = BatchConfig(
        sources=list(args.sources), out_json=args.out_json, shard_dir=args.shard_dir, model=args.model,
        weights=args.weights, detector=args.detector, detector_weights=args.detector_weights,
        flip_test=args.flip_test, address=args.address, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
        gpus_per_actor=args.gpus_per_actor, images_per_unit=args.images_per_unit,
        frames_per_unit=args.frames_per_unit, resume=args.resume, annotations=args.annotations,
        image_dir=args.image_dir, out_dir=args.out_dir, kpt_thr=args.kpt_thr, max_frames=args.max_frames,
        errors_json=args.errors, progress=not args.no_progress)
    s = run_batch(cfg)
    for e in s.errors:
        print(f"posekit predict: skipped {e['source']}: {e['error']}", file=sys.stderr)
    print(s.line() + f", results: {args.out_json}" + (f", errors: {args.errors}" if args.errors else ""))
    if args.timing:
        for k, v in s.stages.items():
            print(f"{k:<14} {v:>10.1f} ms")
    if s.errors and args.strict:
        print("posekit predict: --strict: some sources could not be read", file=sys.stderr)
        return 1
    return 3 if s.errors else 0
