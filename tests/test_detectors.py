"""Person detectors on real COCO images, NMS and the raw YOLOX decode."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_path
from posekit.data.io import read_image
from posekit.detectors import PersonDetector, box_iou, decode_yolox_raw, nms

WEIGHTS = {
    "yolox-nano-human": "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx",
    "yolox-nano-coco": "yolox_nano_coco80_416x416.onnx",
}


def _gt():
    """Per image: the GT boxes (xyxy) of the non-crowd people that have keypoints (the people keypoint AP
    counts; the two tiny keypoint-less people of these images, 491 and 286 px^2, are left out)."""
    ann = json.loads(shared_path("data", "mmpose-coco", "person_keypoints.json").read_text())
    out = []
    for im in ann["images"]:
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                 for a in ann["annotations"]
                 if a["image_id"] == im["id"] and not a["iscrowd"] and a["num_keypoints"] > 0]
        out.append((im["file_name"], np.array(boxes, np.float32)))
    return out


@pytest.fixture(scope="module")
def images():
    return [(read_image(shared_path("data", "mmpose-coco", "images", f)), g) for f, g in _gt()]


def _recall(det, images, thr):
    found, total = 0, 0
    for img, gt in images:
        boxes, scores = det(img)
        assert boxes.dtype == np.float32 and boxes.shape == (len(scores), 4)
        assert np.all(np.diff(scores) <= 0) and np.all(scores > thr)
        assert np.all(boxes[:, 2] <= img.shape[1]) and np.all(boxes[:, 3] <= img.shape[0])
        iou = box_iou(gt, boxes)
        found += int((iou.max(1) >= 0.5).sum()) if len(boxes) else 0
        total += len(gt)
    return found, total


def test_human_detector_finds_every_person(images):
    det = PersonDetector("yolox-nano-human", weights=shared_path("weights", WEIGHTS["yolox-nano-human"]),
                         score_thr=0.3)
    assert _recall(det, images, 0.3) == (12, 12)


def test_coco80_raw_detector_finds_every_person(images):
    path = shared_path("weights", WEIGHTS["yolox-nano-coco"])
    det = PersonDetector("yolox-nano-coco", weights=path, score_thr=0.3)
    assert _recall(det, images, 0.3) == (12, 12)


def test_card_interpolation_is_used(images):
    """The COCO-80 card low-passes before shrinking (antialias); with plain bilinear the half-hidden person of
    000000197388 scores 0.277 and is lost at 0.3 (so the card field really reaches the resize); OpenCV's area
    averaging finds all 12 too."""
    from dataclasses import replace

    from posekit.runtime.cards import load_card

    card = replace(load_card("yolox-nano-coco"), interpolation="linear")
    det = PersonDetector(card, weights=shared_path("weights", WEIGHTS["yolox-nano-coco"]), score_thr=0.3)
    assert _recall(det, images, 0.3) == (11, 12)
    for interp in ("area", "antialias"):
        card = replace(load_card("yolox-nano-coco"), interpolation=interp)
        det = PersonDetector(card, weights=shared_path("weights", WEIGHTS["yolox-nano-coco"]), score_thr=0.3)
        assert _recall(det, images, 0.3) == (12, 12), interp


def test_nms_matches_brute_force():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (200, 2))
    wh = rng.uniform(5, 40, (200, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.uniform(0, 1, 200)
    keep = nms(boxes, scores, 0.5)
    # reference: plain greedy loop
    ref, alive = [], np.ones(200, bool)
    iou = box_iou(boxes, boxes)
    for i in np.argsort(-scores):
        if alive[i]:
            ref.append(i)
            alive &= ~(iou[i] > 0.5)
    assert keep.tolist() == ref and 10 < len(keep) < 200


def test_nms_matrix_path_equals_the_row_loop(monkeypatch):
    """Up to 256 boxes nms decides on one IoU matrix; it must keep exactly what the one-row-per-kept-box loop keeps
    (ties, duplicates, empty boxes, thresholds 0 and 1 included)."""
    import posekit.boxes as B

    rng = np.random.default_rng(3)
    for trial in range(300):
        n = int(rng.integers(0, 120))
        xy, wh = rng.uniform(0, 100, (n, 2)), rng.uniform(0, 40, (n, 2))
        wh[rng.uniform(size=n) < 0.1] = 0
        boxes = np.concatenate([xy, xy + wh], 1)
        if n:
            boxes[rng.integers(0, n, n // 3)] = boxes[0]
        scores = np.round(rng.uniform(0, 1, n), 1)
        thr = float(rng.choice([0.0, 0.45, 0.65, 1.0]))
        monkeypatch.setattr(B, "_MATRIX_NMS_MAX", 10**9)
        matrix = B.nms(boxes, scores, thr)
        monkeypatch.setattr(B, "_MATRIX_NMS_MAX", -1)
        loop = B.nms(boxes, scores, thr)
        assert matrix.dtype == loop.dtype == np.int64 and matrix.tolist() == loop.tolist()


def test_yolox_raw_decode_grid():
    out = np.zeros((52 * 52 + 26 * 26 + 13 * 13, 85), np.float32)
    i = 52 * 52 + 3 * 26 + 5  # stride 16 level, row 3, column 5
    out[i, :4] = [0.5, 0.25, np.log(2.0), np.log(4.0)]
    out[i, 4], out[i, 5] = 0.8, 0.5
    boxes, scores = decode_yolox_raw(out, (416, 416), (8, 16, 32), 0)
    cx, cy, w, h = (5 + 0.5) * 16, (3 + 0.25) * 16, 32, 64
    np.testing.assert_allclose(boxes[i], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rtol=1e-6)
    assert scores[i] == pytest.approx(0.4) and scores.argmax() == i
    with pytest.raises(ValueError, match="anchors"):
        decode_yolox_raw(out[:-1], (416, 416), (8, 16, 32), 0)


def test_detector_rejects_pose_card():
    with pytest.raises(ValueError, match="not a detector"):
        PersonDetector("rtmo-s")


def test_antialias_preprocessing_is_blur_then_bilinear_only_when_shrinking():
    from dataclasses import replace

    import cv2

    from posekit.data.geometry import letterbox
    from posekit.runtime.cards import load_card
    from posekit.runtime.preprocess import prepare_image

    card = replace(load_card("yolox-nano-coco"), interpolation="antialias")
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (429, 640, 3), dtype=np.uint8)
    got, M = prepare_image(big, card)
    ref, M_ref, _ = letterbox(cv2.GaussianBlur(big, (3, 3), 0), (416, 416), pad_value=114)
    np.testing.assert_array_equal(got[0].transpose(1, 2, 0), ref.astype(np.float32))
    np.testing.assert_allclose(M, M_ref)  # the blur is symmetric: same pixel grid, same back-mapping
    small = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)  # enlarged: no blur, plain bilinear
    got, _ = prepare_image(small, card)
    ref, _, _ = letterbox(small, (416, 416), pad_value=114)
    np.testing.assert_array_equal(got[0].transpose(1, 2, 0), ref.astype(np.float32))


@pytest.mark.parametrize("resize", ["letterbox", "letterbox-center", "keep-aspect-height"])
def test_whole_image_batch_equals_padding_in_uint8_then_converting(resize):
    """prepare_image writes the resized pixels straight into the float batch; the numbers must be exactly those of
    the padded uint8 canvas (geometry.letterbox / a pad-right canvas) converted by to_tensor, for both layouts,
    both colour orders and with mean/std normalisation."""
    from dataclasses import replace

    import cv2

    from posekit.data.geometry import letterbox
    from posekit.runtime.cards import load_card
    from posekit.runtime.preprocess import input_size_for, prepare_image, to_tensor

    rng = np.random.default_rng(1)
    base = replace(load_card("yolox-nano-coco"), resize=resize, input_size=(64, 48), size_multiple=8, pad_value=7)
    checked = 0
    for shape in [(30, 90), (120, 40), (48, 64), (7, 5)]:
        img = rng.integers(0, 255, shape + (3,), dtype=np.uint8)
        for layout in ("NCHW", "NHWC"):
            for color in ("bgr", "rgb"):
                for mean, std in (((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), ((123.7, 116.3, 103.5), (58.4, 57.1, 57.4))):
                    card = replace(base, input_layout=layout, color=color, mean=mean, std=std, interpolation="linear")
                    got, M = prepare_image(img, card)
                    if resize == "keep-aspect-height":
                        w, h = input_size_for(img.shape, card)
                        nw = min(w, max(1, int(round(img.shape[1] * h / img.shape[0]))))
                        canvas = np.full((h, w, 3), 7, np.uint8)
                        canvas[:, :nw] = cv2.resize(img, (nw, h), interpolation=cv2.INTER_LINEAR)
                    else:
                        canvas, M_ref, _ = letterbox(img, (64, 48), pad_value=7, center=resize == "letterbox-center")
                        np.testing.assert_array_equal(M, M_ref)
                    ref = to_tensor(canvas[None], card)
                    assert got.dtype == np.float32 and got.shape == ref.shape
                    np.testing.assert_array_equal(got, ref)
                    checked += 1
    assert checked == 32
