"""The work of a batch run, without Ray: sources → items (one image or one video frame each, with its image id) →
units (a group of images, or one frame range of one video) → shards (one JSONL file per unit) → merged results.

Exactly once rests on three rules written down here:

- the plan is a pure function of the sources and the settings: the same sources give the same items, ids and units,
  in the order ``posekit predict`` reads them (images first, then the frames of each video);
- a unit's shard has a name fixed by its content (``<index>-<digest>.jsonl``, the digest covering the unit's items
  and the run's settings) and is written atomically, with a header and an end line that :func:`read_shard` checks,
  so a shard is either complete or absent, and a unit written twice (a retried actor) is the same file twice;
- the merged results read each unit's shard once, in plan order.

So a run killed at any point and resumed (``--resume``: units with a complete shard are skipped) ends with every
image and frame exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from posekit.data.io import IMAGE_EXTENSIONS, is_video, media_files
from posekit.pipelines.video import missing_frames_error, video_frame_count

__all__ = ["Item", "Unit", "list_source", "assign_ids", "make_units", "settings_digest",
           "shard_name", "shard_bytes", "read_shard", "ShardError", "merge_shards", "errors_by_source"]


#: shard format version (in every header; a shard of another version is not reused).
SHARD_VERSION = 1


@dataclass
class Item:
    """One listed entry of a source. ``kind``: ``image``, ``video`` (``frames`` of them; ``image_id`` is the first
    frame's id) or ``error`` (a source that could not be listed: ``error`` says why). ``order``: ``(source index,
    position in the source)``, the reading order of ``posekit predict``."""

    kind: str
    path: str
    order: tuple[int, int]
    frames: int = 0
    image_id: int | None = None
    error: str | None = None


@dataclass
class Unit:
    """One task of the actor pool and one shard: consecutive images, or frames ``[start, stop)`` of one video.
    ``entries``: ``[image_id, path, frame or None]`` for every image / frame of the unit."""

    index: int
    kind: str  # "images" | "video"
    entries: list[list] = field(default_factory=list)
    key: str = ""

    @property
    def size(self) -> int:
        return len(self.entries)

    def to_json(self) -> str:
        return json.dumps({"index": self.index, "kind": self.kind, "entries": self.entries, "key": self.key})

    @staticmethod
    def from_json(text: str) -> "Unit":
        d = json.loads(text)
        return Unit(d["index"], d["kind"], d["entries"], d["key"])


# ----------------------------------------------------------------------------------------------------- listing
def list_source(index: int, source: str, image_dir: str | None = None, max_frames: int | None = None
                ) -> list[Item]:
    """The items of one source, in ``posekit predict``'s order: an image file, a folder (its images and videos,
    sorted by name), a video (one item with its frame count, capped by ``max_frames``), or a COCO annotation file
    (``.json``: its images, ids from the file, paths under ``image_dir``, default the ``images`` folder beside the
    file when there is one, else the file's folder). A source that cannot be listed gives one ``error`` item."""
    p = Path(source)

    def video(path: Path, pos: int) -> Item:
        try:
            n = video_frame_count(str(path))
        except (FileNotFoundError, RuntimeError) as e:
            return Item("error", str(path), (index, pos), error=str(e))
        return Item("video", str(path), (index, pos), frames=min(n, max_frames) if max_frames else n)

    if "://" in source:
        return _list_uri(index, source)
    if source.isdigit():
        return [Item("error", source, (index, 0), error="a webcam cannot be read by a batch run (use posekit predict "
                                                        "without --engine)")]
    if p.is_dir():
        files = media_files(p)
        if not files:
            return [Item("error", source, (index, 0), error=f"no images or videos in folder {p}")]
        return [video(f, i) if is_video(f) else Item("image", str(f), (index, i))
                for i, f in enumerate(files)]
    if not p.is_file():
        return [Item("error", source, (index, 0), error=f"source not found: {source}")]
    if p.suffix.lower() == ".json":
        from posekit.pipelines.coco_runner import load_coco_images

        try:
            _, images = load_coco_images(p)
        except (ValueError, FileNotFoundError) as e:
            return [Item("error", source, (index, 0), error=str(e))]
        root = Path(image_dir) if image_dir else (p.parent / "images" if (p.parent / "images").is_dir() else p.parent)
        return [Item("image", str(root / im["file_name"]), (index, i), image_id=int(im["id"]))
                for i, im in enumerate(images)]
    if is_video(p):
        return [video(p, 0)]
    return [Item("image", str(p), (index, 0))]


def _list_uri(index: int, source: str) -> list[Item]:
    """An image object, or the images under a prefix (one level, sorted), of an object store (``s3://``,
    ``gs://``, ``file://``, ... through ``pyarrow.fs``). Videos are read from local paths only."""
    import pyarrow.fs as pafs

    scheme = source.split("://", 1)[0]
    try:
        fs, path = pafs.FileSystem.from_uri(source)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            found = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(path)) if i.type == pafs.FileType.File
                           and Path(i.path).suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                return [Item("error", source, (index, 0), error=f"no images under {source}")]
            return [Item("image", f"{scheme}://{f}", (index, i)) for i, f in enumerate(found)]
    except (OSError, ValueError) as e:
        return [Item("error", source, (index, 0), error=f"{type(e).__name__}: {e}")]
    if info.type == pafs.FileType.NotFound:
        return [Item("error", source, (index, 0), error=f"source not found: {source}")]
    if Path(path).suffix.lower() not in IMAGE_EXTENSIONS:
        return [Item("error", source, (index, 0), error="only images are read from object storage (videos and "
                                                        "annotation files from local paths)")]
    return [Item("image", source, (index, 0))]


def read_image_any(path: str):
    """``read_image`` for a local path, or the object at a URI read through ``pyarrow.fs`` and decoded with the same
    checks (:class:`~posekit.data.io.ImageReadError` with the reason)."""
    from posekit.data.io import ImageReadError, decode_image, read_image

    if "://" not in path:
        return read_image(path)
    import pyarrow.fs as pafs

    try:
        fs, key = pafs.FileSystem.from_uri(path)
        with fs.open_input_stream(key) as f:
            raw = f.read()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as e:
        raise ImageReadError(path, f"{type(e).__name__}: {e}") from e
    return decode_image(raw, path)


def assign_ids(items: list[Item], ids_by_name: dict[str, int] | None = None) -> list[Item]:
    """Sort the items into reading order and give every image and frame its id, as ``posekit predict`` does:
    images ``1, 2, ...`` in order (an unreadable one keeps its number), then the frames of each video, following
    on; with ``ids_by_name`` (``--annotations``) the ids of the images' file names; a COCO-file source brings its
    own ids (then every image source must be a COCO file or ``ids_by_name`` must be given). Returns the items."""
    items = sorted(items, key=lambda it: it.order)
    images = [it for it in items if it.kind == "image"]
    videos = [it for it in items if it.kind == "video"]
    from_file = [it for it in images if it.image_id is not None]
    if ids_by_name is not None:
        if videos:
            raise ValueError("--annotations matches image file names; it cannot be used with videos")
        missing = [it.path for it in images if it.image_id is None and Path(it.path).name not in ids_by_name]
        if missing:
            raise ValueError(f"{len(missing)} image(s) are not in the --annotations file (matched by file name), "
                             f"e.g. {missing[0]}")
        for it in images:
            if it.image_id is None:
                it.image_id = ids_by_name[Path(it.path).name]
    elif from_file and (len(from_file) < len(images) or videos):
        raise ValueError("a COCO annotation file source gives its own image ids; it cannot be mixed with image "
                         "files, folders or videos (give --annotations to take every image's id from one file)")
    next_id = 1
    for it in images:
        if it.image_id is None:
            it.image_id, next_id = next_id, next_id + 1
    for it in videos:
        it.image_id, next_id = next_id, next_id + it.frames
    seen: dict[int, str] = {}
    for it in images:
        if it.image_id in seen:
            raise ValueError(f"image id {it.image_id} is given to both {seen[it.image_id]} and {it.path}")
        seen[it.image_id] = it.path
    return items


def make_units(items: list[Item], images_per_unit: int = 16, frames_per_unit: int = 64) -> list[Unit]:
    """Units in reading order: runs of ``images_per_unit`` images, then each video in ranges of
    ``frames_per_unit`` frames (so one long video spreads over the actors)."""
    if images_per_unit < 1 or frames_per_unit < 1:
        raise ValueError(f"images per unit and frames per unit must be >= 1, got {images_per_unit}, "
                         f"{frames_per_unit}")
    units: list[Unit] = []
    images = [it for it in items if it.kind == "image"]
    for i in range(0, len(images), images_per_unit):
        units.append(Unit(len(units), "images", [[it.image_id, it.path, None]
                                                 for it in images[i:i + images_per_unit]]))
    for it in items:
        if it.kind != "video":
            continue
        for start in range(0, it.frames, frames_per_unit):
            stop = min(start + frames_per_unit, it.frames)
            units.append(Unit(len(units), "video", [[it.image_id + f, it.path, f] for f in range(start, stop)]))
    return units


def settings_digest(settings: dict) -> str:
    """A stable digest of the run's settings (model, weights, ...): shards of other settings are not reused."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def shard_name(unit: Unit, settings: str) -> str:
    """``<index>-<digest>.jsonl``: the digest covers the unit's entries and the settings digest."""
    h = hashlib.sha256(json.dumps([unit.kind, unit.entries, settings]).encode()).hexdigest()[:16]
    return f"{unit.index:06d}-{h}.jsonl"


# ------------------------------------------------------------------------------------------------------ shards
class ShardError(ValueError):
    """A shard file that is not the complete shard of its unit (names the file and what is wrong)."""


def shard_bytes(unit: Unit, records: list[dict], schema: str) -> bytes:
    """The JSONL content of a unit's shard: a header, one record per entry of the unit (in its order), an end line.
    A record is ``{"image_id", "source", "frame", "people": [{"keypoints", "box", "score"}]}`` (full precision), or
    ``{"image_id", "source", "frame", "error": reason}``."""
    if len(records) != unit.size:
        raise ValueError(f"unit {unit.index}: {len(records)} records for {unit.size} entries")
    lines = [json.dumps({"shard": unit.key, "version": SHARD_VERSION, "unit": unit.index, "n": unit.size,
                         "schema": schema})]
    lines += [json.dumps(r) for r in records]
    lines.append(json.dumps({"end": unit.size}))
    return ("\n".join(lines) + "\n").encode()


def read_shard(text: str, unit: Unit, where: str = "<shard>") -> tuple[dict, list[dict]]:
    """``(header, records)`` of a shard; :class:`ShardError` unless it is the complete shard of ``unit`` (header
    key and version, one record per entry with the entry's image id, the end line)."""
    lines = text.splitlines()
    try:
        rows = [json.loads(line) for line in lines]
    except json.JSONDecodeError as e:
        raise ShardError(f"{where}: not JSON lines ({e})") from None
    if len(rows) < 2 or not isinstance(rows[0], dict) or rows[0].get("shard") != unit.key:
        raise ShardError(f"{where}: the header does not name unit {unit.key}")
    if rows[0].get("version") != SHARD_VERSION:
        raise ShardError(f"{where}: shard version {rows[0].get('version')}, expected {SHARD_VERSION}")
    if rows[-1] != {"end": unit.size} or len(rows) != unit.size + 2:
        raise ShardError(f"{where}: incomplete ({len(rows) - 2} records, expected {unit.size}, end line "
                         f"{rows[-1]!r})")
    records = rows[1:-1]
    for r, (image_id, _, _) in zip(records, unit.entries):
        if r.get("image_id") != image_id:
            raise ShardError(f"{where}: record of image id {r.get('image_id')}, expected {image_id}")
    return rows[0], records


def merge_shards(units: list[Unit], shards: list[tuple[dict, list[dict]]], category_id: int = 1,
                 video_people: dict[str, list] | None = None) -> tuple[list[dict], list[dict], dict]:
    """``(results, error_records, counts)`` from every unit's shard, in plan order. Video frames are tracked here
    (a fresh :class:`~posekit.pipelines.tracking.GreedyTracker` per video, frames in order), so track ids are those
    of one process reading the whole video, although its ranges ran on different actors. With ``video_people``
    (a dict), ``video_people[path]`` gets ``(frame, tracked people)`` for every read frame of each video, in order
    (what the overlay videos are drawn from)."""
    import numpy as np

    from posekit.pipelines.tracking import GreedyTracker
    from posekit.structures import Person

    results: list[dict] = []
    errors: list[dict] = []
    n_images = n_people = 0
    tracker, video = None, None
    for unit, (header, records) in zip(units, shards):
        if unit.kind == "video" and unit.entries[0][1] != video:
            video = unit.entries[0][1]
            tracker = GreedyTracker(header.get("schema") or "coco17")
        for r in records:
            if "error" in r:
                errors.append(r)
                continue
            n_images += 1
            people = [Person(np.asarray(p["keypoints"], np.float32).reshape(-1, 3), np.asarray(p["box"], np.float32),
                             p["score"]) for p in r["people"]]
            if unit.kind == "video":
                people = tracker.update(people)
                if video_people is not None:
                    video_people.setdefault(r["source"], []).append((r["frame"], people))
            n_people += len(people)
            results.extend(p.to_coco(r["image_id"], category_id) for p in people)
    return results, errors, {"images": n_images, "people": n_people}


def errors_by_source(listing_errors: list[dict], records: list[dict]) -> list[dict]:
    """``[{source, error}]`` (the ``--errors`` file of ``posekit predict``): the sources that could not be listed,
    then one entry per unreadable image and per video with unreadable frames (the frames and the first reason)."""
    out = [dict(e) for e in listing_errors]
    frames: dict[str, list[dict]] = {}
    for r in records:
        if r.get("frame") is None:
            out.append({"source": r["source"], "error": r["error"]})
        else:
            frames.setdefault(r["source"], []).append(r)
    for source, rs in frames.items():
        f = sorted(r["frame"] for r in rs)
        out.append({"source": source, "error": missing_frames_error(f, rs[0]["error"])})
    return out


def write_text(path: str, text: str) -> None:
    """Write a local path atomically, or an object-store URI (``s3://``, ``gs://``, ...: one PUT, atomic by
    itself) through ``pyarrow.fs``."""
    if "://" in path:
        import pyarrow.fs as pafs

        fs, key = pafs.FileSystem.from_uri(path)
        with fs.open_output_stream(key) as f:
            f.write(text.encode())
        return
    from posekit.data.io import write_bytes_atomic

    write_bytes_atomic(path, text.encode())


def read_text(path: str) -> str | None:
    """The text of a local path or object-store URI; None when it does not exist."""
    if "://" in path:
        import pyarrow.fs as pafs

        fs, key = pafs.FileSystem.from_uri(path)
        if fs.get_file_info(key).type == pafs.FileType.NotFound:
            return None
        with fs.open_input_stream(key) as f:
            return f.read().decode()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def join(folder: str, name: str) -> str:
    """``folder/name`` for a local folder or a URI."""
    return folder.rstrip("/") + "/" + name if "://" in folder else os.path.join(folder, name)
