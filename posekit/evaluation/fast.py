"""COCO / CrowdPose keypoint AP with NumPy: the numbers of pycocotools (xtcocotools' for CrowdPose), several times
faster.

pycocotools spends its time in Python loops over objects: one OKS per (detection, ground truth) pair, the greedy
matching per image, threshold and area range, and a per-element precision envelope. faster-coco-eval moves the
matching and accumulation to C++ and gives the same numbers, but its index, ``loadRes`` and OKS stay per-object
Python (about 2.2x pycocotools end to end on a val2017-sized set here, short of 5x), so this module does the whole
protocol on arrays instead:

* **OKS** for every (detection, ground truth) pair of every image in one pass, with pycocotools' arithmetic in its
  order (``(dx² + dy²) / vars / (area + eps) / 2``, the sum over the labelled keypoints in their order, the
  doubled-box distance for ground truths without labelled keypoints), so the values are bit-identical;
* **matching** per detection rank (at most ``maxDets`` = 20 steps), for all images with the same ground-truth
  count, all 10 thresholds and all area ranges at once; the rules are pycocotools' (best OKS >= threshold, the last
  of equal ones; unmatched non-ignored ground truths first, then ignored ones; crowd regions match any number of
  detections; ids kept so that pycocotools' ``dtm == 0`` quirk for a ground truth with id 0 is reproduced);
* **accumulation**: the same stable score sort, cumulative sums and recall sampling; the precision envelope as a
  reversed running maximum (exact).

Two protocols: ``"coco"`` is pycocotools' ``COCOeval(iouType='keypoints')``; ``"crowdpose"`` is xtcocotools'
``iouType='keypoints_crowd'`` (results with no keypoint score > 0 are dropped, matches use ids >= 0, the box area
times 0.53 stands in for a missing ``area`` or with ``use_area=False``, and AP(E/M/H) are the mean precision over
the crowdIndex splits, rounded to 4 decimals, as xtcocotools computes them).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np

__all__ = ["evaluate_keypoints_fast", "Unsupported", "KEYPOINT_AREA_RANGES"]

#: pycocotools' keypoint parameters (``Params.setKpParams``), written the same way so the floats are the same.
IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DET = 20
KEYPOINT_AREA_RANGES = (("all", (0 ** 2, 1e5 ** 2)), ("medium", (32 ** 2, 96 ** 2)), ("large", (96 ** 2, 1e5 ** 2)))
#: With ``use_area=False`` the OKS scale (and the area used for the medium/large split) is ``bbox w * h * 0.53``,
#: as xtcocotools does (0.53: the mean ratio of segmentation area to box area of COCO people).
BOX_AREA_FACTOR = 0.53
_EPS = np.spacing(1)


class Unsupported(ValueError):
    """Input the array evaluator does not take (the caller falls back to the reference backend)."""


def _gt_entries(data: Mapping, img_ids: np.ndarray, cat_ids: Sequence[int]) -> list[dict]:
    """The ground truths pycocotools evaluates, in its order: by image (sorted ids), file order within an image.

    ``getAnnIds`` + ``loadAnns`` go through the ``anns`` dict, so a duplicated annotation id stands for the last
    annotation with that id (reproduced here)."""
    anns = data["annotations"]
    cats = set(cat_ids)
    ids = [a["id"] for a in anns]
    if len(set(ids)) == len(ids):  # the usual case: select and order with arrays
        img = np.asarray([a["image_id"] for a in anns], np.int64)
        pos = np.searchsorted(img_ids, img)
        inside = (pos < img_ids.size) & (img_ids[np.minimum(pos, max(img_ids.size - 1, 0))] == img) \
            if img_ids.size else np.zeros(len(anns), bool)
        inside &= np.asarray([a["category_id"] in cats for a in anns], bool)
        sel = np.flatnonzero(inside)
        sel = sel[np.argsort(pos[sel], kind="stable")]
        return [anns[i] for i in sel.tolist()]
    by_id = {a["id"]: a for a in anns}
    img_to = defaultdict(list)
    for a in anns:
        img_to[a["image_id"]].append(a)
    out = []
    for i in img_ids.tolist():
        for a in img_to.get(i, ()):
            if a["category_id"] in cats:
                out.append(by_id[a["id"]])
    return out


def _det_areas(res: list[dict], kps: np.ndarray) -> np.ndarray:
    """``loadRes``' detection area: the box area when the first entry has a non-empty ``bbox``, else the extent of
    all keypoints (x and y of every keypoint, labelled or not)."""
    b0 = res[0].get("bbox") if res else None
    if b0 is not None and not (isinstance(b0, (list, tuple)) and len(b0) == 0):
        try:
            boxes = np.asarray([r["bbox"] for r in res], dtype=np.float64).reshape(len(res), 4)
        except (KeyError, ValueError, TypeError):
            raise Unsupported("the first result has a 'bbox' but not every result has a 4-number 'bbox'") from None
        return boxes[:, 2] * boxes[:, 3]
    x, y = kps[:, :, 0], kps[:, :, 1]
    return (x.max(1) - x.min(1)) * (y.max(1) - y.min(1))


def _oks_pairs(dk: np.ndarray, gk: np.ndarray, gi: np.ndarray, gbox: np.ndarray, garea: np.ndarray,
               vars_: np.ndarray) -> np.ndarray:
    """OKS of detection ``dk[p]`` (``(P, K, 3)``) with ground truth ``gi[p]`` (rows of ``gk``, ``gbox``,
    ``garea``), bit-identical to pycocotools' ``computeOks``."""
    p, k = dk.shape[:2]
    if p == 0:
        return np.zeros(0)
    g_vis = gk[:, :, 2] > 0
    g_k1 = g_vis.sum(1)
    # the labelled keypoints first, in order (per ground truth; all K where none is labelled)
    g_order = np.argsort(~g_vis & (g_k1 > 0)[:, None], axis=1, kind="stable")
    k1 = g_k1[gi]
    dx = dk[:, :, 0] - np.take(np.ascontiguousarray(gk[:, :, 0]), gi, axis=0)
    dy = dk[:, :, 1] - np.take(np.ascontiguousarray(gk[:, :, 1]), gi, axis=0)
    nolab = k1 == 0
    if nolab.any():  # distance to the ground-truth box doubled on every side
        bb = gbox[gi[nolab]]
        x0, x1 = (bb[:, 0] - bb[:, 2])[:, None], (bb[:, 0] + bb[:, 2] * 2)[:, None]
        y0, y1 = (bb[:, 1] - bb[:, 3])[:, None], (bb[:, 1] + bb[:, 3] * 2)[:, None]
        xs, ys = dk[nolab, :, 0], dk[nolab, :, 1]
        z = np.zeros_like(xs)
        dx[nolab] = np.maximum(z, x0 - xs) + np.maximum(z, xs - x1)
        dy[nolab] = np.maximum(z, y0 - ys) + np.maximum(z, ys - y1)
    # e = (dx ** 2 + dy ** 2) / vars / (area + eps) / 2, in place, in pycocotools' order; then exp(-e)
    e = np.square(dx, out=dx)
    e += np.square(dy, out=dy)
    e /= vars_
    e /= (garea[gi] + _EPS)[:, None]
    e /= 2
    ex = np.exp(np.negative(e, out=e), out=e)
    # pycocotools sums the labelled keypoints' terms as one 1-D array of k1 values (numpy's pairwise sum depends on
    # the length): move them to the front, in order, and sum each length group as rows of that length.
    n = np.where(nolab, k, k1)
    part = np.flatnonzero(n < k)
    if part.size:
        idx = (part * k)[:, None] + np.take(g_order, gi[part], axis=0)
        ex[part] = np.take(ex.reshape(-1), idx)
    oks = np.empty(p)
    for m in np.unique(n).tolist():
        rows = np.flatnonzero(n == m)
        oks[rows] = (ex[rows, :m] if m < k else ex[rows]).sum(axis=1) / m
    return oks


def _last_argmax(v: np.ndarray) -> np.ndarray:
    """Index of the last maximum along the last axis."""
    g = v.shape[-1]
    return g - 1 - np.argmax(v[..., ::-1], axis=-1)


def _match(oks: np.ndarray, nd: np.ndarray, g_ig: np.ndarray, g_crowd: np.ndarray, thr: np.ndarray):
    """Greedy matching of one bucket of images that share the ground-truth count G.

    Args:
        oks: ``(n, Dmax, G)`` (rows beyond an image's detections are never read); nd: ``(n,)`` detections per image,
        sorted descending; g_ig: ``(n, A, G)`` ignore flags per area range; g_crowd: ``(n, G)``; thr: ``(T,)``.

    Returns:
        ``(found, which)``: ``(n, T, A, Dmax)`` bool and int (the matched ground truth's index, valid where found).
    """
    n, dmax, g = oks.shape
    t, a = thr.shape[0], g_ig.shape[1]
    taken = np.zeros((n, t, a, g), bool)
    found = np.zeros((n, t, a, dmax), bool)
    which = np.zeros((n, t, a, dmax), np.int64)
    ig = g_ig[:, None, :, :]
    crowd = g_crowd[:, None, None, :]
    for r in range(dmax):
        m = int(np.count_nonzero(nd > r))
        if m == 0:
            break
        o = oks[:m, r][:, None, None, :]
        cand = (~taken[:m] | crowd[:m]) & (o >= thr[None, :, None, None])
        c1 = cand & ~ig[:m]
        c2 = cand & ig[:m]
        v1 = np.where(c1, o, -np.inf)
        v2 = np.where(c2, o, -np.inf)
        any1, any2 = c1.any(-1), c2.any(-1)
        idx = np.where(any1, _last_argmax(v1), _last_argmax(v2))
        hit = any1 | any2
        found[:m, :, :, r] = hit
        which[:m, :, :, r] = idx
        sel = np.nonzero(hit)
        taken[:m][sel + (idx[sel],)] = True
    return found, which


def _summary_line(ap: int, iou: float | None, label: str, max_det: int, value: float, crowd: bool) -> str:
    title = "Average Precision" if ap == 1 else "Average Recall"
    kind = "(AP)" if ap == 1 else "(AR)"
    iou_s = f"{IOU_THRS[0]:0.2f}:{IOU_THRS[-1]:0.2f}" if iou is None else f"{iou:0.2f}"
    fmt = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = " + ("{: 0.3f}" if crowd else "{:0.3f}")
    return fmt.format(title, kind, iou_s, label, max_det, value)


class _Prepared:
    """Arrays of the ground truth and the results, built once for every image subset (CrowdPose' splits)."""

    def __init__(self, data: Mapping, res: list[dict], sigmas: np.ndarray, protocol: str, use_area: bool,
                 img_ids: np.ndarray):
        self.protocol = protocol
        self.cat_ids = sorted({c["id"] for c in data["categories"]})
        gts = _gt_entries(data, img_ids, self.cat_ids)
        k = sigmas.shape[0]
        self.vars = (sigmas * 2) ** 2
        try:
            gk = np.asarray([g["keypoints"] for g in gts], dtype=np.float64).reshape(len(gts), k, 3)
            gbox = np.asarray([g["bbox"] for g in gts], dtype=np.float64).reshape(len(gts), 4)
        except (KeyError, ValueError, TypeError):
            raise Unsupported("a ground truth of a category has no 'keypoints' of the schema's length or no 'bbox'") \
                from None
        box_area = gbox[:, 2] * gbox[:, 3] * BOX_AREA_FACTOR
        has_area = np.array(["area" in g for g in gts], bool)
        area = np.array([float(g["area"]) if "area" in g else 0.0 for g in gts], np.float64)
        if protocol == "crowdpose":
            range_area = np.where(has_area & use_area, area, box_area)
            oks_area = area if use_area else box_area
            if use_area and not has_area.all():
                raise Unsupported("use_area=True with a ground truth without 'area'")
        else:
            if not has_area.all():
                raise Unsupported("a ground truth without 'area'")
            range_area = oks_area = area
        crowd = np.array([bool(g.get("iscrowd", 0)) for g in gts], bool)
        nkp = np.array([g.get("num_keypoints", 0) for g in gts])
        self.g_img = np.asarray([g["image_id"] for g in gts], np.int64)
        self.g_cat = np.asarray([g["category_id"] for g in gts], np.int64)
        self.g_id = np.asarray([g["id"] for g in gts], np.int64)
        self.gk, self.gbox, self.g_oks_area, self.g_range_area = gk, gbox, oks_area, range_area
        self.g_crowd = crowd
        self.g_ignore = crowd | (nkp == 0)

        cats = set(self.cat_ids)
        dk = np.asarray([r["keypoints"] for r in res], dtype=np.float64).reshape(len(res), k, 3)
        d_area = _det_areas(res, dk)
        keep = np.array([r["category_id"] in cats for r in res], bool) if res else np.zeros(0, bool)
        if protocol == "crowdpose":  # xtcocotools drops results with no keypoint score > 0
            keep &= (dk[:, :, 2] > 0).any(1)
        self.d_img = np.asarray([r["image_id"] for r in res], np.int64)[keep]
        self.d_cat = np.asarray([r["category_id"] for r in res], np.int64)[keep]
        self.d_score = np.asarray([r["score"] for r in res], np.float64)[keep]
        self.dk, self.d_area = dk[keep], d_area[keep]

    # ------------------------------------------------------------------------------------------------ evaluate
    def evaluate(self, img_ids: np.ndarray, area_ranges) -> tuple[np.ndarray, np.ndarray]:
        """``(precision (T, R, K, A, 1), recall (T, K, A, 1))`` over ``img_ids`` (sorted, unique), as
        ``COCOeval.evaluate(); accumulate()`` compute them."""
        crowd_proto = self.protocol == "crowdpose"
        t_n, r_n, k_n, a_n = len(IOU_THRS), len(REC_THRS), len(self.cat_ids), len(area_ranges)
        precision = -np.ones((t_n, r_n, k_n, a_n, 1))
        recall = -np.ones((t_n, k_n, a_n, 1))
        if img_ids.size == 0:
            return precision, recall
        lo = np.array([r[0] for r in area_ranges], np.float64)
        hi = np.array([r[1] for r in area_ranges], np.float64)
        thr = np.minimum(IOU_THRS, 1 - 1e-10)
        cat_pos = {c: i for i, c in enumerate(self.cat_ids)}

        # ground truths of the images, in (category, image, file order)
        gpos = np.searchsorted(img_ids, self.g_img)
        gin = (gpos < img_ids.size) & (img_ids[np.minimum(gpos, img_ids.size - 1)] == self.g_img)
        gsel = np.flatnonzero(gin)
        gcat = np.array([cat_pos[c] for c in self.g_cat[gsel].tolist()], np.int64)
        order = np.lexsort((gsel, gpos[gsel], gcat))
        gsel, gcat = gsel[order], gcat[order]
        ggrp = gcat * img_ids.size + gpos[gsel]
        g_ig_a = self.g_ignore[gsel][:, None] | (self.g_range_area[gsel][:, None] < lo) | (
            self.g_range_area[gsel][:, None] > hi)  # (G, A)

        # detections of the images, in (category, image, score descending, file order), at most MAX_DET per image
        dpos = np.searchsorted(img_ids, self.d_img)
        din = (dpos < img_ids.size) & (img_ids[np.minimum(dpos, img_ids.size - 1)] == self.d_img)
        dsel = np.flatnonzero(din)
        dcat = np.array([cat_pos[c] for c in self.d_cat[dsel].tolist()], np.int64)
        order = np.lexsort((dsel, -self.d_score[dsel], dpos[dsel], dcat))
        dsel, dcat = dsel[order], dcat[order]
        dgrp = dcat * img_ids.size + dpos[dsel]
        starts = np.flatnonzero(np.r_[True, dgrp[1:] != dgrp[:-1]]) if dsel.size else np.zeros(0, np.int64)
        rank = np.arange(dsel.size) - np.repeat(starts, np.diff(np.r_[starts, dsel.size]))
        keep = rank < MAX_DET
        dsel, dgrp, rank = dsel[keep], dgrp[keep], rank[keep]
        d_out = (self.d_area[dsel][:, None] < lo) | (self.d_area[dsel][:, None] > hi)  # (D, A)

        # per-group counts
        n_grp = k_n * img_ids.size
        g_cnt = np.bincount(ggrp, minlength=n_grp)
        d_cnt = np.bincount(dgrp, minlength=n_grp)
        g_start = np.r_[0, np.cumsum(g_cnt)[:-1]]
        d_start = np.r_[0, np.cumsum(d_cnt)[:-1]]

        # match state per detection: found (D, T, A), matched ground truth (index into gsel order)
        d_found = np.zeros((dsel.size, t_n, a_n), bool)
        d_gt = np.zeros((dsel.size, t_n, a_n), np.int64)
        both = np.flatnonzero((g_cnt > 0) & (d_cnt > 0))
        if both.size:
            # all (detection, ground truth) pairs of those images: detection-major
            pc = d_cnt[both] * g_cnt[both]
            pg = np.repeat(np.arange(both.size), pc)
            j = np.arange(pc.sum()) - np.repeat(np.r_[0, np.cumsum(pc)[:-1]], pc)
            gc = g_cnt[both][pg]
            di = d_start[both][pg] + j // gc
            gi = g_start[both][pg] + j % gc
            oks = _oks_pairs(self.dk[dsel[di]], self.gk, gsel[gi], self.gbox, self.g_oks_area, self.vars)
            pair_start = np.r_[0, np.cumsum(pc)[:-1]]
            for g in np.unique(g_cnt[both]).tolist():
                sub_i = np.flatnonzero(g_cnt[both] == g)
                sub_i = sub_i[np.argsort(-d_cnt[both[sub_i]], kind="stable")]
                sub = both[sub_i]
                nd = d_cnt[sub]
                dmax = int(nd.max())
                dd = np.minimum(np.arange(dmax)[None, :], nd[:, None] - 1)  # (n, Dmax), clamped rows
                pidx = pair_start[sub_i][:, None, None] + dd[:, :, None] * g + np.arange(g)[None, None, :]
                o = oks[pidx]
                gg = g_start[sub][:, None] + np.arange(g)[None, :]  # (n, G) into gsel order
                found, which = _match(o, nd, np.transpose(g_ig_a[gg], (0, 2, 1)), self.g_crowd[gsel[gg]], thr)
                valid = np.arange(dmax)[None, :] < nd[:, None]
                rows = (d_start[sub][:, None] + np.arange(dmax)[None, :])[valid]
                d_found[rows] = np.transpose(found, (0, 3, 1, 2))[valid]
                d_gt[rows] = (g_start[sub][:, None, None, None] + np.transpose(which, (0, 3, 1, 2)))[valid]

        # detection flags, as evaluateImg leaves them
        gt_ids = self.g_id[gsel]
        dt_ig = d_found & g_ig_a[d_gt, np.arange(a_n)[None, None, :]] if gsel.size else d_found.copy()
        # a match counts where pycocotools' dtm (the ground truth's id, 0 = none) is non-zero; xtcocotools' is >= 0
        hit = d_found if (crowd_proto or not gsel.size) else d_found & (gt_ids[d_gt] != 0)
        dt_ig = dt_ig | (~hit & d_out[:, None, :])
        tp_all = hit & ~dt_ig
        fp_all = ~hit & ~dt_ig

        grp_any = (g_cnt > 0) | (d_cnt > 0)
        for ki in range(k_n):
            in_cat = slice(ki * img_ids.size, (ki + 1) * img_ids.size)
            if not grp_any[in_cat].any():
                continue
            dcat_sel = (dgrp // img_ids.size) == ki
            scores = self.d_score[dsel[dcat_sel]]
            srt = np.argsort(-scores, kind="mergesort")
            gm = gcat == ki
            for ai in range(a_n):
                npig = int(np.count_nonzero(~g_ig_a[gm, ai]))
                if npig == 0:
                    continue
                tps = tp_all[dcat_sel][srt][:, :, ai].T
                fps = fp_all[dcat_sel][srt][:, :, ai].T
                tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
                fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
                nd = tp_sum.shape[1]
                rc = tp_sum / npig
                pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
                recall[:, ki, ai, 0] = rc[:, -1] if nd else 0
                if nd:
                    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                for ti in range(t_n):
                    inds = np.searchsorted(rc[ti], REC_THRS, side="left")
                    q = np.zeros(r_n)
                    ok = inds < nd
                    q[ok] = pr[ti, inds[ok]]
                    precision[ti, :, ki, ai, 0] = q
        return precision, recall


def _summarize(precision, recall, ap: int, iou: float | None, a_index: int) -> float:
    if ap == 1:
        s = precision
        if iou is not None:
            s = s[np.where(iou == IOU_THRS)[0]]
        s = s[:, :, :, [a_index], [0]]
    else:
        s = recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRS)[0]]
        s = s[:, :, [a_index], [0]]
    return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))


def evaluate_keypoints_fast(data: Mapping, res: list[dict], sigmas: np.ndarray, protocol: str = "coco",
                            use_area: bool = True, image_ids: Sequence[int] | None = None) -> tuple[list[float], str]:
    """The stats (and a summary log) of pycocotools ``COCOeval(iouType='keypoints')`` (``protocol="coco"``) or of
    xtcocotools ``COCOeval(iouType='keypoints_crowd')`` (``"crowdpose"``) on a prepared annotation dict and
    validated results.

    Raises:
        Unsupported (a ``ValueError``; the caller falls back to the reference evaluator) for input outside what the
        array evaluator takes: ground truths of an evaluated category without keypoints or ``area``, results
        with ``bbox`` on some entries only.
    """
    all_ids = np.unique(np.asarray([im["id"] for im in data["images"]], np.int64))
    img_ids = all_ids if image_ids is None else np.unique(np.asarray(list(image_ids), np.int64))
    prep = _Prepared(data, res, np.asarray(sigmas, np.float64), protocol, use_area, img_ids)
    ranges = [r for _, r in KEYPOINT_AREA_RANGES]
    precision, recall = prep.evaluate(img_ids, ranges)
    crowd = protocol == "crowdpose"
    stats, lines = [], []
    plan = [(1, None, 0, "all"), (1, 0.5, 0, "all"), (1, 0.75, 0, "all")]
    plan += [] if crowd else [(1, None, 1, "medium"), (1, None, 2, "large")]
    plan += [(0, None, 0, "all"), (0, 0.5, 0, "all"), (0, 0.75, 0, "all")]
    plan += [] if crowd else [(0, None, 1, "medium"), (0, None, 2, "large")]
    for ap, iou, ai, label in plan:
        v = _summarize(precision, recall, ap, iou, ai)
        stats.append(v)
        lines.append(_summary_line(ap, iou, label, MAX_DET, v, crowd))
    if crowd:
        splits: list[list[int]] = [[], [], []]
        for im in data["images"]:
            ci = im["crowdIndex"]
            splits[0 if ci < 0.2 else 1 if ci < 0.8 else 2].append(im["id"])
        iou_s = f"{IOU_THRS[0]:0.2f}:{IOU_THRS[-1]:0.2f}"
        for name, ids in zip(("easy", "medium", "hard"), splits):
            p, _ = prep.evaluate(np.unique(np.asarray(ids, np.int64)), ranges)
            v = round(float(np.mean(p[:, :, :, 0, :])), 4)
            stats.append(v)
            lines.append(" {:<18} {} @[ IoU={:<9} | type={:>6s} | maxDets={:>3d} ] = {:0.3f}".format(
                "Average Precision", "(AP)", iou_s, name, MAX_DET, v))
    return stats, "\n".join(lines) + "\n"
