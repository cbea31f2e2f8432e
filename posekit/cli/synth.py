"""``posekit synth``: write a synthetic COCO person-keypoints dataset (articulated figures)."""

from __future__ import annotations

import argparse


def _size(text: str) -> tuple[int, int]:
    from posekit.cli import parse_size

    return parse_size(text, "--size", 16, "256x256")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic COCO person-keypoints dataset",
        description="Render articulated human figures over textured backgrounds and write OUT/images/*.jpg and "
                    "OUT/person_keypoints.json (COCO format, exact ground truth). Deterministic for a seed.",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--images", type=int, default=100, help="number of images (default 100)")
    p.add_argument("--size", default="256x256", help="image size WxH (default 256x256)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--max-people", type=int, default=4, help="most people per image (default 4)")
    p.add_argument("--min-people", type=int, default=0, help="fewest people per image (default 0)")
    p.add_argument("--schema", default="coco17", help="keypoint schema to annotate (default coco17)")
    p.add_argument("--crowd-prob", type=float, default=0.1,
                   help="probability of a crowd region (iscrowd=1) per image (default 0.1)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality 1..100 (default 95)")
    p.add_argument("--views", default="all", choices=("all", "front"),
                   help="'all' (front, side and back views; default) or 'front' (facing the camera, upright)")
    p.add_argument("--head-range", default=None, metavar="LO,HI",
                   help="head heights in px of annotated people, e.g. 17,22 (default: 5 .. height/6.8)")
    p.add_argument("--inside", action="store_true", help="place every annotated person fully inside the image")
    p.add_argument("--background", default="textured", choices=("textured", "plain"),
                   help="'textured' (default: shapes, lines, stripes) or 'plain' (a smooth gradient)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from posekit.data.synthetic import make_synthetic_dataset

    size = _size(args.size)
    if args.images < 0:
        raise ValueError(f"--images must be >= 0, got {args.images}")
    if args.min_people < 0 or args.max_people < args.min_people:
        raise ValueError(f"need 0 <= --min-people <= --max-people, got {args.min_people} and {args.max_people}")
    if not 0.0 <= args.crowd_prob <= 1.0:
        raise ValueError(f"--crowd-prob must be in [0, 1], got {args.crowd_prob}")
    extra = {}
    if args.head_range is not None:
        try:
            lo, hi = (float(v) for v in args.head_range.split(","))
        except ValueError:
            raise ValueError(f"--head-range must be LO,HI in pixels (e.g. 17,22), got {args.head_range!r}") from None
        extra = {"head_range": (lo, hi), "min_head_px": min(5.0, lo)}
    path = make_synthetic_dataset(
        args.out, args.images, size=size, seed=args.seed, max_people=args.max_people,
        min_people=args.min_people, schema=args.schema, crowd_prob=args.crowd_prob, jpeg_quality=args.jpeg_quality,
        views=args.views, inside=args.inside, background=args.background, **extra,
    )
    d = json.loads(path.read_text())
    anns = d["annotations"]
    n_kp = sum(1 for a in anns if a["num_keypoints"] > 0)
    n_crowd = sum(1 for a in anns if a["iscrowd"])
    print(f"wrote {len(d['images'])} images and {len(anns)} annotations ({n_kp} with keypoints, {n_crowd} crowd) "
          f"to {path}")
    return 0
