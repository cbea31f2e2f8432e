"""RTMO pipeline with a stand-in ONNX model of the official interface: letterbox frame -> image pixels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from posekit.data.geometry import letterbox
from posekit.runtime.cards import load_card
from posekit.runtime.testing import fake_rtmo, rtmo_offsets
from posekit.pipelines.onestage import OneStagePipeline


def dot_image(h, w, dots, sigma=4.0):
    """Black BGR image with Gaussian white dots (unique maxima at the given sub-pixel centres)."""
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.zeros((h, w))
    for x, y in dots:
        a = np.maximum(a, np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2)))
    return np.repeat((255 * a).round().astype(np.uint8)[..., None], 3, 2)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    f = tmp_path_factory.mktemp("m") / "rtmo.onnx"
    f.write_bytes(fake_rtmo(640))
    return OneStagePipeline(load_card("rtmo-s").with_weights(f))


@pytest.mark.parametrize("shape,dot", [((480, 900), (700.3, 300.6)), ((1000, 400), (120.0, 880.0)),
                                       ((300, 320), (10.0, 290.0))])
def test_keypoints_and_boxes_map_back_to_image_pixels(pipe, shape, dot):
    h, w = shape
    people = pipe(dot_image(h, w, [dot]))
    # threshold (0.1) drops the 0.05 instance, NMS (0.65) drops the shifted duplicate
    assert len(people) == 1
    p = people[0]
    _, M, s = letterbox(np.zeros((h, w, 3), np.uint8), (640, 640))
    sxy = np.array([M[0, 0], M[1, 1]])  # the exact per-axis resize factors (int(W * s) / W)
    tol = 0.75 / s  # the argmax is exact to the input pixel: half a pixel plus rounding, in image pixels
    np.testing.assert_allclose(p.keypoints[8, :2], dot, atol=tol)
    # keypoint offsets are input pixels -> image pixels divide by the letterbox ratio
    np.testing.assert_allclose(p.keypoints[:, :2] - p.keypoints[8, :2], rtmo_offsets(17) / sxy, atol=1e-3)
    assert p.score == pytest.approx(0.9) and np.allclose(p.keypoints[:, 2], 0.8)
    cx, cy = p.keypoints[8, :2]
    dx, dy = 20 / sxy[0], 30 / sxy[1]
    expect = np.clip([cx - dx, cy - dy, cx + dx, cy + dy], 0, [w, h, w, h])
    np.testing.assert_allclose(p.box, expect, atol=1e-3)


def test_thresholds_and_nms_inside(pipe):
    img = dot_image(480, 640, [(320, 240)])
    card = pipe.card
    low = OneStagePipeline(card, model=pipe.model, score_thr=0.01)
    assert len(low(img)) == 2  # the 0.05 instance is far from the others, the duplicate is still NMS-ed
    inside = OneStagePipeline(dataclasses.replace(card, nms_inside=True), model=pipe.model)
    assert [round(p.score, 2) for p in inside(img)] == [0.9, 0.8]
    boxes, scores = pipe.boxes(img)
    assert boxes.shape == (1, 4) and scores.tolist() == pytest.approx([0.9])


def test_rejects_other_kinds_and_bad_images(pipe):
    with pytest.raises(ValueError, match="not 'rtmo'"):
        OneStagePipeline("rtmpose-s")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        pipe(np.zeros((10, 10), np.uint8))
