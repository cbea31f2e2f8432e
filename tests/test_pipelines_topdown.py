"""Top-down pipeline with stand-in SimCC / heatmap ONNX models: crops -> decode -> image pixels, one batch."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conftest import shared_path
from posekit.data.io import read_image
from posekit.pipelines.topdown import TopDownPipeline, decode_heatmaps, decode_simcc, load_detections
from posekit.runtime.cards import HeatmapSpec, load_card
from posekit.runtime.testing import fake_heatmap, fake_simcc
from posekit.schema import COCO17

DOTS = [(100.0, 120.0), (300.4, 299.6), (520.0, 200.0)]
GAINS = np.linspace(0.1, 0.15, 17, dtype=np.float32)


def dot_image(h, w, dots, sigma=4.0):
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.zeros((h, w))
    for x, y in dots:
        a = np.maximum(a, np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2)))
    return np.repeat((255 * a).round().astype(np.uint8)[..., None], 3, 2)


class CountingModel:
    """Wraps an OnnxModel and records the batch sizes it was run with."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def run(self, batch, outputs=None):
        self.calls.append(batch.shape[0])
        return self.model.run(batch, outputs)


@pytest.fixture(scope="module")
def simcc_card(tmp_path_factory):
    f = tmp_path_factory.mktemp("m") / "simcc.onnx"
    f.write_bytes(fake_simcc(gains=GAINS))
    return load_card("rtmpose-s").with_weights(f)


def _boxes():
    # boxes that do not centre the dots (the crop frame is really exercised), far enough apart
    return np.array([[x - 30, y - 70, x + 50, y + 90] for x, y in DOTS], np.float32)


def test_simcc_crops_map_back_in_one_batch(simcc_card):
    td = TopDownPipeline(simcc_card)
    td.model = CountingModel(td.model)
    img = dot_image(480, 640, DOTS)
    people = td(img, boxes=_boxes(), box_scores=np.array([0.9, 0.8, 0.7]))
    assert td.model.calls == [3]  # all crops of the image in ONE run
    assert len(people) == 3
    # crop scale: 80x160 box * 1.25 -> 150x200 for 192x256 = 1.28 crop px per image px
    for p in people:
        i = int(np.argmin([abs(p.box[0] - (x - 30)) for x, _ in DOTS]))
        np.testing.assert_allclose(p.keypoints[:, :2], np.broadcast_to(DOTS[i], (17, 2)), atol=0.6)
        peak = p.keypoints[0, 2] / GAINS[0]
        np.testing.assert_allclose(p.keypoints[:, 2], GAINS * peak, rtol=1e-4)  # score = min of x/y maxima
        assert p.score == pytest.approx(p.extra["box_score"] * p.keypoints[:, 2].mean(), rel=1e-5)


def test_flip_test_swaps_left_right_and_stays_put(simcc_card):
    td = TopDownPipeline(simcc_card, flip_test=True)
    td.model = CountingModel(td.model)
    img = dot_image(480, 640, DOTS)
    people = td(img, boxes=_boxes())
    assert td.model.calls == [6]  # originals + flipped crops in the same batch
    fi = np.asarray(COCO17.flip_index)
    for p in people:
        peak = p.keypoints[0, 2] / GAINS[0]  # the nose has no mirror partner
        np.testing.assert_allclose(p.keypoints[:, 2], 0.5 * (GAINS + GAINS[fi]) * peak, rtol=1e-4)
        i = int(np.argmin([np.hypot(*(p.keypoints[0, :2] - d)) for d in DOTS]))
        np.testing.assert_allclose(p.keypoints[:, :2], np.broadcast_to(DOTS[i], (17, 2)), atol=0.6)


def test_heatmap_card_decodes_to_the_dot(tmp_path):
    f = tmp_path / "hm.onnx"
    f.write_bytes(fake_heatmap())
    base = load_card("rtmpose-s")
    card = dataclasses.replace(base, kind="heatmap", output_names=("heatmaps",), simcc=None,
                               heatmap=HeatmapSpec(udp=False)).with_weights(f)
    td = TopDownPipeline(card)
    people = td(dot_image(480, 640, DOTS), boxes=_boxes())
    # the classic codec maps cell i to 4i (MMPose), 1.5 crop px left of the cell centre: bias < 2 image px
    for p in people:
        d = np.hypot(*(p.keypoints[:, :2] - p.keypoints[0, :2]).T).max()
        i = int(np.argmin([np.hypot(*(p.keypoints[0, :2] - q)) for q in DOTS]))
        assert d < 1e-4 and np.hypot(*(p.keypoints[0, :2] - DOTS[i])) < 2.5


def test_decoders_on_known_arrays():
    sx = np.zeros((1, 2, 10), np.float32)
    sy = np.zeros((1, 2, 8), np.float32)
    sx[0, 0, 7], sy[0, 0, 3] = 0.9, 0.4
    sx[0, 1, 2], sy[0, 1, 5] = 0.3, 0.6
    locs, scores = decode_simcc(sx, sy, 2.0)
    np.testing.assert_allclose(locs[0], [[3.5, 1.5], [1.0, 2.5]])
    np.testing.assert_allclose(scores[0], [0.4, 0.3])
    hm = np.zeros((1, 1, 8, 6), np.float32)
    hm[0, 0, 5, 2], hm[0, 0, 5, 3], hm[0, 0, 4, 2] = 1.0, 0.5, 0.2
    locs, scores = decode_heatmaps(hm, (24, 32))
    np.testing.assert_allclose(locs[0, 0], [(2 + 0.25) * 4, (5 - 0.25) * 4])
    # the pipeline decodes exactly as the model's codec (UDP: DARK-UDP refinement, MSRA+DARK)
    from posekit.codecs.heatmap import HeatmapCodec

    for kind, dark in (("udp", False), ("msra", True)):
        codec = HeatmapCodec(input_size=(24, 32), heatmap_size=(6, 8), kind=kind, unbiased=dark)
        locs, scores = decode_heatmaps(hm, (24, 32), udp=kind == "udp", dark=dark)
        ref_locs, ref_scores = codec.decode(hm)
        np.testing.assert_array_equal(locs, ref_locs)
        np.testing.assert_array_equal(scores, ref_scores)
    sx[0, 1] = 0.0  # SimCC: a keypoint whose score is <= 0 is at -1 (the codec's rule)
    locs, scores = decode_simcc(sx, sy, 2.0)
    np.testing.assert_allclose(locs[0, 1], [-0.5, -0.5])


def test_detector_box_source_and_detections_json(simcc_card, tmp_path):
    from posekit.detectors import PersonDetector

    det = PersonDetector("yolox-nano-human",
                         weights=shared_path("weights", "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx"))
    td = TopDownPipeline(simcc_card, box_source=det)
    img = read_image(shared_path("data", "mmpose-coco", "images", "000000197388.jpg"))
    people = td(img)
    boxes, scores = det(img)
    assert len(people) == len(boxes) == 5
    assert sorted(p.extra["box_score"] for p in people) == pytest.approx(sorted(scores))
    dets = load_detections(shared_path("data", "mmpose-coco", "person_detections_AP_H_56.json"))
    assert sum(len(b) for b, _ in dets.values()) == 118
    bad = tmp_path / "d.json"
    bad.write_text(json.dumps([{"image_id": 1, "score": 0.5}]))
    with pytest.raises(ValueError, match="detection #0"):
        load_detections(bad)
    with pytest.raises(ValueError, match="needs person boxes"):
        TopDownPipeline(simcc_card)(img)
