"""COCO keypoint results files: a json list of ``{image_id, category_id, keypoints, score}`` entries.

``keypoints`` is the flat list ``[x1, y1, s1, x2, y2, s2, ...]`` (3*K numbers, image pixels, ``s`` a keypoint
score). Extra keys (``bbox``, ``track_id``, ...) are kept as they are. Note: pycocotools' ``loadRes`` takes the
detection area from ``bbox`` when the *first* entry has one, and from the keypoints' extent otherwise; the area only
decides which unmatched detections are ignored in the medium/large stats.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from posekit.data.io import read_json

__all__ = ["save_results", "load_results", "validate_results", "people_to_results", "perturbed_results"]

_REQUIRED = ("image_id", "category_id", "keypoints", "score")
_REQUIRED_SET = frozenset(_REQUIRED)


def _finite_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def _int_like(x) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, (int, np.integer)):
        return True
    return isinstance(x, (float, np.floating)) and math.isfinite(x) and float(x).is_integer()


def _all_valid(results: list, expected: int | None, known: set | None) -> bool:
    """True when every entry passes the checks of :func:`validate_results`, tested on whole columns (the common
    case, about 10x faster than entry by entry); False sends the list through the entry-by-entry checks, which name
    the first bad entry."""
    if not results:
        return True
    try:
        if not all(isinstance(r, dict) and r.keys() >= _REQUIRED_SET for r in results):
            return False
        kps = [r["keypoints"] for r in results]
        if not all(type(k) is list for k in kps):
            return False
        n = len(kps[0])
        if n == 0 or n % 3 or (expected is not None and n != expected):
            return False
        arr = np.asarray(kps)
        scores = np.asarray([r["score"] for r in results])
        ids = np.asarray([(r["image_id"], r["category_id"]) for r in results])
    except (ValueError, TypeError):  # ragged lengths, non-numbers
        return False
    if arr.shape != (len(results), n) or arr.dtype.kind not in "iuf" or not np.isfinite(arr).all():
        return False
    if scores.dtype.kind not in "iuf" or not np.isfinite(scores).all() or ids.dtype.kind not in "iu":
        return False  # bools, floats or strings among the ids / scores: checked one by one
    if any(type(r["score"]) is bool or type(r["image_id"]) is bool or type(r["category_id"]) is bool
           for r in results):
        return False
    return known is None or set(np.unique(ids[:, 0]).tolist()) <= known


def validate_results(
    results, num_keypoints: int | None = None, image_ids: Iterable[int] | None = None, source: str = "<results>"
) -> list[dict]:
    """Check every entry of a results list; return the list (entries unchanged).

    Raises:
        ValueError: naming ``source``, the entry index and the field: a missing key, a non-integer id, keypoints
            that are not ``3*K`` finite numbers (or a length that differs from ``3*num_keypoints`` / from the other
            entries), a non-finite score, or image ids that are not in ``image_ids`` (all listed, up to 10).
    """
    if not isinstance(results, list):
        raise ValueError(f"{source}: a results file must hold a json list of entries, got {type(results).__name__}")
    known = None if image_ids is None else {int(i) for i in image_ids}
    expected = None if num_keypoints is None else 3 * int(num_keypoints)
    if _all_valid(results, expected, known):
        return results
    unknown: dict[int, int] = {}
    for i, r in enumerate(results):
        where = f"{source}: entry {i}"
        if not isinstance(r, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(r).__name__}")
        for key in _REQUIRED:
            if key not in r:
                raise ValueError(f"{where}: missing field '{key}' (needs {', '.join(_REQUIRED)})")
        for key in ("image_id", "category_id"):
            if not _int_like(r[key]):
                raise ValueError(f"{where}: field '{key}' must be an integer, got {r[key]!r}")
        kp = r["keypoints"]
        if not isinstance(kp, (list, tuple, np.ndarray)):
            raise ValueError(f"{where}: field 'keypoints' must be a list of numbers, got {type(kp).__name__}")
        n = len(kp)
        if n == 0 or n % 3:
            raise ValueError(f"{where}: field 'keypoints' has {n} numbers, expected 3*K (x, y, score per keypoint)")
        if expected is None:
            expected = n  # every entry must have the same K
        if n != expected:
            raise ValueError(
                f"{where}: field 'keypoints' has {n} numbers, expected {expected} ({expected // 3} keypoints x 3)"
            )
        try:
            arr = np.asarray(kp)
        except (ValueError, TypeError):
            arr = None
        fast_ok = arr is not None and arr.dtype.kind in "iuf" and arr.ndim == 1 and bool(np.isfinite(arr).all())
        for j, x in enumerate(() if fast_ok else kp):
            if not _finite_number(x):
                raise ValueError(
                    f"{where}: field 'keypoints'[{j}] (keypoint {j // 3}, {'xys'[j % 3]}) must be a finite number, got {x!r}"
                )
        if not _finite_number(r["score"]):
            raise ValueError(f"{where}: field 'score' must be a finite number, got {r['score']!r}")
        if known is not None and int(r["image_id"]) not in known:
            unknown.setdefault(int(r["image_id"]), i)
    if unknown:
        items = sorted(unknown.items(), key=lambda t: t[1])
        shown = ", ".join(f"{img} (entry {idx})" for img, idx in items[:10])
        more = f" and {len(items) - 10} more" if len(items) > 10 else ""
        raise ValueError(
            f"{source}: field 'image_id' names {len(items)} image id(s) not in the annotations: {shown}{more}"
        )
    return results


def _plain(x):
    """numpy scalars / arrays to json-able Python values."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def save_results(results, path: str | os.PathLike) -> Path:
    """Validate and write a results list as json, atomically (temp file in the same folder + ``os.replace``).

    ``results`` is a list of dicts (numpy values are converted) as in :func:`load_results`. Returns the path.
    """
    path = Path(path)
    entries = [_plain(r) for r in results] if isinstance(results, (list, tuple)) else results
    validate_results(entries, source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_results(
    path: str | os.PathLike, num_keypoints: int | None = None, image_ids: Iterable[int] | None = None
) -> list[dict]:
    """Read and validate a COCO keypoint results json (see :func:`validate_results` for the checks).

    Args:
        path: the json file (a list of entries).
        num_keypoints: K expected in every entry (None: only require every entry to have the same K).
        image_ids: the image ids of the annotations; entries naming others are an error.
    """
    path = Path(path)
    data = read_json(path, "results file")
    return validate_results(data, num_keypoints=num_keypoints, image_ids=image_ids, source=str(path))


def people_to_results(people_by_image: Mapping[int, Iterable], category_id: int = 1) -> list[dict]:
    """Results entries from ``{image_id: [Person, ...]}`` (via ``Person.to_coco``)."""
    out = []
    for image_id, people in people_by_image.items():
        out.extend(p.to_coco(int(image_id), category_id) for p in people)
    return out


def perturbed_results(annotations: list[dict], rng: np.random.Generator, miss_rate: float = 0.1,
                      fp_rate: float = 0.2, max_level: float = 0.1, image_sizes: dict | None = None
                      ) -> list[dict]:
    """Keypoint results made from ground truth, for checking and timing an evaluator (not a model).

    Each non-crowd person with keypoints is missed with probability ``miss_rate``; otherwise its keypoints get
    Gaussian noise of ``level * sqrt(area)`` pixels (``level`` uniform in [0.005, ``max_level``]; unlabelled ones
    start at the box centre), random scores, 10 % dropped to zero, and a person score that falls with the noise.
    With probability ``fp_rate`` a false positive follows: the same pose moved sideways by 50-200 px, or, when
    ``image_sizes`` (``{image id: (w, h)}``) is given, by up to half the image in x and y, with a low score.
    """
    out = []
    for a in annotations:
        if a.get("iscrowd") or a["num_keypoints"] == 0 or rng.random() < miss_rate:
            continue
        kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
        k = len(kp)
        x, y, w, h = a["bbox"]
        level = rng.uniform(0.005, max_level)
        pred = np.empty_like(kp)
        pred[:, :2] = np.where(kp[:, 2:3] > 0, kp[:, :2], [x + w / 2, y + h / 2])
        pred[:, :2] += rng.normal(0, level * np.sqrt(max(a["area"], 1.0)), (k, 2))
        pred[:, 2] = rng.uniform(0.1, 1.0, k)
        pred[rng.random(k) < 0.1] = 0.0
        out.append({"image_id": a["image_id"], "category_id": 1, "keypoints": pred.ravel().tolist(),
                    "score": float(np.clip(1 - 4 * level + rng.normal(0, 0.1), 0.01, 1))})
        if rng.random() < fp_rate:
            fp = pred.copy()
            if image_sizes is None:
                fp[:, 0] += rng.choice([-1, 1]) * rng.uniform(50, 200)
            else:
                W, H = image_sizes[a["image_id"]]
                fp[:, 0] += rng.uniform(-0.5, 0.5) * W
                fp[:, 1] += rng.uniform(-0.5, 0.5) * H
            out.append({"image_id": a["image_id"], "category_id": 1, "keypoints": fp.ravel().tolist(),
                        "score": float(rng.uniform(0.01, 0.5))})
    return out
