"""COCO-format person-keypoint files: validated loading and datasets.

:func:`load_coco_keypoints` reads a COCO keypoint json (``images``, ``annotations``, ``categories``), picks the
keypoint schema from the ``categories`` entry, and checks **every** image record and annotation. A bad one does
not crash the load: it is skipped and recorded as an :class:`AnnotationIssue` naming the file, the annotation id,
the image id and the field (``strict=True`` raises the first one as :class:`AnnotationError` instead). The
cleaned annotations are indexed with pycocotools (``index.coco``), so evaluation code can use the same object.

:class:`CocoPoseDataset` turns the index into samples (the sample dict of ``docs/architecture.md``):

* ``mode="topdown"``: one sample per person box (``N == 1``) with ``center``/``scale`` from the box;
* ``mode="bottomup"``: one sample per image with all its people and a loss ``mask`` that is 0 over crowd regions
  and over people without keypoint annotations.

Coordinates are taken from the file unchanged (image pixels); COCO ``bbox`` ``[x, y, w, h]`` becomes ``xyxy``.
"""

from __future__ import annotations

import contextlib
import io as _io
import math
import numbers
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from posekit.data.io import read_image, read_json
from posekit.schema import KeypointSchema, get_schema

__all__ = [
    "AnnotationIssue",
    "AnnotationError",
    "AnnotationWarning",
    "CocoKeypointIndex",
    "load_coco_keypoints",
    "CocoPoseDataset",
    "segmentation_to_mask",
    "subset_keypoint_file",
]


# ------------------------------------------------------------------------------------------------ issues
@dataclass(frozen=True)
class AnnotationIssue:
    """One problem found in an annotation file.

    Attributes:
        file: the annotation file.
        ann_id: the annotation's ``id`` (None for an image-record problem or an annotation without a usable id).
        image_id: the image the record belongs to, when known.
        field: the offending field (``"keypoints"``, ``"bbox"``, ``"file_name"``, ...).
        message: what is wrong, with the values.
    """

    file: str
    ann_id: int | None
    image_id: int | None
    field: str
    message: str

    def short(self) -> str:
        """``ann 123 (image 7) field 'keypoints': ...`` (without the file name)."""
        if self.ann_id is not None:
            where = f"ann {self.ann_id}" + (f" (image {self.image_id})" if self.image_id is not None else "")
        elif self.image_id is not None:
            where = f"image {self.image_id}"
        else:
            where = "record"
        return f"{where} field '{self.field}': {self.message}"

    def __str__(self) -> str:
        return f"{self.file}: {self.short()}"


class AnnotationError(ValueError):
    """A bad record in strict mode; ``issue`` holds the :class:`AnnotationIssue`, the message names it all."""

    def __init__(self, issue: AnnotationIssue) -> None:
        self.issue = issue
        super().__init__(str(issue))


class AnnotationWarning(UserWarning):
    """Emitted once by a non-strict load that skipped records."""


class _Problem(Exception):
    """Internal: the first problem of one record (field, message)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# ------------------------------------------------------------------------------------------------ checks
_PLAIN_NUMBERS = {int, float}


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_image(img: Any, seen: set) -> tuple[int | None, dict]:
    """Validate an ``images`` record; returns (id, cleaned record) or raises _Problem (id may be attached)."""
    if not isinstance(img, Mapping):
        raise _Problem("images", f"image record is a {type(img).__name__}, not an object")
    iid = img.get("id")
    if not _is_int(iid):
        raise _Problem("id", f"image id must be an integer, got {iid!r}")
    if iid in seen:
        raise _Problem("id", f"duplicate image id {iid}")
    fn = img.get("file_name")
    if not isinstance(fn, str) or not fn:
        raise _Problem("file_name", f"image {iid}: 'file_name' must be a non-empty string, got {fn!r}")
    for key in ("width", "height"):
        v = img.get(key)
        if not _is_num(v) or not math.isfinite(v) or v <= 0 or int(v) != v:
            raise _Problem(key, f"image {iid}: '{key}' must be a positive integer, got {v!r}")
    out = dict(img)
    out["width"], out["height"] = int(img["width"]), int(img["height"])
    return int(iid), out


def _check_polygons(seg: list, h: int, w: int) -> list:
    """Validate a polygon list; returns it without degenerate polygons (< 3 points)."""
    out = []
    for j, poly in enumerate(seg):
        if not isinstance(poly, list) or not (set(map(type, poly)) <= _PLAIN_NUMBERS or all(_is_num(v) for v in poly)):
            raise _Problem("segmentation", f"polygon {j} is not a list of numbers")
        if len(poly) % 2:
            raise _Problem("segmentation", f"polygon {j} has an odd number of coordinates ({len(poly)})")
        if not math.isfinite(sum(poly)):  # any NaN/inf makes the sum non-finite
            raise _Problem("segmentation", f"polygon {j} has NaN/inf coordinates")
        # pycocotools would read a 4-number polygon as a box: drop polygons of fewer than 3 points.
        if len(poly) >= 6:
            out.append(poly)
    return out


def _check_rle(seg: Mapping, h: int, w: int) -> dict:
    size = seg.get("size")
    counts = seg.get("counts")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) for v in size)):
        raise _Problem("segmentation", f"RLE 'size' must be [height, width], got {size!r}")
    if list(size) != [h, w]:
        raise _Problem("segmentation", f"RLE size {list(size)} does not match the image size [{h}, {w}]")
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            raise _Problem("segmentation", "uncompressed RLE 'counts' must be non-negative integers")
        total = sum(counts)
        if total != h * w:
            raise _Problem("segmentation", f"uncompressed RLE counts sum to {total}, expected {h * w} ({h}x{w})")
    elif isinstance(counts, (str, bytes)) and counts:
        try:
            runs = _rle_string_counts(counts)
        except ValueError as e:
            raise _Problem("segmentation", f"compressed RLE 'counts' is corrupt: {e}") from None
        if sum(runs) != h * w or min(runs) < 0:
            raise _Problem("segmentation", f"compressed RLE runs sum to {sum(runs)}, expected {h * w} ({h}x{w})")
    else:
        raise _Problem("segmentation", f"RLE 'counts' must be a list of ints or a string, got {type(counts).__name__}")
    return {"size": [h, w], "counts": counts}


def _rle_string_counts(s: str | bytes) -> list[int]:
    """Run lengths of a COCO compressed RLE string (5 bits per char from '0', continuation and sign bits,
    runs after the second coded as differences to the run two before)."""
    data = s.encode("ascii") if isinstance(s, str) else bytes(s)
    runs: list[int] = []
    p, n = 0, len(data)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                raise ValueError("string ends inside a run")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {chr(data[p])!r} outside the RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def _check_annotation(a: Mapping, schema: KeypointSchema, img: Mapping) -> dict:
    """Validate one annotation (id, image and category already checked); returns a cleaned copy."""
    k = schema.num_keypoints
    crowd = a.get("iscrowd", 0)
    if crowd not in (0, 1) or not (_is_num(crowd) or isinstance(crowd, bool)):
        raise _Problem("iscrowd", f"'iscrowd' must be 0 or 1, got {crowd!r}")
    crowd = int(crowd)

    bbox = a.get("bbox")
    if bbox is None:
        raise _Problem("bbox", "missing 'bbox'")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_num(v) or v is None for v in bbox):
        raise _Problem("bbox", f"'bbox' must be 4 numbers [x, y, w, h], got {bbox!r}")
    if not all(v is not None and math.isfinite(v) for v in bbox):
        raise _Problem("bbox", f"'bbox' has NaN/inf/null values: {list(bbox)}")
    if bbox[2] <= 0 or bbox[3] <= 0:
        raise _Problem("bbox", f"'bbox' has non-positive width/height: {list(bbox)}")

    kps = a.get("keypoints")
    if kps is None:
        if not crowd:
            raise _Problem("keypoints", "missing 'keypoints' field on a non-crowd person")
        arr = np.zeros((k, 3), np.float64)
    else:
        if not isinstance(kps, (list, tuple)):
            raise _Problem("keypoints", f"'keypoints' must be a list, got {type(kps).__name__}")
        if len(kps) != 3 * k:
            raise _Problem(
                "keypoints",
                f"expected {3 * k} values ({k} keypoints x 3), got {len(kps)}"
                + (f" ({len(kps) // 3} keypoints)" if len(kps) % 3 == 0 else ""),
            )
        if set(map(type, kps)) <= _PLAIN_NUMBERS:  # fast path: what json.load gives
            arr = np.array(kps, dtype=np.float64).reshape(k, 3)
        else:
            if not all(_is_num(v) or v is None for v in kps):
                bad = next(v for v in kps if not (_is_num(v) or v is None))
                raise _Problem("keypoints", f"non-numeric value {bad!r}")
            arr = np.array([np.nan if v is None else v for v in kps], dtype=np.float64).reshape(k, 3)
        finite = np.isfinite(arr)
        if not finite.all():
            j = int(np.argwhere(~finite)[0, 0])
            raise _Problem("keypoints", f"NaN/inf/null value at keypoint {j} ({schema.keypoints[j]}): {arr[j].tolist()}")
        v = arr[:, 2]
        bad_v = ~np.isin(v, (0.0, 1.0, 2.0))
        if bad_v.any():
            j = int(np.argmax(bad_v))
            raise _Problem(
                "keypoints",
                f"bad visibility flag {v[j]:g} at keypoint {j} ({schema.keypoints[j]}); COCO uses 0, 1 or 2",
            )

    area = a.get("area")
    if area is not None and (not _is_num(area) or not math.isfinite(area) or area < 0):
        raise _Problem("area", f"'area' must be a finite number >= 0, got {area!r}")

    h, w = int(img["height"]), int(img["width"])
    seg = a.get("segmentation")
    if seg is None or (isinstance(seg, list) and len(seg) == 0):
        seg = []
    elif isinstance(seg, list):
        seg = _check_polygons(seg, h, w)
    elif isinstance(seg, Mapping):
        seg = _check_rle(seg, h, w)
    else:
        raise _Problem("segmentation", f"must be a polygon list or an RLE object, got {type(seg).__name__}")
    if crowd and not seg:
        raise _Problem("segmentation", "crowd region without a segmentation")

    out = dict(a)
    out["iscrowd"] = crowd
    out["bbox"] = [float(v) for v in bbox]
    out["keypoints"] = arr.reshape(-1).tolist()
    out["num_keypoints"] = int((arr[:, 2] > 0).sum())  # recomputed from the flags
    out["area"] = float(area) if area is not None else float(bbox[2] * bbox[3])
    out["segmentation"] = seg
    return out


# ------------------------------------------------------------------------------------------------ masks
def segmentation_to_mask(segmentation: Any, height: int, width: int, bbox: Any = None) -> np.ndarray:
    """Rasterise a COCO segmentation (polygons, compressed or uncompressed RLE) to an ``H x W`` uint8 0/1 mask.

    An empty segmentation gives the ``bbox`` (``[x, y, w, h]``) rectangle when one is given, else all zeros.
    """
    from pycocotools import mask as mask_utils

    rle = _to_rle(segmentation, height, width, bbox)
    if rle is None:
        return np.zeros((height, width), np.uint8)
    with warnings.catch_warnings():  # pycocotools' decode warns about numpy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def _to_rle(segmentation: Any, h: int, w: int, bbox: Any = None):
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, Mapping):
        counts = segmentation["counts"]
        if isinstance(counts, list):
            return mask_utils.frPyObjects(dict(segmentation), h, w)
        return {"size": list(segmentation["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
    polys = [p for p in (segmentation or []) if len(p) >= 6]
    if polys:
        return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    if bbox is not None:
        return mask_utils.frPyObjects(np.asarray([bbox], np.float64).reshape(1, 4), h, w)[0]  # ndarray -> boxes
    return None


def _ignore_mask(anns: list[Mapping], h: int, w: int) -> np.ndarray:
    """``H x W`` uint8: 0 inside any of the annotations' segmentations (box when none), 1 elsewhere."""
    from pycocotools import mask as mask_utils

    rles = [r for r in (_to_rle(a.get("segmentation"), h, w, a.get("bbox")) for a in anns) if r is not None]
    if not rles:
        return np.ones((h, w), np.uint8)
    with warnings.catch_warnings():  # pycocotools' decode warns about numpy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        covered = mask_utils.decode(mask_utils.merge(rles, intersect=0))
    return (1 - covered).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ index
class CocoKeypointIndex:
    """A validated COCO keypoint file (build it with :func:`load_coco_keypoints`).

    Attributes:
        file: the annotation json.
        image_dir: folder the ``file_name`` of each image is relative to (None when not given).
        schema: the :class:`~posekit.schema.KeypointSchema` of the keypoints.
        category: the keypoint category entry (a dict) used, or None.
        coco: a ``pycocotools.coco.COCO`` over the cleaned records (valid images and annotations only).
        issues: every :class:`AnnotationIssue` found, in file order.
        image_ids: ids of the valid images, in file order.
        num_loaded: annotations of the category that passed validation (crowd regions included).
        num_skipped: annotations of the category that were dropped (bad ones, and those on skipped images).
        num_other_category: annotations of other categories (ignored, not issues).
    """

    def __init__(self, file: Path, image_dir: Path | None, schema: KeypointSchema, category: dict | None,
                 coco, issues: list[AnnotationIssue], image_ids: list[int], num_loaded: int, num_skipped: int,
                 num_skipped_images: int, num_other_category: int) -> None:
        self.file = file
        self.image_dir = image_dir
        self.schema = schema
        self.category = category
        self.coco = coco
        self.issues = issues
        self.image_ids = image_ids
        self.num_loaded = num_loaded
        self.num_skipped = num_skipped
        self.num_skipped_images = num_skipped_images
        self.num_other_category = num_other_category

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    def image_info(self, image_id: int) -> dict:
        """The (cleaned) ``images`` record of an image (KeyError naming the id and file when unknown)."""
        try:
            return self.coco.imgs[image_id]
        except KeyError:
            raise KeyError(f"{self.file}: no valid image with id {image_id}") from None

    def image_path(self, image_id: int) -> Path:
        """``image_dir / file_name`` of an image (ValueError when the index has no image_dir)."""
        if self.image_dir is None:
            raise ValueError(f"{self.file}: loaded without image_dir, so image {image_id} has no path")
        return self.image_dir / self.image_info(image_id)["file_name"]

    def annotations(self, image_id: int) -> list[dict]:
        """The valid annotations (of the keypoint category) of one image, crowd regions included, file order."""
        self.image_info(image_id)
        return list(self.coco.imgToAnns.get(image_id, []))

    @staticmethod
    def keypoints_of(ann: Mapping) -> np.ndarray:
        """``(K, 3)`` float32 ``x, y, v`` of a cleaned annotation."""
        return np.asarray(ann["keypoints"], np.float32).reshape(-1, 3)

    @staticmethod
    def box_of(ann: Mapping) -> np.ndarray:
        """``(4,)`` float32 ``x1, y1, x2, y2`` from the annotation's ``[x, y, w, h]``."""
        x, y, w, h = ann["bbox"]
        return np.array([x, y, x + w, y + h], np.float32)

    def report(self, max_issues: int = 20) -> str:
        """A summary: counts, then one line per issue (at most ``max_issues``)."""
        head = f"{self.file}: loaded {self.num_loaded} annotations on {self.num_images} images, skipped {self.num_skipped}"
        if self.num_skipped_images:
            head += f" (and {self.num_skipped_images} images)"
        if not self.issues:
            return head
        lines = [head + ":"] + [f"  {i.short()}" for i in self.issues[:max_issues]]
        if len(self.issues) > max_issues:
            lines.append(f"  ... and {len(self.issues) - max_issues} more issues")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"CocoKeypointIndex({str(self.file)!r}, schema={self.schema.name!r}, images={self.num_images}, "
                f"annotations={self.num_loaded}, issues={len(self.issues)})")


def _read_json(path: Path) -> dict:
    data = read_json(path, "COCO annotation file")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a COCO json object with 'images' and 'annotations', got a {type(data).__name__}")
    for key in ("images", "annotations"):
        if key not in data:
            raise ValueError(f"{path}: not a COCO annotation file: no '{key}' list (keys: {sorted(data)})")
        if not isinstance(data[key], list):
            raise ValueError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    if "categories" in data and not isinstance(data["categories"], list):
        raise ValueError(f"{path}: 'categories' must be a list, got {type(data['categories']).__name__}")
    return data


def _pick_category(path: Path, cats: list, category_id: int | None, schema_given: bool) -> dict | None:
    cats = [c for c in cats if isinstance(c, Mapping)]
    if category_id is not None:
        found = [c for c in cats if c.get("id") == category_id]
        if found:
            return dict(found[0])
        if schema_given and not cats:
            return None
        raise ValueError(f"{path}: no category with id {category_id}; ids: {[c.get('id') for c in cats]}")
    kp_cats = [c for c in cats if c.get("keypoints")]
    if len(kp_cats) == 1:
        return dict(kp_cats[0])
    if len(kp_cats) > 1:
        persons = [c for c in kp_cats if c.get("name") == "person"]
        if len(persons) == 1:
            return dict(persons[0])
        raise ValueError(
            f"{path}: several keypoint categories {[(c.get('id'), c.get('name')) for c in kp_cats]}; pass category_id"
        )
    if schema_given:
        persons = [c for c in cats if c.get("name") == "person"]
        return dict(persons[0]) if len(persons) == 1 else None
    raise ValueError(f"{path}: no category with a 'keypoints' list; pass schema= to say what the keypoints are")


def load_coco_keypoints(
    ann_file: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    schema: KeypointSchema | str | None = None,
    category_id: int | None = None,
    strict: bool = False,
    check_files: bool = True,
) -> CocoKeypointIndex:
    """Load and validate a COCO person-keypoint json.

    Args:
        ann_file: the json (``images``, ``annotations``, ``categories``).
        image_dir: folder that image ``file_name`` entries are relative to; None for annotation-only use.
        schema: the keypoint schema (object or :func:`~posekit.schema.get_schema` name). Default: from the
            keypoint category (built-in schemas are recognised by their names).
        category_id: the category to load. Default: the only category with ``keypoints`` (or the one named
            ``person``). Annotations of other categories are ignored.
        strict: raise the first problem as :class:`AnnotationError` instead of skipping the record. A
            non-strict load that skipped anything emits one :class:`AnnotationWarning`.
        check_files: with ``image_dir``, check that every image file exists (a missing one is an issue on field
            ``file_name`` naming the path; the image and its annotations are skipped).

    Raises:
        FileNotFoundError: ``ann_file`` is missing.
        ValueError: the file is not JSON, not a COCO object, or has no usable keypoint category; the message names
            the file. :class:`AnnotationError` (a ValueError) in strict mode.
    """
    from pycocotools.coco import COCO

    path = Path(ann_file)
    data = _read_json(path)
    img_dir = Path(image_dir) if image_dir is not None else None
    if img_dir is not None and not img_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {img_dir} (for {path})")

    category = _pick_category(path, data.get("categories") or [], category_id, schema is not None)
    if schema is not None:
        schema = get_schema(schema)
        if category is not None and category.get("keypoints") and len(category["keypoints"]) != schema.num_keypoints:
            raise ValueError(
                f"{path}: category {category.get('name')!r} has {len(category['keypoints'])} keypoints but schema "
                f"{schema.name!r} has {schema.num_keypoints}"
            )
    else:
        try:
            schema = KeypointSchema.from_coco_category(category)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
    cat_id = category.get("id") if category is not None else None

    issues: list[AnnotationIssue] = []

    def add(ann_id, image_id, field, message):
        issue = AnnotationIssue(str(path), ann_id, image_id, field, message)
        if strict:
            raise AnnotationError(issue)
        issues.append(issue)

    # images
    images: dict[int, dict] = {}
    bad_images: dict[int, str] = {}
    seen_images: set[int] = set()
    for rec in data["images"]:
        try:
            iid, clean = _check_image(rec, seen_images)
        except _Problem as p:
            rid = rec.get("id") if isinstance(rec, Mapping) and _is_int(rec.get("id")) else None
            if rid is not None and rid not in images:
                bad_images[rid] = p.message
                seen_images.add(rid)
            add(None, rid, p.field, p.message)
            continue
        seen_images.add(iid)
        if img_dir is not None and check_files:
            f = img_dir / clean["file_name"]
            if not f.is_file():
                bad_images[iid] = f"image file not found: {f}"
                add(None, iid, "file_name", f"image file not found: {f}")
                continue
        images[iid] = clean

    # annotations
    anns: list[dict] = []
    seen_ids: set = set()
    num_other = num_skipped = 0
    for a in data["annotations"]:
        if not isinstance(a, Mapping):
            num_skipped += 1
            add(None, None, "annotations", f"annotation is a {type(a).__name__}, not an object")
            continue
        aid = a.get("id")
        iid = a.get("image_id")
        iid_known = iid if _is_int(iid) else None
        if cat_id is not None:
            if "category_id" not in a:
                num_skipped += 1
                add(aid if _is_int(aid) else None, iid_known, "category_id", "missing 'category_id'")
                continue
            if a["category_id"] != cat_id:
                num_other += 1
                continue
        if not _is_int(aid):
            num_skipped += 1
            add(None, iid_known, "id", f"annotation id must be an integer, got {aid!r}")
            continue
        if aid in seen_ids:
            num_skipped += 1
            add(aid, iid_known, "id", f"duplicate annotation id {aid}")
            continue
        seen_ids.add(aid)
        if iid_known is None or (iid not in images and iid not in bad_images):
            num_skipped += 1
            add(aid, iid_known, "image_id", f"unknown image id {iid!r} (no such entry in 'images')")
            continue
        if iid in bad_images:  # already reported once on the image record
            num_skipped += 1
            continue
        try:
            clean = _check_annotation(a, schema, images[iid])
        except _Problem as p:
            num_skipped += 1
            add(aid, iid, p.field, p.message)
            continue
        if cat_id is not None:
            clean["category_id"] = cat_id
        elif "category_id" not in clean:
            clean["category_id"] = 1
        anns.append(clean)

    cats = [category] if category is not None else [schema.to_coco_category(1)]
    dataset = {
        "info": data.get("info", {}),
        "licenses": data.get("licenses", []),
        "images": list(images.values()),
        "annotations": anns,
        "categories": cats,
    }
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(_io.StringIO()):
        coco.createIndex()
    index = CocoKeypointIndex(
        file=path, image_dir=img_dir, schema=schema, category=category, coco=coco, issues=issues,
        image_ids=list(images), num_loaded=len(anns), num_skipped=num_skipped,
        num_skipped_images=len(bad_images), num_other_category=num_other,
    )
    if issues:
        warnings.warn(
            f"{path}: skipped {num_skipped} annotations and {len(bad_images)} images with problems, first: "
            f"{issues[0].short()} (see .issues / .report())",
            AnnotationWarning,
            stacklevel=2,
        )
    return index


# ------------------------------------------------------------------------------------------------ dataset
Transform = Callable[[dict, np.random.Generator], dict]


class CocoPoseDataset:
    """Samples from a COCO keypoint file, for top-down or bottom-up training and evaluation.

    A plain map-style dataset (``__len__`` + ``__getitem__``), which is all ``torch.utils.data.DataLoader``,
    ``Subset`` and ``ConcatDataset`` need; it does not subclass ``torch.utils.data.Dataset`` so that the data
    layer (and evaluation, cards, ONNX pipelines, drawing above it) imports without torch.

    Args:
        ann_file, image_dir: the json and the folder its ``file_name`` entries are relative to.
        mode: ``"topdown"`` (one sample per person) or ``"bottomup"`` (one sample per image).
        schema: keypoint schema (default: from the file's category).
        transform: ``transform(sample, rng) -> sample``, applied in ``__getitem__``.
        min_keypoints: a person needs at least this many labelled keypoints (``v > 0``) to be a sample
            (top-down) or an instance of its image (bottom-up).
        include_crowd: also return crowd regions as instances (they have no keypoints, so only with
            ``min_keypoints=0``). Bottom-up masks always zero crowd regions.
        bbox_padding, aspect_ratio: passed to ``posekit.data.geometry.box_xyxy_to_cs`` for ``center``/``scale``.
        seed: base seed; item ``i`` of epoch ``e`` gets ``np.random.default_rng([seed, e, i])``.
        strict, check_files, category_id: as in :func:`load_coco_keypoints`.
        keep_empty_images: bottom-up only: also yield images without any instance.

    Bottom-up ``mask``: 0 inside crowd regions and inside every non-crowd person that is not an instance (fewer
    than ``min_keypoints`` labelled keypoints; with the default 1 these are the people with
    ``num_keypoints == 0``), rasterised from their segmentation (their box when they have none); 1 elsewhere.
    """

    MODES = ("topdown", "bottomup")

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        mode: str = "topdown",
        schema: KeypointSchema | str | None = None,
        transform: Transform | None = None,
        min_keypoints: int = 1,
        include_crowd: bool = False,
        bbox_padding: float = 1.25,
        aspect_ratio: float | None = None,
        seed: int = 0,
        strict: bool = False,
        check_files: bool = True,
        category_id: int | None = None,
        keep_empty_images: bool = False,
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if image_dir is None:
            raise ValueError(f"CocoPoseDataset needs an image_dir for {ann_file}")
        if not _is_int(min_keypoints) or min_keypoints < 0:
            raise ValueError(f"min_keypoints must be an integer >= 0, got {min_keypoints!r}")
        if not bbox_padding > 0:
            raise ValueError(f"bbox_padding must be > 0, got {bbox_padding!r}")
        if aspect_ratio is not None and not aspect_ratio > 0:
            raise ValueError(f"aspect_ratio must be > 0 or None, got {aspect_ratio!r}")
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if transform is not None and not callable(transform):
            raise ValueError(f"transform must be callable(sample, rng), got {type(transform).__name__}")
        self.index = load_coco_keypoints(ann_file, image_dir, schema=schema, category_id=category_id,
                                         strict=strict, check_files=check_files)
        self.schema = self.index.schema
        self.mode = mode
        self.transform = transform
        self.min_keypoints = int(min_keypoints)
        self.include_crowd = bool(include_crowd)
        self.bbox_padding = float(bbox_padding)
        self.aspect_ratio = None if aspect_ratio is None else float(aspect_ratio)
        self.seed = int(seed)
        self.epoch = 0

        # items: top-down (image_id, [ann]); bottom-up (image_id, instances, ignored)
        self._items: list[tuple[int, list[dict], list[dict]]] = []
        for iid in self.index.image_ids:
            people, ignored = [], []
            for a in self.index.annotations(iid):
                keep = a["num_keypoints"] >= self.min_keypoints and (not a["iscrowd"] or self.include_crowd)
                if keep:
                    people.append(a)
                if a["iscrowd"] or not keep:
                    ignored.append(a)
            if mode == "topdown":
                self._items.extend((iid, [a], []) for a in people)
            elif people or keep_empty_images:
                self._items.append((iid, people, ignored))

    # ------------------------------------------------------------------ API
    @property
    def issues(self) -> list[AnnotationIssue]:
        """Problems found while loading (see :class:`AnnotationIssue`)."""
        return self.index.issues

    def report(self) -> str:
        return self.index.report()

    def set_epoch(self, epoch: int) -> None:
        """Change the random stream of the transforms (reproducible per (seed, epoch, index))."""
        if not _is_int(epoch) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)
        if hasattr(self.transform, "set_epoch"):  # e.g. transforms.EpochSwitch (a recipe's second phase)
            self.transform.set_epoch(self.epoch)

    def __len__(self) -> int:
        return len(self._items)

    def image_id_of(self, i: int) -> int:
        return self._items[self._check_index(i)][0]

    def _check_index(self, i) -> int:
        if not _is_int(i):
            raise TypeError(f"dataset index must be an integer, got {type(i).__name__}")
        n = len(self._items)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} samples")
        return int(i) % n

    def rng(self, i: int) -> np.random.Generator:
        """The generator given to the transform for item ``i`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, self._check_index(i)])

    def load_sample(self, i: int, reduce: int = 1, with_mask: bool = True) -> dict:
        """Item ``i`` before the transform (image read, arrays built, identity ``warp``).

        ``reduce`` (2, 4, 8): decode the image at that fraction of its size (:func:`posekit.data.io.read_image`)
        and move keypoints, boxes, areas, centre/scale and ``warp`` into that frame (``x' = (x + 0.5) s - 0.5``, as
        a resize): for pipelines that shrink the image at least that much anyway (RTMO's mosaic).
        ``with_mask=False``: skip rasterising the bottom-up ignore mask (for pipelines that do not use it)."""
        i = self._check_index(i)
        iid = self._items[i][0]
        info = self.index.image_info(iid)
        path = self.index.image_path(iid)
        h, w = info["height"], info["width"]
        image = read_image(path, reduce=reduce)
        if reduce != 1:
            return self._reduced(self._arrays(i, image, with_mask), image, w, h)
        if image.shape[:2] != (h, w):
            raise ValueError(
                f"image {path} is {image.shape[1]}x{image.shape[0]} but {self.index.file} says {w}x{h} "
                f"(image id {iid}); the annotations would not match it"
            )
        return self._arrays(i, image, with_mask)

    def _arrays(self, i: int, image: np.ndarray, with_mask: bool) -> dict:
        iid, people, ignored = self._items[i]
        info = self.index.image_info(iid)
        path = self.index.image_path(iid)
        h, w = info["height"], info["width"]
        k = self.schema.num_keypoints
        kps = (np.stack([self.index.keypoints_of(a) for a in people]) if people else np.zeros((0, k, 3), np.float32))
        boxes = np.stack([self.index.box_of(a) for a in people]) if people else np.zeros((0, 4), np.float32)
        sample = {
            "image": image,
            "keypoints": kps.astype(np.float32),
            "boxes": boxes.astype(np.float32),
            "areas": np.array([a["area"] for a in people], np.float32),
            "ann_ids": np.array([a["id"] for a in people], np.int64),
            "image_id": int(iid),
            "image_path": str(path),
            "warp": np.eye(2, 3, dtype=np.float64),
        }
        if self.mode == "bottomup":
            if with_mask:
                sample["mask"] = _ignore_mask(ignored, h, w)
        else:
            from posekit.data.geometry import box_xyxy_to_cs

            centers, scales = box_xyxy_to_cs(boxes, aspect_ratio=self.aspect_ratio, padding=self.bbox_padding)
            sample["center"] = np.asarray(centers, np.float32).reshape(-1, 2)[0]
            sample["scale"] = np.asarray(scales, np.float32).reshape(-1, 2)[0]
        return sample

    @staticmethod
    def _reduced(sample: dict, image: np.ndarray, w: int, h: int) -> dict:
        from posekit.data.geometry import apply_affine, compose_affine

        rh, rw = image.shape[:2]
        sx, sy = rw / w, rh / h
        S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
        out = dict(sample, image=image)
        kp = np.array(sample["keypoints"], np.float32, copy=True)
        kp[..., :2] = apply_affine(kp[..., :2].astype(np.float64), S)
        out["keypoints"] = kp
        b = np.array(sample["boxes"], np.float32, copy=True)
        b[:, 0::2] = (b[:, 0::2] + 0.5) * sx - 0.5
        b[:, 1::2] = (b[:, 1::2] + 0.5) * sy - 0.5
        out["boxes"] = b
        out["areas"] = (np.asarray(sample["areas"], np.float64) * sx * sy).astype(np.float32)
        if "mask" in sample:
            import cv2

            out["mask"] = cv2.resize(sample["mask"], (rw, rh), interpolation=cv2.INTER_NEAREST)
        if "center" in sample:
            out["center"] = apply_affine(np.asarray(sample["center"], np.float64), S).astype(np.float32)
            out["scale"] = (np.asarray(sample["scale"], np.float64) * [sx, sy]).astype(np.float32)
        out["warp"] = compose_affine(S, np.asarray(sample["warp"], np.float64))
        return out

    def __getitem__(self, i: int) -> dict:
        sample = self.load_sample(i)
        if self.transform is not None:
            out = self.transform(sample, self.rng(i))
            if not isinstance(out, dict):
                raise TypeError(f"transform {self.transform!r} returned {type(out).__name__}, expected the sample dict")
            sample = out
        return sample

    def __repr__(self) -> str:
        return (f"CocoPoseDataset({str(self.index.file)!r}, mode={self.mode!r}, samples={len(self)}, "
                f"images={self.index.num_images}, issues={len(self.issues)})")


def subset_keypoint_file(src: str | os.PathLike, dst: str | os.PathLike, schema: KeypointSchema,
                         indices: Sequence[int]) -> Path:
    """Write a copy of the COCO keypoint file ``src`` to ``dst`` keeping only the keypoints ``indices`` (in that
    order), renamed and re-described by ``schema`` (its names and skeleton go into the person category;
    ``num_keypoints`` is recounted). For fine-tuning to a custom keypoint set built from an existing one.
    Written atomically."""
    import json

    from posekit.data.io import write_bytes_atomic

    idx = [int(i) for i in indices]
    if len(idx) != schema.num_keypoints:
        raise ValueError(f"subset_keypoint_file: {len(idx)} indices for schema {schema.name!r} with "
                         f"{schema.num_keypoints} keypoints")
    d = _read_json(Path(src))
    cats = [c for c in d.get("categories", []) if c.get("keypoints")]
    if not cats:
        raise ValueError(f"{src}: no category with keypoints")
    k = len(cats[0]["keypoints"])
    if any(not 0 <= i < k for i in idx):
        raise ValueError(f"subset_keypoint_file: indices {idx} out of range for {k} keypoints in {src}")
    cat_ids = {c["id"] for c in cats}
    out = dict(d)
    out["categories"] = [({**c, **schema.to_coco_category(c["id"], c.get("name", "person"))}
                          if c["id"] in cat_ids else c) for c in d["categories"]]
    anns = []
    for a in d.get("annotations", []):
        a = dict(a)
        if a.get("category_id") in cat_ids and a.get("keypoints"):
            kp = np.asarray(a["keypoints"], np.float64).reshape(-1, 3)[idx]
            a["keypoints"] = [float(v) if j % 3 < 2 else int(v) for j, v in enumerate(kp.ravel())]
            a["num_keypoints"] = int((kp[:, 2] > 0).sum())
        anns.append(a)
    out["annotations"] = anns
    return write_bytes_atomic(dst, json.dumps(out).encode())
