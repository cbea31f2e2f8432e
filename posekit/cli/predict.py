"""``posekit predict``: run a model card on images, folders, videos or a webcam."""

from __future__ import annotations

import argparse

from posekit.cli.model_args import add_model_arguments, model_specs



def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="run a pose model (model card) on images, folders, videos or a webcam",
        description="Run a pose model on images, folders of images, videos or a webcam index; write COCO results "
                    "json, overlays and per-stage timings. A source that cannot be read (missing, undecodable, "
                    "truncated; a video that decodes fewer frames than its header promises keeps the frames it "
                    "gives) is reported and skipped and the others are processed and written; the exit status "
                    "is then 3 (0: every source read; 1: an error that stopped the run; --strict: stop at the "
                    "first unreadable source, as exit status 1, writing nothing).",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="image file, folder of images, video file, or webcam index (0, 1, ...)")
    add_model_arguments(p)
    p.add_argument("--out-json", help="write COCO-format keypoint results here")
    p.add_argument("--annotations", help="COCO json whose image ids are used (matched by file name)")
    p.add_argument("--out-dir", help="write overlay images / videos here")
    p.add_argument("--timing", action="store_true", help="print per-stage times at the end")
    p.add_argument("--kpt-thr", type=float, default=0.3, help="keypoint score threshold for drawing (0.3)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    p.add_argument("--flip-test", action="store_true", help="top-down flip test")
    p.add_argument("--max-frames", type=int, help="stop a video / webcam after this many frames")
    p.add_argument("--no-pipeline", action="store_true",
                   help="videos / webcams: decode, run the model and draw/encode one frame after another (default: "
                   "the three overlap in threads with bounded queues; same frames, people and track ids)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first source that cannot be read (exit status 1, no results written)")
    p.add_argument("--errors", metavar="JSON",
                   help="write the sources that could not be read here: [{source, error}, ...]")
    from posekit.cli import predict_ray

    predict_ray.add_arguments(p)  # --engine ray and its options
    p.set_defaults(func=run)

#: exit status when some sources could not be read and the others were processed.
EXIT_SOME_FAILED = 3


def _expand(sources: list[str], skip=None) -> list[tuple[str, object]]:
    """``(kind, source)`` for every image, video and webcam named by ``sources`` (folders expanded). A missing
    source or an empty folder raises FileNotFoundError, or, with ``skip(source, reason)``, is reported to it and
    skipped."""
    from pathlib import Path

    from posekit.data.io import is_video, media_files

    items: list[tuple[str, object]] = []
    for s in sources:
        if s.isdigit():
            items.append(("webcam", int(s)))
            continue
        p = Path(s)
        error = None
        if p.is_dir():
            files = media_files(p)
            if not files:
                error = f"no images or videos in folder {p}"
            items.extend(("video" if is_video(f) else "image", f) for f in files)
        elif p.is_file():
            items.append(("video" if is_video(p) else "image", p))
        else:
            error = f"source not found: {s}"
        if error is not None:
            if skip is None:
                raise FileNotFoundError(error)
            skip(s, error)
    return items


def run(args: argparse.Namespace) -> int:
    if getattr(args, "engine", "local") == "ray":
        from posekit.cli import predict_ray

        return predict_ray.run(args)
    import json
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from posekit.data.io import ImageReadError, read_image, write_bytes_atomic, write_image
    from posekit.evaluation.results import save_results
    from posekit.pipelines.video import open_video, shortfall_error, video_fps, video_frame_count
    from posekit.pipelines.tracking import GreedyTracker
    from posekit.schema import get_schema
    from posekit.viz import VideoWriter, draw_people

    failed: list[dict] = []  # sources that could not be read (skipped unless --strict)

    def skip(source, error: str) -> None:
        failed.append({"source": str(source), "error": error})
        print(f"posekit predict: skipped {source}: {error}", file=sys.stderr)

    items = _expand(args.sources, None if args.strict else skip)
    n_sources = len(items) + len(failed)  # + the missing sources and empty folders
    ids: dict[str, int] | None = None
    category_id = 1
    if args.annotations:
        from posekit.pipelines.coco_runner import load_coco_images

        data, images = load_coco_images(args.annotations)
        ids = {Path(im["file_name"]).name: int(im["id"]) for im in images}
        category_id = int((data.get("categories") or [{"id": 1}])[0].get("id", 1))
        if any(kind != "image" for kind, _ in items):
            raise ValueError("--annotations matches image file names; it cannot be used with videos or webcams")
        missing = [str(src) for _, src in items if Path(src).name not in ids]
        if missing:
            raise ValueError(f"{len(missing)} image(s) are not in {args.annotations} (matched by file name), "
                             f"e.g. {missing[0]}")
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)

    est = model_specs(args)[0].build(threads=args.threads, flip_test=args.flip_test)
    schema = get_schema(est.card.schema)
    timer = est.timer
    results: list[dict] = []
    next_id = 1
    n_people = 0
    images = [src for kind, src in items if kind == "image"]
    for src in tqdm(images, desc="images", disable=args.no_progress or not images, file=sys.stderr):
        if ids is not None:
            image_id = ids[Path(src).name]
        else:  # an unreadable image file keeps its number: the others' ids do not depend on whether it decodes
            image_id, next_id = next_id, next_id + 1
        try:
            with timer.stage("decode"):
                img = read_image(src)
        except ImageReadError as e:
            if args.strict:
                raise
            skip(src, e.reason)
            continue
        people = est(img)
        n_people += len(people)
        results.extend(p.to_coco(image_id, category_id) for p in people)
        if out_dir:
            with timer.stage("draw"):
                canvas = draw_people(img, people, schema, kpt_thr=args.kpt_thr, draw_boxes=True)
            write_image(out_dir / f"{Path(src).stem}.jpg", canvas)
    for kind, src in items:
        if kind == "image":
            continue
        try:
            cap = open_video(src)
            # a file's promise, by the Ray engine's rule: its header's count, else counted by grabbing
            promised = video_frame_count(src) if kind == "video" else None
        except (FileNotFoundError, RuntimeError) as e:
            if args.strict:
                raise
            skip(src, str(e))
            continue
        fps = video_fps(cap)
        cap.release()
        if promised is not None and args.max_frames is not None:
            promised = min(promised, args.max_frames)
        name = f"webcam{src}" if kind == "webcam" else Path(src).stem
        writer = VideoWriter(out_dir / f"{name}.mp4", fps=fps) if out_dir else None
        first_id, decoded = next_id, 0
        try:
            bar = tqdm(total=promised, desc=name, disable=args.no_progress, file=sys.stderr)
            for _, frame, people in est.video(src, tracker=GreedyTracker(schema), max_frames=args.max_frames,
                                              pipelined=not args.no_pipeline):
                n_people += len(people)
                results.extend(p.to_coco(first_id + decoded, category_id) for p in people)
                decoded += 1
                if writer is not None:
                    with timer.stage("draw"):
                        canvas = draw_people(frame, people, schema, kpt_thr=args.kpt_thr, draw_boxes=True,
                                             draw_ids=True)
                    writer.write(canvas)
                bar.update(1)
            bar.close()
            # a video cut short keeps its decoded frames and is reported; its missing frames keep their ids
            shortfall = shortfall_error(promised, decoded) if promised is not None else None
            if shortfall is not None and args.strict:
                raise RuntimeError(f"{src}: {shortfall}")
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is not None:
            writer.close() if decoded else writer.abort()  # no frame, no overlay (the error says why)
        next_id = first_id + max(decoded, promised or 0)
        if shortfall is not None:
            skip(src, shortfall)
    if args.out_json:
        out = Path(args.out_json)
        save_results(results, out)
        if ids is None:
            print(f"note: no --annotations given: image ids in {out} are sequential (1, 2, ...) in the order of the "
                  f"image files (one that could not be read keeps its number)", file=sys.stderr)
    if args.errors:
        write_bytes_atomic(args.errors, json.dumps(failed, indent=1).encode())
    print(f"{n_sources} source(s), {n_sources - len(failed)} read, {len(failed)} failed, {n_people} people"
          + (f", results: {args.out_json}" if args.out_json else "")
          + (f", errors: {args.errors}" if args.errors else ""))
    if args.timing:
        print(timer.format())
    return EXIT_SOME_FAILED if failed else 0
