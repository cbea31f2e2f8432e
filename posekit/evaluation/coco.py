"""COCO / CrowdPose keypoint AP and AR: posekit's array evaluator (default) or pycocotools / xtcocotools.

:func:`evaluate_coco_keypoints` prepares the inputs (validation, custom sigmas, ``use_area``, image subsets, empty
results), runs the evaluator (``backend="fast"``: :mod:`posekit.evaluation.fast`, the same numbers as pycocotools,
or xtcocotools for CrowdPose, several times faster; ``"pycocotools"`` / ``"xtcocotools"``: ``COCOeval`` itself, the
reference, with its printing captured), and returns the named stats.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from posekit.data.io import read_json
from posekit.evaluation.fast import BOX_AREA_FACTOR
from posekit.evaluation.results import load_results, validate_results

__all__ = [
    "COCO_STAT_NAMES",
    "CROWDPOSE_STAT_NAMES",
    "EvalStats",
    "evaluate_coco_keypoints",
    "load_coco_dataset",
    "BOX_AREA_FACTOR",
    "BACKENDS",
]

#: Evaluators: posekit's array evaluator (default) and the two references.
BACKENDS = ("fast", "pycocotools", "xtcocotools")
#: Stat names, in pycocotools' ``COCOeval.stats`` order (iouType='keypoints').
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
#: Stat names of xtcocotools' 'keypoints_crowd' mode (CrowdPose), in its ``stats`` order.
CROWDPOSE_STAT_NAMES = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP(E)", "AP(M)", "AP(H)")


class EvalStats(dict):
    """The named stats (``{"AP": ..., ...}``, floats) plus what the evaluator printed.

    Attributes:
        log: the captured pycocotools / xtcocotools output (its summary table included).
        backend, dataset: how the stats were computed.
    """

    def __init__(self, stats: Mapping[str, float], log: str = "", backend: str = "", dataset: str = ""):
        super().__init__(stats)
        self.log = log
        self.backend = backend
        self.dataset = dataset


#: the annotation fields keypoint evaluation reads (the others, segmentation polygons above all, are skipped when the
#: file is parsed for evaluation).
_EVAL_FIELDS = ("id", "image_id", "category_id", "keypoints", "bbox", "area", "iscrowd", "num_keypoints")


def _read_keypoint_annotations(path: Path) -> dict:
    """An annotation file as a dict of its images, categories and annotations, these with :data:`_EVAL_FIELDS` only.

    msgspec decodes it against that layout, skipping the other fields without building them (COCO's segmentation
    polygons are most of a val2017 file: about 3x faster than parsing it whole); a file that does not fit the layout
    (not an object, no 'annotations' list, ...) or a machine without msgspec goes through ``read_json``, whose
    result (and the checks of :func:`load_coco_dataset`) then names the problem."""
    try:
        import msgspec
    except ImportError:  # pragma: no cover - msgspec is a dependency
        return read_json(path, "annotation file")
    if not path.is_file():
        return read_json(path, "annotation file")  # its clear 'not found' error
    decoder = _annotation_decoder(msgspec)
    try:
        doc = decoder.decode(path.read_bytes())
    except (msgspec.DecodeError, UnicodeDecodeError):
        return read_json(path, "annotation file")
    unset = msgspec.UNSET
    out = {"images": doc.images, "categories": doc.categories}
    out["annotations"] = [{f: v for f in _EVAL_FIELDS if (v := getattr(a, f)) is not unset}
                          for a in doc.annotations]
    return out


def _annotation_decoder(msgspec):
    global _DECODER
    if _DECODER is None:
        from typing import Any

        fields = [(f, Any, msgspec.UNSET) for f in _EVAL_FIELDS]
        ann = msgspec.defstruct("_EvalAnnotation", fields)
        doc = msgspec.defstruct("_EvalFile", [("images", list), ("annotations", list[ann]), ("categories", list)])
        _DECODER = msgspec.json.Decoder(doc)
    return _DECODER


_DECODER = None


def load_coco_dataset(gt) -> tuple[dict, str]:
    """The COCO annotation dict and a name for messages, from a path, a dict or a pycocotools/xtcocotools ``COCO``."""
    if isinstance(gt, (str, os.PathLike)):
        path = Path(gt)
        data = _read_keypoint_annotations(path)
        source = str(path)
    elif isinstance(gt, Mapping):
        data, source = gt, "<annotations dict>"
    elif hasattr(gt, "dataset") and isinstance(gt.dataset, Mapping):
        data, source = gt.dataset, "<COCO object>"
    else:
        raise ValueError(f"ground truth must be a json path, a dict or a COCO object, got {type(gt).__name__}")
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: a COCO annotation file must hold an object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{source}: missing top-level field '{key}'")
    return data, source


def _keypoint_category(data: Mapping, source: str) -> list[dict]:
    cats = [c for c in data["categories"] if c.get("keypoints")]
    if not cats:
        raise ValueError(f"{source}: no category has a 'keypoints' list, so there is nothing to evaluate")
    ks = {len(c["keypoints"]) for c in cats}
    if len(ks) > 1:
        raise ValueError(f"{source}: keypoint categories have different keypoint counts {sorted(ks)}")
    return cats


def _resolve_sigmas(sigmas, cats: list[dict], dataset: str, k: int) -> np.ndarray:
    from posekit.schema import COCO17, CROWDPOSE14, KeypointSchema, get_schema

    if sigmas is None:
        if dataset == "crowdpose" and k == 14:
            s = CROWDPOSE14.sigmas_array
        elif k == 17:
            s = COCO17.sigmas_array  # pycocotools' default kpt_oks_sigmas
        else:
            s = KeypointSchema.from_coco_category(cats[0]).sigmas_array
    elif isinstance(sigmas, KeypointSchema):
        s = sigmas.sigmas_array
    elif isinstance(sigmas, (str, os.PathLike)):
        s = get_schema(sigmas).sigmas_array
    else:
        s = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if s.shape[0] != k:
        raise ValueError(f"sigmas: {s.shape[0]} values but the annotations' keypoint category has {k} keypoints")
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(f"sigmas must be finite and > 0, got {s.tolist()}")
    return s.astype(np.float64)


def _prepare_gt(data: Mapping, source: str, kp_cat_ids: set, use_area: bool, backend: str, k: int,
                image_ids: list[int] | None, dataset: str = "coco") -> dict:
    """A copy of the annotation dict ready for the backend (the caller's dict is never modified). pycocotools and
    xtcocotools write into the annotations they evaluate, so they get copies of all; the fast backend only reads,
    so it gets copies of those that change (a missing ``iscrowd`` / ``num_keypoints``, the box area)."""
    copy_all = backend != "fast"
    images = list(data["images"])
    anns = list(data["annotations"])
    if image_ids is not None:
        keep = set(image_ids)
        images = [im for im in images if im["id"] in keep]
        anns = [a for a in anns if a.get("image_id") in keep]
    out_anns = []
    for i, a in enumerate(anns):
        if a.get("category_id") not in kp_cat_ids:
            out_anns.append(dict(a) if copy_all else a)
            continue
        where = f"{source}: annotation {a.get('id', f'#{i}')}"
        for key in ("id", "image_id", "keypoints", "bbox"):
            if key not in a:
                raise ValueError(f"{where}: missing field '{key}'")
        if len(a["keypoints"]) != 3 * k:
            raise ValueError(f"{where}: field 'keypoints' has {len(a['keypoints'])} numbers, expected {3 * k}")
        box_area = not use_area and (backend == "pycocotools" or (backend == "fast" and dataset == "coco"))
        if copy_all or box_area or "iscrowd" not in a or "num_keypoints" not in a:
            a = dict(a)
        if "iscrowd" not in a:
            a["iscrowd"] = 0
        if "num_keypoints" not in a:
            a["num_keypoints"] = int(np.count_nonzero(np.asarray(a["keypoints"][2::3]) > 0))
        if box_area:
            # xtcocotools' use_area=False, reproduced for pycocotools: box area times 0.53.
            a["area"] = float(a["bbox"][2]) * float(a["bbox"][3]) * BOX_AREA_FACTOR
        elif use_area and "area" not in a:
            raise ValueError(f"{where}: missing field 'area'; evaluate with use_area=False (--no-area) to use the box")
        out_anns.append(a)
    out = {key: val for key, val in data.items() if key not in ("images", "annotations")}
    out["images"] = images
    out["annotations"] = out_anns
    return out


def _import_xtcocotools():
    """xtcocotools' ``COCO`` and ``COCOeval``.

    The xtcocotools 1.14.3 wheels carry a C extension (``xtcocotools._mask``) built against numpy 1.x, which fails
    to import under numpy 2 ("numpy.dtype size changed"). Keypoint evaluation never uses masks (only 'segm'/'bbox'
    IoU does), so when that import fails, pycocotools' mask module (same API) stands in for ``xtcocotools.mask``;
    everything that computes the keypoint stats is xtcocotools' own Python code.
    """
    import importlib
    import sys

    try:
        from xtcocotools.coco import COCO
        from xtcocotools.cocoeval import COCOeval
    except ValueError as e:
        if "numpy.dtype size changed" not in str(e):
            raise
        import pycocotools.mask
        import xtcocotools

        sys.modules["xtcocotools.mask"] = pycocotools.mask
        xtcocotools.mask = pycocotools.mask
        COCO = importlib.import_module("xtcocotools.coco").COCO
        COCOeval = importlib.import_module("xtcocotools.cocoeval").COCOeval
    return COCO, COCOeval


def _zero_stats(names, log: str, backend: str, dataset: str) -> EvalStats:
    return EvalStats({n: 0.0 for n in names}, log=log, backend=backend, dataset=dataset)


def evaluate_coco_keypoints(
    gt,
    results,
    sigmas=None,
    use_area: bool = True,
    backend: str | None = None,
    dataset: str = "coco",
    image_ids: Iterable[int] | None = None,
    verbose: bool = False,
) -> EvalStats:
    """COCO keypoint AP/AR (or CrowdPose's) of a results list against ground truth.

    Args:
        gt: annotation json path, annotation dict, or a pycocotools/xtcocotools ``COCO``. Never modified.
        results: results json path or list of entries ``{image_id, category_id, keypoints (3K), score}``
            (validated: see :func:`posekit.evaluation.results.validate_results`). Never modified.
        sigmas: None (COCO-17 sigmas for 17 keypoints, CrowdPose-14 sigmas in crowdpose mode, otherwise the
            sigmas of the schema matching the category's keypoint names), a KeypointSchema, a schema name/file,
            or a ``(K,)`` array.
        use_area: True: the OKS scale is the ground truth's ``area`` (COCO's segmentation area). False: it is the
            ground-truth box ``w * h * 0.53`` (xtcocotools' ``use_area=False``; for pycocotools a copy of the
            ground truth with that ``area`` is evaluated, which is identical). The medium/large split uses the
            same area.
        backend: ``"fast"`` (the default, also for None): posekit's array evaluator
            (:mod:`posekit.evaluation.fast`), which gives pycocotools' numbers (xtcocotools' for CrowdPose);
            ``"pycocotools"`` or ``"xtcocotools"``: the reference evaluators themselves. Input the array evaluator
            does not take (a ground truth of the keypoint category without ``area``, ``bbox`` on some results only)
            is evaluated by the reference (pycocotools for COCO, xtcocotools for CrowdPose; ``.backend`` says
            which ran).
        dataset: ``"coco"`` (stats :data:`COCO_STAT_NAMES`) or ``"crowdpose"`` (xtcocotools
            ``iouType='keypoints_crowd'``, stats :data:`CROWDPOSE_STAT_NAMES`; every image needs ``crowdIndex``).
        image_ids: evaluate only these images (results on other images are dropped).
        verbose: also print the evaluator's output (it is always captured in ``.log``).

    Returns:
        :class:`EvalStats`: a dict of the named stats as floats (pycocotools' -1 where a stat has no ground truth)
        with ``.log``. Empty results give all stats 0.0 and a ``UserWarning``.
    """
    if dataset not in ("coco", "crowdpose"):
        raise ValueError(f"dataset must be 'coco' or 'crowdpose', got {dataset!r}")
    if backend is None:
        backend = "fast"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if dataset == "crowdpose" and backend == "pycocotools":
        raise ValueError("dataset='crowdpose' needs backend='fast' or 'xtcocotools' (pycocotools has no CrowdPose "
                         "mode)")
    names = CROWDPOSE_STAT_NAMES if dataset == "crowdpose" else COCO_STAT_NAMES

    data, source = load_coco_dataset(gt)
    cats = _keypoint_category(data, source)
    k = len(cats[0]["keypoints"])
    kp_cat_ids = {c["id"] for c in cats}
    s = _resolve_sigmas(sigmas, cats, dataset, k)

    all_ids = [im["id"] for im in data["images"]]
    known = set(all_ids)
    if image_ids is not None:
        image_ids = sorted({int(i) for i in image_ids})
        missing = [i for i in image_ids if i not in known]
        if missing:
            raise ValueError(f"image_ids: {len(missing)} id(s) not in {source}: {missing[:10]}")
    if dataset == "crowdpose":
        for im in data["images"]:
            if im["id"] in (known if image_ids is None else set(image_ids)) and "crowdIndex" not in im:
                raise ValueError(f"{source}: image {im['id']} has no 'crowdIndex' field (needed by dataset='crowdpose')")

    if isinstance(results, (str, os.PathLike)):
        res = load_results(results, num_keypoints=k, image_ids=known)
    else:
        res = validate_results(list(results), num_keypoints=k, image_ids=known, source="<results>")
    if image_ids is not None:
        keep = set(image_ids)
        res = [r for r in res if int(r["image_id"]) in keep]
    bad_cats = sorted({int(r["category_id"]) for r in res} - kp_cat_ids)
    if bad_cats:
        warnings.warn(
            f"results use category id(s) {bad_cats} that are not keypoint categories of {source} "
            f"({sorted(kp_cat_ids)}); those entries are not evaluated",
            stacklevel=2,
        )
    if not res:
        msg = "no results to evaluate: every stat is 0"
        warnings.warn(msg, stacklevel=2)
        return _zero_stats(names, msg + "\n", backend, dataset)
    gt_data = _prepare_gt(data, source, kp_cat_ids, use_area, backend, k, image_ids, dataset)
    if backend == "fast":
        from posekit.evaluation.fast import Unsupported, evaluate_keypoints_fast

        try:
            stats, log = evaluate_keypoints_fast(gt_data, res, s, protocol=dataset, use_area=use_area,
                                                 image_ids=image_ids)
        except Unsupported as e:  # outside what the array evaluator takes: the reference evaluates it
            backend = "xtcocotools" if dataset == "crowdpose" else "pycocotools"
            gt_data = _prepare_gt(data, source, kp_cat_ids, use_area, backend, k, image_ids, dataset)
            note = f"posekit fast evaluator: {e}; evaluated by {backend}\n"
        else:
            if verbose:
                print(log, end="")
            return EvalStats(dict(zip(names, stats)), log=log, backend="fast", dataset=dataset)
    else:
        note = ""
    res = [dict(r) for r in res]  # loadRes adds id/area/bbox to the entries it is given
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if backend == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval

            coco_gt = COCO()
            coco_gt.dataset = gt_data
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(res)
            ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
            ev.params.kpt_oks_sigmas = s
            if image_ids is not None:
                ev.params.imgIds = image_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        else:
            COCO, COCOeval = _import_xtcocotools()

            with tempfile.TemporaryDirectory(prefix="posekit-eval-") as tmp:
                # xtcocotools' CrowdPose mode re-reads the annotation file (for crowdIndex), so it needs a path.
                gt_path = os.path.join(tmp, "gt.json")
                if dataset == "crowdpose":
                    with open(gt_path, "w") as f:
                        json.dump(gt_data, f)
                coco_gt = COCO(gt_path, ann_data=gt_data)
                coco_dt = coco_gt.loadRes(res)
                ev = COCOeval(
                    coco_gt, coco_dt,
                    iouType="keypoints_crowd" if dataset == "crowdpose" else "keypoints",
                    sigmas=s, use_area=use_area,
                )
                if image_ids is not None:
                    ev.params.imgIds = image_ids
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
    log = note + buf.getvalue()
    if verbose:
        print(log, end="")
    stats = [float(v) for v in ev.stats]
    if len(stats) != len(names):
        raise RuntimeError(f"{backend} returned {len(stats)} stats, expected {len(names)} ({', '.join(names)})")
    return EvalStats(dict(zip(names, stats)), log=log, backend=backend, dataset=dataset)
