"""PAF association on ideal synthetic maps: peaks, line integral, matching, assembly."""

from __future__ import annotations

import numpy as np
import pytest

from posekit.association.paf import (
    OPENPOSE18_LIMBS,
    TFPOSE_PAF_CHANNELS,
    Peaks,
    assemble,
    associate,
    find_peaks,
    match_limbs,
    score_limbs,
)
from posekit.association.synthetic import make_people, render_maps

GRID = (92, 108)


def split(maps):
    return np.ascontiguousarray(maps[..., :18]), np.ascontiguousarray(maps[..., 19:])


def match_people(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """For each true person, the index of the found person whose keypoints are closest (mean distance)."""
    d = np.linalg.norm(found[None, :, :, :2] - truth[:, None, :, :2], axis=-1).mean(-1)
    return d.argmin(1)


def assert_same_people(res, truth, tol=0.5, visible=None):
    truth = np.asarray(truth)
    assert len(res.scores) == len(truth)
    idx = match_people(res.keypoints, truth)
    assert len(set(idx.tolist())) == len(truth), "two true people decoded into one"
    vis = np.ones(truth.shape[:2], bool) if visible is None else visible
    for t, i in enumerate(idx):
        kp = res.keypoints[i]
        assert np.array_equal(kp[:, 2] > 0, vis[t]), f"person {t}: found parts {kp[:, 2] > 0} != {vis[t]}"
        err = np.linalg.norm(kp[vis[t], :2] - truth[t, vis[t]], axis=1)
        assert err.max() < tol, f"person {t}: keypoint error {err.max():.3f} cells"


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("matching", ["greedy", "exact"])
def test_ideal_maps_decode_to_the_exact_people(n, matching):
    rng = np.random.default_rng(n)
    cols = min(n, 3)
    centres = [((i % cols + 0.5) * GRID[1] / cols + rng.uniform(-1, 1), (i // cols + 0.5) * 46 + rng.uniform(-1, 1))
               for i in range(n)]
    heights = rng.uniform(38, 44, n)
    truth = make_people(centres, heights, rng.uniform(-10, 10, n))
    maps = render_maps(truth, GRID)
    res = associate(*split(maps), matching=matching)
    assert_same_people(res, truth, tol=0.3)
    assert (res.num_parts == 18).all()


def test_crossing_people_are_grouped_correctly():
    # Two people leaning across each other: their limbs and PAFs cross.
    truth = make_people([(50, 46), (60, 46)], [64, 60], [28, -28])
    maps = render_maps(truth, GRID)
    for matching in ("greedy", "exact"):
        res = associate(*split(maps), matching=matching)
        assert_same_people(res, truth, tol=0.3)


def test_missing_parts_are_left_out():
    truth = make_people([(30, 45), (78, 45)], [60, 58])
    vis = np.ones((2, 18), bool)
    vis[0, [4, 10, 17]] = False  # right wrist, right ankle, left ear
    vis[1, [9, 10]] = False  # right knee and ankle
    maps = render_maps(truth, GRID, visible=vis)
    res = associate(*split(maps))
    assert_same_people(res, truth, tol=0.3, visible=vis)


def test_redundant_ear_shoulder_limbs_merge_a_detached_head():
    truth = make_people([(54, 45)], [64])
    maps = render_maps(truth, GRID)
    hm, paf = split(maps)
    c = OPENPOSE18_LIMBS.index((1, 0))  # neck-nose: without it the head is a separate fragment
    paf[..., list(TFPOSE_PAF_CHANNELS[c])] = 0
    res = associate(hm, paf, min_parts=1)
    assert_same_people(res, truth, tol=0.3)
    # Without the redundant limbs the head stays a separate person (5 parts) beside the body (13 parts).
    res2 = associate(hm, paf, limbs=OPENPOSE18_LIMBS[:17], paf_channels=TFPOSE_PAF_CHANNELS[:17], min_parts=1)
    assert sorted(res2.num_parts.tolist()) == [5, 13]


def test_min_parts_and_min_mean_score_filter_people():
    truth = make_people([(30, 45), (78, 45)], [60, 58])
    vis = np.ones((2, 18), bool)
    vis[1, 2:] = False  # second person: only nose and neck
    maps = render_maps(truth, GRID, visible=vis)
    assert len(associate(*split(maps), min_parts=4).scores) == 1
    assert len(associate(*split(maps), min_parts=2).scores) == 2
    assert len(associate(*split(maps), min_parts=2, min_mean_score=5.0).scores) == 0


# ----------------------------------------------------------------------------------------------- peaks
def gaussian_map(points, grid=(40, 50), sigma=1.5):
    ys, xs = np.mgrid[0:grid[0], 0:grid[1]].astype(np.float64)
    m = np.zeros(grid)
    for x, y in points:
        m = np.maximum(m, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)))
    return m[..., None].astype(np.float32)


def test_peaks_subpixel_refinement():
    pts = [(10.3, 7.6), (30.0, 20.0), (41.45, 33.2)]
    hm = gaussian_map(pts)
    for mode, tol in (("quadratic", 0.06), ("centroid", 0.4), ("none", 0.5)):
        pk = find_peaks(hm, threshold=0.1, subpixel=mode)
        assert pk.count(0) == 3
        got = pk.xy[np.argsort(pk.xy[:, 0])]
        err = np.abs(got - np.array(pts)).max()
        assert err <= tol, (mode, err)
    pk = find_peaks(hm, subpixel="none")
    assert np.array_equal(pk.xy, np.round(pk.xy))
    assert np.allclose(np.sort(pk.score)[::-1][0], 1.0, atol=1e-6)


def test_peaks_threshold_plateau_window_and_cap():
    hm = np.zeros((10, 12, 2), np.float32)
    hm[4:6, 5:7, 0] = 0.5  # a 2x2 plateau: exactly one peak
    hm[1, 1, 1], hm[1, 3, 1], hm[8, 8, 1] = 0.9, 0.8, 0.05
    pk = find_peaks(hm, threshold=0.1, subpixel="none")
    assert pk.count(0) == 1 and pk.count(1) == 2
    assert pk.part.tolist() == [0, 1, 1]
    assert np.allclose(pk.score, [0.5, 0.9, 0.8])
    assert find_peaks(hm, threshold=0.1, nms_window=5).count(1) == 1  # (1,3) is within 2 of (1,1)
    assert find_peaks(hm, threshold=0.01).count(1) == 3
    assert find_peaks(hm, threshold=0.01, max_peaks=1).count(1) == 1
    with pytest.raises(ValueError, match="nms_window"):
        find_peaks(hm, nms_window=2)
    with pytest.raises(ValueError, match="subpixel"):
        find_peaks(hm, subpixel="bogus")


# ----------------------------------------------------------------------------------------------- limbs
def two_part_peaks(a_pts, b_pts):
    xy = np.array(list(a_pts) + list(b_pts), np.float64)
    part = np.array([0] * len(a_pts) + [1] * len(b_pts))
    return Peaks(xy, np.ones(len(xy)), part, np.array([0, len(a_pts), len(xy)]))


def test_line_integral_on_a_constant_field():
    paf = np.zeros((30, 40, 2), np.float32)
    paf[..., 0] = 0.6
    paf[..., 1] = 0.8  # |L| = 1, direction (0.6, 0.8)
    pk = two_part_peaks([(5, 5)], [(25, 5), (5, 25), (17, 21)])
    for sampling in ("bilinear", "nearest"):
        ia, ib, sc = score_limbs(pk, paf, [(0, 1)], [(0, 1)], sample_threshold=0.05, min_share=0.8,
                                 length_prior=0, sampling=sampling)[0]
        got = dict(zip(ib.tolist(), sc.tolist()))
        assert set(got) == {0, 1, 2}
        assert got[0] == pytest.approx(0.6, abs=1e-5)
        assert got[1] == pytest.approx(0.8, abs=1e-5)
        assert got[2] == pytest.approx(1.0, abs=1e-5)  # (12, 16) is along (0.6, 0.8)
    # Length prior on the 30-row map: all three limbs are 20 cells long, penalty min(0.5 * 30 / 20 - 1, 0) = -0.25.
    ia, ib, sc = score_limbs(pk, paf, [(0, 1)], [(0, 1)], length_prior=0.5)[0]
    got = dict(zip(ib.tolist(), sc.tolist()))
    assert got == pytest.approx({0: 0.35, 1: 0.55, 2: 0.75}, abs=1e-5)
    # A higher score threshold drops the weakest.
    ia, ib, sc = score_limbs(pk, paf, [(0, 1)], [(0, 1)], length_prior=0.5, score_threshold=0.4)[0]
    assert sorted(ib.tolist()) == [1, 2]


def test_share_criterion_rejects_a_half_supported_limb():
    paf = np.zeros((20, 40, 2), np.float32)
    paf[:, :20, 0] = 1.0  # field only on the left half
    pk = two_part_peaks([(2, 10)], [(18, 10), (37, 10)])
    ia, ib, sc = score_limbs(pk, paf, [(0, 1)], [(0, 1)], min_share=0.8, length_prior=0)[0]
    assert ib.tolist() == [0]
    ia, ib, sc = score_limbs(pk, paf, [(0, 1)], [(0, 1)], min_share=0.4, length_prior=0)[0]
    assert sorted(ib.tolist()) == [0, 1]


def test_bilinear_sampling_interpolates_between_cells():
    paf = np.zeros((10, 10, 2), np.float32)
    paf[:, 5:, 0] = 1.0  # step between x=4 and x=5
    pk = two_part_peaks([(4.25, 2)], [(4.25, 8)])  # vertical limb: the dot is L_y = 0
    paf[..., 1] = paf[..., 0]
    ia, ib, sc = score_limbs(pk, paf, [(0, 1)], [(0, 1)], min_share=0.5, length_prior=0, sampling="bilinear")[0]
    assert sc[0] == pytest.approx(0.25, abs=1e-5)
    ia, ib, sc = score_limbs(pk, paf, [(0, 1)], [(0, 1)], min_share=0.5, length_prior=0, sampling="nearest")[0]
    assert len(sc) == 0  # nearest reads x=4, where the field is 0


# ----------------------------------------------------------------------------------------------- matching
def test_greedy_and_exact_agree_on_an_easy_case():
    ia = np.array([0, 0, 1, 1, 2])
    ib = np.array([0, 1, 0, 1, 2])
    sc = np.array([0.9, 0.1, 0.2, 0.8, 0.7])
    g = match_limbs(ia, ib, sc, "greedy")
    e = match_limbs(ia, ib, sc, "exact")
    assert sorted(g.tolist()) == sorted(e.tolist()) == [0, 3, 4]


def test_exact_beats_greedy_where_greedy_is_suboptimal():
    # a0-b0 is the single best pair, but taking it blocks a0-b1 and a1-b0 (0.8 + 0.8 > 0.9).
    ia = np.array([0, 0, 1])
    ib = np.array([0, 1, 0])
    sc = np.array([0.9, 0.8, 0.8])
    g = match_limbs(ia, ib, sc, "greedy")
    e = match_limbs(ia, ib, sc, "exact")
    assert g.tolist() == [0]
    assert sorted(e.tolist()) == [1, 2]
    assert sc[e].sum() == pytest.approx(1.6) and sc[g].sum() == pytest.approx(0.9)


def test_exact_beats_greedy_end_to_end():
    # Parts 0 (a0, a1) and 1 (b0, b1) with a field built so that the line integrals are
    # a0-b0 0.9, a0-b1 0.8, a1-b0 0.8, a1-b1 ~0: greedy joins a0-b0 only, exact joins two pairs.
    pk = two_part_peaks([(0, 0), (0, 4)], [(8, 0), (8, 4)])
    conns = [(np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([0.9, 0.8, 0.8]))]
    for method, n_people in (("greedy", 1), ("exact", 2)):
        k = match_limbs(*conns[0], method)
        res = assemble(pk, [(0, 1)], [tuple(x[k] for x in conns[0])], 2, min_parts=2, min_mean_score=0)
        assert len(res.scores) == n_people


def test_match_limbs_rejects_unknown_method():
    with pytest.raises(ValueError, match="greedy"):
        match_limbs(np.array([0]), np.array([0]), np.array([1.0]), "hungarian?")


def test_associate_is_deterministic_and_handles_empty_maps():
    truth = make_people([(30, 45), (78, 45)], [60, 58])
    maps = render_maps(truth, GRID)
    r1, r2 = associate(*split(maps)), associate(*split(maps))
    assert np.array_equal(r1.keypoints, r2.keypoints) and np.array_equal(r1.scores, r2.scores)
    empty = associate(np.zeros((46, 54, 18), np.float32), np.zeros((46, 54, 38), np.float32))
    assert empty.keypoints.shape == (0, 18, 3) and empty.scores.shape == (0,)
    with pytest.raises(ValueError, match="limb"):
        associate(np.zeros((46, 54, 5), np.float32), np.zeros((46, 54, 38), np.float32))
