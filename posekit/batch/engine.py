"""Batch pose inference on Ray Data: list (tasks) → read and decode (tasks) → pose pipeline (an actor pool, one
``PoseEstimator`` per actor, each unit's shard written by the actor that ran it) → merged COCO results (driver).

Ray is imported only inside :func:`run_batch` and the Ray-side functions, so ``posekit.batch`` imports without it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from posekit.batch import plan as P
from posekit.pipelines.video import video_ends_reason

__all__ = ["BatchConfig", "BatchSummary", "run_batch", "PoseActor", "decode_unit", "draw_video"]


@dataclass
class BatchConfig:
    """Everything a batch run needs (``posekit predict --engine ray`` fills it from its options).

    Attributes:
        sources: image files, folders, videos, COCO annotation files (``.json``).
        out_json: the merged COCO results (local path or object-store URI).
        shard_dir: the shards (default ``<out_json>.shards``).
        model, weights, detector, detector_weights, flip_test: the ``PoseEstimator`` of every actor.
        address: None (a local Ray instance with this machine's CPUs, or the one this process already joined),
            ``auto`` or ``ray://host:10001`` (an existing cluster).
        actors, cpus_per_actor, gpus_per_actor: the actor pool (``actors`` None: as many as the cluster's CPUs, or
            GPUs with ``gpus_per_actor``, hold); onnxruntime gets ``max(1, int(cpus_per_actor))``
            threads, and the CUDA execution provider when ``gpus_per_actor > 0``.
        reader_cpus: CPUs each read/decode task reserves (0: it shares the actors' CPUs; decoding is a few % of
            the time per image).
        images_per_unit, frames_per_unit: the size of a unit (one shard, one task of the pool).
        resume: skip the units whose shard is complete.
        annotations: a COCO json whose ids the images take (by file name); image_dir: where the images of a COCO
            annotation-file source are.
        out_dir: drawn overlays, as ``posekit predict --out-dir``: images (``<stem>.jpg``, by the actors) and
            videos (``<stem>.mp4``, after the merge: :func:`draw_video`); kpt_thr: keypoint threshold for drawing.
        max_frames: frames per video at most.
        errors_json: the sources that could not be read, ``[{source, error}]``.
        progress: a bar for the images and frames done.
        list_in_ray_from: list the sources in Ray Data tasks when there are at least this many (a Ray Data
            execution costs seconds; a few folders are listed faster by the driver, with the same function).
        fault_exit_after: tests only: one actor (the first to claim a marker file in the shard dir) exits the
            process after this many images, in the middle of a unit.
    """

    sources: list[str]
    out_json: str
    shard_dir: str | None = None
    model: str = "rtmo-s"
    weights: str | None = None
    detector: str | None = None
    detector_weights: str | None = None
    flip_test: bool = False
    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    reader_cpus: float = 0.0
    images_per_unit: int = 16
    frames_per_unit: int = 64
    resume: bool = False
    annotations: str | None = None
    image_dir: str | None = None
    out_dir: str | None = None
    kpt_thr: float = 0.3
    max_frames: int | None = None
    errors_json: str | None = None
    progress: bool = True
    list_in_ray_from: int = 8
    fault_exit_after: int | None = None

    def settings(self) -> dict:
        """What the results depend on: shards written under other settings are not reused."""
        def file_id(p):
            if p is None or "://" in str(p) or not Path(p).is_file():
                return p
            st = Path(p).stat()
            return [str(Path(p).resolve()), st.st_size, st.st_mtime_ns]

        model = str(Path(self.model).resolve()) if Path(self.model).is_file() else self.model
        return {"model": model, "model_file": file_id(model), "weights": file_id(self.weights),
                "detector": self.detector, "detector_weights": file_id(self.detector_weights),
                "flip_test": self.flip_test}


@dataclass
class BatchSummary:
    """What a run did. ``images``: images and frames in the merged results (read ones); ``processed``: those run in
    this call (the rest came from the shards of an earlier run); ``units_skipped``: units resumed from shards."""

    images: int = 0
    people: int = 0
    processed: int = 0
    units: int = 0
    units_skipped: int = 0
    errors: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    stages: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"{self.images} image(s)/frame(s), {self.people} people, {self.processed} processed in "
                f"{self.seconds:.1f} s ({self.images_per_s:.2f} images/s), {self.units_skipped}/{self.units} "
                f"unit(s) resumed from shards, {len(self.errors)} error(s)")


# ---------------------------------------------------------------------------------------------------- Ray side
def _list_row(row: dict, image_dir, max_frames) -> list[dict]:
    items = P.list_source(int(row["index"]), str(row["source"]), image_dir, max_frames)
    return [{"item": json.dumps(asdict(it))} for it in items]


def decode_unit(row: dict) -> dict:
    """Read task: the unit's images (or frames) decoded into one flat uint8 buffer plus their shapes, and the reason
    for every entry that could not be read. Video frames are reached by grabbing (decoding) from the start, which
    is exact where seeking in a compressed stream is not."""
    import cv2

    from posekit.data.io import ImageReadError

    t0 = time.perf_counter()
    unit = P.Unit.from_json(row["unit"])
    images: list[np.ndarray | None] = []
    errors: list[str | None] = []
    if unit.kind == "images":
        for _, path, _ in unit.entries:
            try:
                images.append(P.read_image_any(path))
                errors.append(None)
            except ImageReadError as e:
                images.append(None)
                errors.append(e.reason)
    else:
        path, start = unit.entries[0][1], unit.entries[0][2]
        cap = cv2.VideoCapture(path)
        reason = None if cap.isOpened() else f"cannot open video {path}"
        f = 0
        while reason is None and f < start:
            if not cap.grab():
                reason = video_ends_reason(f)
            f += 1
        for _ in unit.entries:
            frame = None
            if reason is None:
                ok, frame = cap.read()
                if not ok:
                    frame, reason = None, video_ends_reason(f)
                f += 1
            images.append(frame)
            errors.append(None if frame is not None else reason)
        cap.release()
    shapes = np.array([im.shape if im is not None else (0, 0, 0) for im in images], np.int64).reshape(-1, 3)
    pixels = np.concatenate([im.reshape(-1) for im in images if im is not None] or [np.zeros(0, np.uint8)])
    return {"unit": row["unit"], "pixels": pixels, "shapes": shapes, "errors": json.dumps(errors),
            "decode_ms": 1e3 * (time.perf_counter() - t0)}


class PoseActor:
    """One ``PoseEstimator`` per actor; per unit: the pose pipeline on every decoded image, then the shard written
    atomically (a unit that dies half way leaves nothing; a retried one writes the same file again)."""

    def __init__(self, config: dict, shard_dir: str, settings: str) -> None:
        self.created = time.time()
        from posekit.pipelines.estimator import PoseEstimator

        self.cfg = config
        self.shard_dir = shard_dir
        self.settings = settings
        threads = max(1, int(config["cpus_per_actor"]))
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if config["gpus_per_actor"] > 0 else None
        self.est = PoseEstimator(config["model"], detector=config["detector"], weights=config["weights"],
                                 threads=threads, providers=providers, detector_weights=config["detector_weights"],
                                 flip_test=config["flip_test"])
        self.schema = self.est.card.schema
        self.done = 0
        self.ready = time.time()  # wall clock (epoch): the driver compares it with its own

    def _fault_hook(self) -> None:
        n = self.cfg.get("fault_exit_after")
        if n is None or self.done < n:
            return
        try:  # the first actor to create the marker dies, once
            fd = os.open(os.path.join(self.shard_dir, ".fault-injected"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)

    def __call__(self, batch: dict) -> dict:
        out = {"unit": [], "images": [], "people": [], "errors": [], "stages": [], "ready": [], "end": []}
        for text, pixels, shapes, errs, decode_ms in zip(batch["unit"], batch["pixels"], batch["shapes"],
                                                         batch["errors"], batch["decode_ms"]):
            t0 = time.perf_counter()
            unit = P.Unit.from_json(str(text))
            errs = json.loads(str(errs))
            self.est.timer.reset()
            records, offset, n_people = [], 0, 0
            drawn = []
            for (image_id, path, frame), shape, err in zip(unit.entries, np.asarray(shapes), errs):
                rec = {"image_id": image_id, "source": path, "frame": frame}
                if err is not None:
                    rec["error"] = err
                    records.append(rec)
                    continue
                size = int(np.prod(shape))
                img = np.asarray(pixels[offset:offset + size]).reshape([int(s) for s in shape])
                offset += size
                people = self.est(img)
                n_people += len(people)
                rec["people"] = [{"keypoints": p.keypoints.reshape(-1).tolist(), "box": p.box.tolist(),
                                  "score": p.score} for p in people]
                records.append(rec)
                if self.cfg["out_dir"] and frame is None:
                    drawn.append((path, img, people))
                self.done += 1
                self._fault_hook()
            self._draw(drawn)
            P.write_text(P.join(self.shard_dir, unit.key), P.shard_bytes(unit, records, self.schema).decode())
            out["unit"].append(unit.index)
            out["images"].append(sum(1 for r in records if "error" not in r))
            out["people"].append(n_people)
            out["errors"].append(sum(1 for r in records if "error" in r))
            stages = {k: v["total_ms"] for k, v in self.est.timer.summary().items()}
            stages["decode"] = float(decode_ms)  # in the read task
            stages["actor_busy"] = 1e3 * (time.perf_counter() - t0)  # the unit in the actor: pipeline, shard, ...
            out["stages"].append(json.dumps(stages))
            out["ready"].append(self.ready)
            out["end"].append(time.time())
        return {k: np.asarray(v) for k, v in out.items()}

    def _draw(self, drawn) -> None:
        if not drawn:
            return
        from posekit.data.io import write_image
        from posekit.schema import get_schema
        from posekit.viz import draw_people

        schema = get_schema(self.schema)
        for path, img, people in drawn:
            with self.est.timer.stage("draw"):
                canvas = draw_people(img, people, schema, kpt_thr=self.cfg["kpt_thr"], draw_boxes=True)
                write_image(Path(self.cfg["out_dir"]) / f"{Path(path).stem}.jpg", canvas)


def draw_video(path: str, frames: list, out_path: str, schema: str, kpt_thr: float) -> int:
    """The overlay video of ``posekit predict --out-dir`` from a batch run's merged results: ``frames`` is
    ``[(frame number, tracked people)]`` in order (``merge_shards(video_people=...)``); the video is decoded once
    from its start, each frame drawn as one process draws it (boxes, track ids) and written with the same writer
    (``<stem>.mp4``, mp4v, the video's fps; a temporary file renamed at the end). Returns the frames written."""
    from posekit.pipelines.video import open_video, video_fps
    from posekit.schema import get_schema
    from posekit.viz import VideoWriter, draw_people

    schema = get_schema(schema)
    cap = open_video(path)
    try:
        with VideoWriter(out_path, fps=video_fps(cap)) as vw:
            f = 0
            for frame_no, people in frames:
                while f < frame_no and cap.grab():  # frames without a record (none for a video read in order)
                    f += 1
                ok, image = cap.read()
                if not ok or f != frame_no:
                    raise RuntimeError(f"{path}: frame {frame_no} does not decode any more (the file changed?)")
                f += 1
                vw.write(draw_people(image, people, schema, kpt_thr=kpt_thr, draw_boxes=True, draw_ids=True))
            return vw.frames_written
    finally:
        cap.release()


# ------------------------------------------------------------------------------------------------------ driver
def _init_ray(address: str | None):
    import logging

    import ray

    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(**kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # posekit's own bar counts images, not blocks
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray


def plan_run(cfg: BatchConfig, ray) -> tuple[list[P.Unit], list[dict]]:
    """List the sources (Ray Data tasks, or the driver for fewer than ``list_in_ray_from``), then ids and units
    (driver): ``(units, listing errors)``."""
    ids = None
    if cfg.annotations:
        from posekit.pipelines.coco_runner import load_coco_images

        _, images = load_coco_images(cfg.annotations)
        ids = {Path(im["file_name"]).name: int(im["id"]) for im in images}
    rows = [{"index": i, "source": s} for i, s in enumerate(cfg.sources)]
    if len(rows) >= cfg.list_in_ray_from:
        listed = ray.data.from_items(rows).flat_map(_list_row, fn_args=(cfg.image_dir, cfg.max_frames),
                                                    num_cpus=0).take_all()
    else:
        listed = [r for row in rows for r in _list_row(row, cfg.image_dir, cfg.max_frames)]
    items = []
    for r in listed:
        d = json.loads(r["item"])
        d["order"] = tuple(d["order"])
        items.append(P.Item(**d))
    items = P.assign_ids(items, ids)
    errors = [{"source": it.path, "error": it.error} for it in items if it.kind == "error"]
    units = P.make_units(items, cfg.images_per_unit, cfg.frames_per_unit)
    settings = P.settings_digest(cfg.settings())
    for u in units:
        u.key = P.shard_name(u, settings)
    return units, errors


def _category_id(cfg: BatchConfig) -> int:
    files = [cfg.annotations] if cfg.annotations else [s for s in cfg.sources if s.lower().endswith(".json")
                                                      and Path(s).is_file()]
    if not files:
        return 1
    from posekit.pipelines.coco_runner import load_coco_images

    data, _ = load_coco_images(files[0])
    return int((data.get("categories") or [{"id": 1}])[0].get("id", 1))


def run_batch(cfg: BatchConfig) -> BatchSummary:
    """Run a batch: plan, skip complete shards (``resume``), run the rest on the actor pool, merge, write the
    results (and errors). Returns the summary."""
    from tqdm import tqdm

    from posekit.evaluation.results import save_results

    if (cfg.actors is not None and cfg.actors < 1) or cfg.cpus_per_actor <= 0 or cfg.gpus_per_actor < 0:
        raise ValueError(f"--actors must be >= 1 and --cpus-per-actor > 0, --gpus-per-actor >= 0; got "
                         f"{cfg.actors}, {cfg.cpus_per_actor}, {cfg.gpus_per_actor}")
    t_start = time.perf_counter()
    ray = _init_ray(cfg.address)
    if cfg.actors is None:
        res = ray.cluster_resources()
        fit = res.get("GPU", 0) / cfg.gpus_per_actor if cfg.gpus_per_actor else res.get("CPU", 1) / cfg.cpus_per_actor
        cfg = replace(cfg, actors=max(1, int(fit)))
    shard_dir = cfg.shard_dir or f"{cfg.out_json}.shards"
    if "://" not in shard_dir:
        Path(shard_dir).mkdir(parents=True, exist_ok=True)
        if cfg.fault_exit_after is None:
            Path(shard_dir, ".fault-injected").unlink(missing_ok=True)
    if cfg.out_dir:
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    t_plan = time.perf_counter()
    units, listing_errors = plan_run(cfg, ray)
    t_planned = time.perf_counter()
    shards: dict[int, tuple[dict, list[dict]]] = {}
    if cfg.resume:
        for u in units:
            text = P.read_text(P.join(shard_dir, u.key))
            if text is not None:
                try:
                    shards[u.index] = P.read_shard(text, u, P.join(shard_dir, u.key))
                except P.ShardError as e:
                    print(f"posekit: redoing unit {u.index}: {e}", file=sys.stderr)
    todo = [u for u in units if u.index not in shards]
    summary = BatchSummary(units=len(units), units_skipped=len(units) - len(todo))
    stages: dict[str, float] = {}
    t_run = time.perf_counter()
    if todo:
        ds = ray.data.from_items([{"unit": u.to_json()} for u in todo], override_num_blocks=len(todo))
        ds = ds.map(decode_unit, num_cpus=cfg.reader_cpus,
                    compute=ray.data.TaskPoolStrategy(size=2 * cfg.actors))
        ds = ds.map_batches(PoseActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=cfg.actors),
                            num_cpus=cfg.cpus_per_actor, num_gpus=cfg.gpus_per_actor or None,
                            fn_constructor_args=(asdict(cfg), shard_dir, P.settings_digest(cfg.settings())))
        total = sum(u.size for u in todo)
        bar = tqdm(total=total, desc="images", unit="img", disable=not cfg.progress, file=sys.stderr)
        t_epoch = time.time()
        ready, end = [], []
        for row in ds.iter_rows():
            ready.append(float(row["ready"]))
            end.append(float(row["end"]))
            summary.processed += int(row["images"])
            bar.update(int(row["images"]) + int(row["errors"]))
            for k, v in json.loads(str(row["stages"])).items():
                stages[k] = stages.get(k, 0.0) + v
        bar.close()
    summary.seconds = time.perf_counter() - t_run
    summary.stages = stages
    stages["ray_init_ms"] = 1e3 * (t_plan - t_start)
    stages["plan_ms"] = 1e3 * (t_planned - t_plan)
    if todo:  # the actors' start (process, imports, model) and the time from the first ready actor to the last unit
        stages["actors_start_ms"] = 1e3 * (min(ready) - t_epoch)
        stages["pipeline_ms"] = 1e3 * (max(end) - min(ready))
    t_merge = time.perf_counter()
    for u in todo:  # every unit's shard, as written (a unit that is missing now is an error of the run)
        where = P.join(shard_dir, u.key)
        text = P.read_text(where)
        if text is None:
            raise RuntimeError(f"unit {u.index}: its shard {where} was not written")
        shards[u.index] = P.read_shard(text, u, where)
    video_people: dict[str, list] | None = {} if cfg.out_dir else None
    results, error_records, counts = P.merge_shards(units, [shards[u.index] for u in units], _category_id(cfg),
                                                    video_people)
    summary.images, summary.people = counts["images"], counts["people"]
    summary.errors = P.errors_by_source(listing_errors, error_records)
    if "://" in cfg.out_json:
        from posekit.evaluation.results import validate_results

        P.write_text(cfg.out_json, json.dumps(validate_results(results, source=cfg.out_json)))
    else:
        save_results(results, cfg.out_json)
    if cfg.errors_json:
        P.write_text(cfg.errors_json, json.dumps(summary.errors, indent=1))
    summary.stages["merge_ms"] = 1e3 * (time.perf_counter() - t_merge)
    if video_people:  # track ids exist only now: one Ray task per video decodes it once and draws its overlay
        t_draw = time.perf_counter()
        schema = next((h["schema"] for h, _ in shards.values() if h.get("schema")), "coco17")
        task = ray.remote(draw_video).options(num_cpus=1, max_retries=3)
        ray.get([task.remote(path, frames, str(Path(cfg.out_dir) / f"{Path(path).stem}.mp4"), schema, cfg.kpt_thr)
                 for path, frames in video_people.items()])
        summary.stages["draw_videos_ms"] = 1e3 * (time.perf_counter() - t_draw)
    summary.stages["total_wall_ms"] = 1e3 * (time.perf_counter() - t_start)
    return summary
