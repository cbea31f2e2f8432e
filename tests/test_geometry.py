"""Tests for posekit.data.geometry: affine crops (classic and UDP), box <-> centre/scale, letterbox, warps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from posekit.data.geometry import (
    apply_affine,
    box_xyxy_to_cs,
    compose_affine,
    cs_to_box_xyxy,
    get_affine_matrix,
    invert_affine,
    letterbox,
    points_inside,
    transform_boxes,
    warp_image,
    warp_mask,
)

FAST = settings(max_examples=60, deadline=None)


def _rot(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


# ------------------------------------------------------------------------------------------- round trips
@FAST
@given(
    cx=st.floats(-500, 1500), cy=st.floats(-500, 1500),
    sw=st.floats(4, 800), sh=st.floats(4, 800),
    rot=st.floats(-180, 180),
    ow=st.integers(2, 640), oh=st.integers(2, 640),
    shx=st.floats(-0.5, 0.5), shy=st.floats(-0.5, 0.5),
    udp=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_affine_crop_then_inverse_returns_points(cx, cy, sw, sh, rot, ow, oh, shx, shy, udp, seed):
    pts = np.random.default_rng(seed).uniform(-1000, 2000, size=(5, 7, 2))
    M = get_affine_matrix((cx, cy), (sw, sh), rot, (ow, oh), shift=(shx, shy), udp=udp)
    Minv = get_affine_matrix((cx, cy), (sw, sh), rot, (ow, oh), shift=(shx, shy), udp=udp, inv=True)
    back = apply_affine(apply_affine(pts, M), Minv)
    assert back.shape == pts.shape
    np.testing.assert_allclose(back, pts, atol=1e-4, rtol=0)
    np.testing.assert_allclose(compose_affine(Minv, M), np.eye(2, 3), atol=1e-9)
    np.testing.assert_allclose(invert_affine(M), Minv, atol=1e-9)


@FAST
@given(cx=st.floats(0, 500), cy=st.floats(0, 500), sw=st.floats(10, 400), sh=st.floats(10, 400),
       rot=st.floats(-90, 90), ow=st.integers(8, 300), oh=st.integers(8, 300))
def test_box_edges_map_to_output_edges(cx, cy, sw, sh, rot, ow, oh):
    """Classic: box centre -> (ow/2, oh/2), box edge midpoints -> output edges 0 / ow; UDP: centre -> (ow-1)/2,
    edges -> 0 / ow-1. Points of the box are taken along the box's rotated axes."""
    c = np.array([cx, cy])
    R = _rot(rot)  # the box axes turn clockwise on screen (y down) for rot > 0
    left, right = c + R @ [-sw / 2, 0], c + R @ [sw / 2, 0]
    top, bottom = c + R @ [0, -sh / 2], c + R @ [0, sh / 2]
    pts = np.stack([c, left, right, top, bottom])
    classic = apply_affine(pts, get_affine_matrix(c, (sw, sh), rot, (ow, oh)))
    udp = apply_affine(pts, get_affine_matrix(c, (sw, sh), rot, (ow, oh), udp=True))
    mx, my, ux, uy = ow / 2, oh / 2, (ow - 1) / 2, (oh - 1) / 2
    np.testing.assert_allclose(classic, [[mx, my], [0, my], [ow, my], [mx, 0], [mx, oh]], atol=1e-6)
    np.testing.assert_allclose(udp, [[ux, uy], [0, uy], [ow - 1, uy], [ux, 0], [ux, oh - 1]], atol=1e-6)


def test_rotation_sense_matches_opencv_and_mmpose_classic():
    # Same matrix as cv2.getRotationMatrix2D (content turns counter-clockwise for a positive angle).
    M = get_affine_matrix((50.0, 40.0), (100.0, 80.0), 30.0, (100, 80))
    np.testing.assert_allclose(M, cv2.getRotationMatrix2D((50.0, 40.0), 30.0, 1.0), atol=1e-12)
    # A point to the right of the centre goes straight up for +90 degrees.
    p = apply_affine(np.array([60.0, 40.0]), get_affine_matrix((50.0, 40.0), (100.0, 80.0), 90.0, (100, 80)))
    np.testing.assert_allclose(p, [50.0, 30.0], atol=1e-9)
    # MMPose's classic 3-point construction (rotate the half-width vector, third point at 90 degrees).
    c, s, rot, (ow, oh), shift = np.array([120.0, 90.0]), np.array([60.0, 80.0]), 25.0, (192, 256), np.array([0.1, -0.05])
    src0 = c + s * shift
    src1 = src0 + _rot(rot) @ [-s[0] / 2, 0]
    d = src0 - src1
    src2 = src1 + [-d[1], d[0]]
    dst0 = np.array([ow / 2, oh / 2])
    dst1 = dst0 + [-ow / 2, 0]
    e = dst0 - dst1
    dst2 = dst1 + [-e[1], e[0]]
    ref = cv2.getAffineTransform(np.float32([src0, src1, src2]), np.float32([dst0, dst1, dst2]))
    np.testing.assert_allclose(get_affine_matrix(c, s * [1, 1], rot, (ow, oh), shift=shift), ref, atol=1e-4)


# ------------------------------------------------------------------------------------------ UDP vs classic
def test_udp_maps_pixel_grid_exactly_and_classic_does_not():
    """A UDP crop whose box spans (ow - 1, oh - 1) around an integer centre is an integer translation: the crop is
    an exact copy of the pixels. The classic crop of the same box is off by half a pixel (interpolated)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    ow, oh = 21, 15
    c, s = (40.0, 30.0), (ow - 1.0, oh - 1.0)
    M_udp = get_affine_matrix(c, s, 0.0, (ow, oh), udp=True)
    np.testing.assert_allclose(M_udp, [[1, 0, -30], [0, 1, -23]], atol=1e-12)
    crop = warp_image(img, M_udp, (ow, oh))
    np.testing.assert_array_equal(crop, img[23:23 + oh, 30:30 + ow])
    M_classic = get_affine_matrix(c, s, 0.0, (ow, oh))
    assert M_classic[0, 0] == pytest.approx(ow / (ow - 1))
    assert not np.array_equal(warp_image(img, M_classic, (ow, oh)), crop)


@pytest.mark.parametrize("udp, expected_gap", [(True, 0.0), (False, -1.0)])
def test_flip_about_box_centre_is_output_flip_only_with_udp(udp, expected_gap):
    """Mirroring a point about the box centre must land at ow - 1 - x in the output (the flip-test identity);
    UDP satisfies it exactly; the classic matrix lands at ow - x, one output pixel off."""
    c, s, ow, oh = np.array([100.0, 70.0]), np.array([48.0, 64.0]), 48, 64
    M = get_affine_matrix(c, s, 0.0, (ow, oh), udp=udp)
    p = np.array([[90.3, 60.0], [123.0, 80.5]])
    mirrored = p.copy()
    mirrored[:, 0] = 2 * c[0] - p[:, 0]
    a, b = apply_affine(p, M), apply_affine(mirrored, M)
    np.testing.assert_allclose((ow - 1 - a[:, 0]) - b[:, 0], expected_gap * np.ones(2), atol=1e-9)


# ----------------------------------------------------------------------------------------- boxes <-> cs
def test_box_cs_round_trip_and_aspect_ratio():
    boxes = np.array([[10, 20, 110, 220], [0, 0, 300, 50], [5.5, 6.5, 7.5, 8.5]], dtype=np.float32)
    c, s = box_xyxy_to_cs(boxes, padding=1.0)
    np.testing.assert_allclose(cs_to_box_xyxy(c, s), boxes, atol=1e-6)
    np.testing.assert_allclose(c, [[60, 120], [150, 25], [6.5, 7.5]])

    c, s = box_xyxy_to_cs(boxes, aspect_ratio=0.75, padding=1.25)
    np.testing.assert_allclose(s[:, 0] / s[:, 1], 0.75, rtol=1e-12)
    wh = (boxes[:, 2:] - boxes[:, :2]) * 1.25
    assert np.all(s >= wh - 1e-9)  # enlarged, never shrunk
    assert np.all(np.isclose(s, wh).any(axis=1))  # exactly one side kept
    np.testing.assert_allclose(s, [[187.5, 250], [375, 500], [2.5, 10 / 3]])
    out = cs_to_box_xyxy(c, s)  # no padding undo: contains the padded box, same centre
    np.testing.assert_allclose((out[:, :2] + out[:, 2:]) / 2, c)
    assert np.all(out[:, :2] <= boxes[:, :2]) and np.all(out[:, 2:] >= boxes[:, 2:])
    c1, s1 = box_xyxy_to_cs(boxes[0], aspect_ratio=0.75)
    assert c1.shape == (2,) and s1.shape == (2,)
    np.testing.assert_allclose(s1, s[0])
    with pytest.raises(ValueError, match="boxes"):
        box_xyxy_to_cs(np.zeros((3, 5)))


# ----------------------------------------------------------------------------------------------- letterbox
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("shape, size", [((480, 640), (416, 416)), ((300, 200), (416, 416)), ((100, 120), (333, 200))])
def test_letterbox_placement_matrix_and_pixels(shape, size, center):
    H, W = shape
    w, h = size
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    out, M, ratio = letterbox(img, size, pad_value=114, center=center)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    s = min(w / W, h / H)
    assert ratio == pytest.approx(s)
    nw, nh = int(W * s + 1e-6), int(H * s + 1e-6)
    assert (nw == w or nh == h) and nw <= w and nh <= h
    left, top = ((w - nw) // 2, (h - nh) // 2) if center else (0, 0)
    np.testing.assert_array_equal(out[top:top + nh, left:left + nw], cv2.resize(img, (nw, nh)))
    pad = np.ones((h, w), bool)
    pad[top:top + nh, left:left + nw] = False
    assert np.all(out[pad] == 114)
    # The image's pixel area maps onto the resized block's pixel area.
    corners = apply_affine(np.array([[-0.5, -0.5], [W - 0.5, H - 0.5]]), M)
    np.testing.assert_allclose(corners, [[left - 0.5, top - 0.5], [left + nw - 0.5, top + nh - 0.5]], atol=1e-9)


def test_letterbox_dot_centroid_follows_matrix():
    img = np.zeros((480, 640, 3), np.uint8)
    x0, y0 = 301.0, 203.0
    yy, xx = np.mgrid[0:480, 0:640]
    img[...] = np.clip(255 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 4.0**2)), 0, 255)[..., None]
    for center in (False, True):
        out, M, _ = letterbox(img, (416, 416), pad_value=0, center=center)
        g = out[..., 0].astype(np.float64)
        cy, cx = (np.mgrid[0:416, 0:416] * g).reshape(2, -1).sum(1) / g.sum()
        np.testing.assert_allclose([cx, cy], apply_affine(np.array([x0, y0]), M), atol=0.1)


# ------------------------------------------------------------------------------------------------- others
def test_compose_order_and_singular_inverse():
    A = get_affine_matrix((10, 20), (30, 40), 15, (64, 64))
    B = np.array([[-1.0, 0, 99], [0, 1, 0]])
    p = np.array([[3.0, 4.0], [50.0, -7.0]])
    np.testing.assert_allclose(apply_affine(p, compose_affine(A, B)), apply_affine(apply_affine(p, B), A), atol=1e-9)
    with pytest.raises(ValueError, match="singular"):
        invert_affine(np.array([[1.0, 2.0, 0], [2.0, 4.0, 1]]))
    with pytest.raises(ValueError, match="2x3"):
        apply_affine(p, np.eye(2))
    with pytest.raises(ValueError, match="scale"):
        get_affine_matrix((0, 0), (0, 10), 0, (10, 10))


def test_transform_boxes_is_box_of_corners():
    M = get_affine_matrix((50, 50), (100, 100), 90, (100, 100))
    b = transform_boxes(np.array([[40.0, 45.0, 70.0, 55.0]]), M)
    # content turns counter-clockwise on screen: x' = 50 + (y - 50), y' = 50 - (x - 50)
    np.testing.assert_allclose(b, [[45.0, 30.0, 55.0, 60.0]], atol=1e-9)


def test_warp_mask_nearest_and_fill_outside():
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20, 5:25] = 1
    M = np.array([[1.0, 0, 7.0], [0, 1.0, -3.0]])  # integer shift
    out = warp_mask(mask, M, (60, 45))
    assert out.shape == (45, 60) and set(np.unique(out)) <= {0, 1}
    np.testing.assert_array_equal(out[0:37, 7:57], mask[3:40])
    assert np.all(out[37:] == 1) and np.all(out[:, :7] == 1) and np.all(out[:, 57:] == 1)
    rot = warp_mask(mask * 3, get_affine_matrix((25, 20), (50, 40), 33, (50, 40)), (50, 40), fill=1)
    assert set(np.unique(rot)) <= {0, 1, 3}  # nearest: no blended values


def test_points_inside_pixel_area_rule():
    p = np.array([[-0.5, 0], [-0.51, 0], [9.49, 0], [9.5, 0], [3, 4.49], [3, 4.5]])
    np.testing.assert_array_equal(points_inside(p, (10, 5)), [True, False, True, False, True, False])


def test_letterbox_back_mapping_bound_against_plain_division():
    """docs/inference.md: mapping back by dividing by the ratio (rtmlib, YOLOX) differs from the exact inverse by at
    most 0.5 |W/nw - 1| + (W s - nw) / s; the rounding term matters (0.5 |1/s - 1| alone is exceeded)."""
    from posekit.data.geometry import invert_affine, letterbox

    worst_excess = 0.0
    for W, H in [(640, 427), (500, 375), (333, 500), (1001, 667), (427, 640), (383, 257)]:
        _, M, s = letterbox(np.zeros((H, W, 3), np.uint8), (416, 416))
        Mi = invert_affine(M)
        nw, nh = round(M[0, 0] * W), round(M[1, 1] * H)
        for n, side, row in ((nw, W, 0), (nh, H, 1)):
            x = np.linspace(0, n, 101)
            exact = Mi[row, row] * x + Mi[row, 2]
            diff = np.abs(exact - x / s).max()
            bound = 0.5 * abs(side / n - 1) + (side * s - n) / s
            assert diff <= bound + 1e-9, (W, H, diff, bound)
            worst_excess = max(worst_excess, diff - 0.5 * abs(1 / s - 1))
    assert worst_excess > 0.05  # the old bound 0.5 |1/s - 1| left out up to this much
