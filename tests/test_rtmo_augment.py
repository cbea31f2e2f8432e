"""RTMO's two YOLOX-style augmentations of the published recipe: the batch-synchronised random resize (MMPose's
``BatchSyncRandomResize``) and ``YOLOXMixUp``'s rescaled, mirrored, cropped second image. Pixel checks: dots drawn
at the keypoints are still under the transformed keypoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posekit.data.transforms import YOLOXMixUp
from posekit.schema import COCO17
from posekit.training.tasks.rtmo import BatchSyncRandomResize
from tests.test_rtmo_training import TINY


def _dot_centroid(img: np.ndarray, xy, radius: int = 7) -> tuple[float, float]:
    """Intensity centroid (background = the window's minimum removed) of ``img`` (H, W) around ``xy``."""
    x0, y0 = int(round(xy[0])), int(round(xy[1]))
    win = img[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1].astype(np.float64)
    win = win - win.min()
    if win.sum() == 0:  # nothing drawn there
        return float("inf"), float("inf")
    ys, xs = np.mgrid[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1]
    return float((win * xs).sum() / win.sum()), float((win * ys).sum() / win.sum())


def _gauss(shape, centres, sigma: float) -> np.ndarray:
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    out = np.zeros(shape)
    for cx, cy in centres:
        out += np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))
    return out


# ------------------------------------------------------------------------------------------- batch resize
def test_batch_resize_sizes_are_multiples_of_32_in_range_and_equal_across_ranks():
    ranks = [BatchSyncRandomResize((480, 800), 32, 1, seed=11) for _ in range(4)]  # four simulated processes
    sizes = [[r.size_at(t, (640, 640)) for t in range(400)] for r in ranks]
    assert all(s == sizes[0] for s in sizes[1:])  # every process agrees, with no communication
    assert sizes[0][0] == (640, 640)  # the first step keeps the loader size, as MMPose
    later = sizes[0][1:]
    assert all(w == h and w % 32 == 0 and 480 <= w <= 800 for w, h in later)
    counts = {w: sum(1 for s in later if s[0] == w) for w in range(480, 801, 32)}
    assert all(c > 15 for c in counts.values()), counts  # the 11 sizes are all drawn (uniform: ~36 each)
    assert len({s for s in later[:20]}) > 3  # re-drawn every step (interval 1)
    other = BatchSyncRandomResize((480, 800), 32, 1, seed=12)
    assert [other.size_at(t, (640, 640)) for t in range(400)] != sizes[0]  # the seed matters
    # interval 3: constant within blocks of 3 steps; a 4:3 loader size keeps its aspect as MMPose (w = 32 int(a k))
    r3 = BatchSyncRandomResize((480, 800), 32, 3, seed=11)
    s3 = [r3.size_at(t, (640, 480)) for t in range(60)]
    assert s3[:3] == [(640, 480)] * 3
    for b in range(1, 20):
        w, h = s3[3 * b]
        assert s3[3 * b:3 * b + 3] == [(w, h)] * 3 and w == 32 * int(4 / 3 * (h // 32)) and 480 <= h <= 800
    with pytest.raises(ValueError, match="batch_resize_interval"):
        BatchSyncRandomResize((480, 800), 32, 0)


def test_batch_resize_moves_keypoints_boxes_and_areas_with_the_pixels():
    pts = np.array([[[100.0, 120.0], [401.3, 250.7], [600.0, 610.2]],
                    [[320.5, 40.0], [50.2, 500.0], [250.0, 380.0]]], np.float32)  # (2 images, 3 keypoints)
    img = np.stack([_gauss((640, 640), p, 5.0) * 200 for p in pts])
    x = torch.from_numpy(img[:, None].repeat(3, 1)).float()
    boxes = torch.tensor([[90.0, 30.0, 410.0, 260.0]])
    targets = [{"keypoints": torch.from_numpy(p[None]), "boxes": boxes, "visible": torch.ones(1, 3),
                "areas": torch.tensor([5000.0])} for p in pts]
    for size in ((480, 480), (800, 800), (736, 544)):
        y, t = BatchSyncRandomResize.resize(x, targets, size)
        assert y.shape == (2, 3, size[1], size[0])
        s = np.array([size[0] / 640, size[1] / 640])
        for b in range(2):
            kp = t[b]["keypoints"][0].numpy()
            np.testing.assert_allclose(kp, (pts[b] + 0.5) * s - 0.5, atol=1e-4)
            for k in range(3):  # the drawn dot is under the moved keypoint
                c = _dot_centroid(y[b, 0].numpy(), kp[k], radius=int(4 * 5 * s.max()))
                assert np.hypot(c[0] - kp[k, 0], c[1] - kp[k, 1]) < 0.06, (size, b, k, c, kp[k])
            np.testing.assert_allclose(t[b]["boxes"][0].numpy(),
                                       ((boxes[0].numpy().reshape(2, 2) + 0.5) * s - 0.5).reshape(4), atol=1e-4)
            assert float(t[b]["areas"][0]) == pytest.approx(5000.0 * s[0] * s[1], rel=1e-6)
            assert torch.equal(t[b]["visible"], targets[b]["visible"])
    same, t_same = BatchSyncRandomResize.resize(x, targets, (640, 640))
    assert same is x and t_same is targets


def test_task_resizes_the_batch_and_the_priors_follow(tmp_path):
    """Through the RTMO task: the batch of step t has size_at(t), the loss equals the criterion on the resized
    batch and targets, and the head's priors cover the resized input (built per forward)."""
    from posekit.losses.rtmo import RTMOCriterion
    from posekit.training.config import config_from_dict
    from posekit.training.tasks.openpose import make_synthetic_splits
    from posekit.training.tasks.rtmo import RTMOTask

    data = make_synthetic_splits(tmp_path / "d", num_train=4, num_val=1, size=(160, 160), min_head_px=12,
                                 max_people=2, val_inside_only=False)
    d = {"task": "rtmo", "model": {"name": "rtmo-s", "overrides": {k: list(v) if isinstance(v, tuple) else v
                                                                   for k, v in TINY.items()}},
         "data": {**data, "input_size": [160, 160],
                  "options": {"batch_resize_range": [96, 224], "mixup_prob": 1.0, "mixup_ratio_range": [0.8, 1.6]}},
         "seed": 3, "epochs": 1, "batch_size": 4, "workers": 0, "out_dir": str(tmp_path / "run"), "device": "cpu"}
    tasks = []
    for _ in range(2):  # two simulated processes
        task = RTMOTask()
        cfg = config_from_dict(d).validate()
        train, _ = task.build_datasets(cfg)
        tasks.append(task)
    task = tasks[0]
    torch.manual_seed(0)
    model = task.build_model(cfg)
    model.train()
    batch = task.collate([train[i] for i in range(4)])
    seen = set()
    for step in range(6):
        for t in tasks:
            t.set_step(step)
        size = task.batch_resize.size_at(step, (160, 160))
        assert size == tasks[1].batch_resize.size_at(step, (160, 160)) and size[0] % 32 == 0 and 96 <= size[0] <= 224
        if step == 0:
            assert size == (160, 160)
        seen.add(size)
        loss, sc = task.compute_loss(model, batch)
        assert sc["input_h"] == size[1] and torch.isfinite(loss)
    assert len(seen) >= 3
    # the loss is the criterion on the resized images and targets (step 5's size)
    x, targets = BatchSyncRandomResize.resize(batch["image"], batch["targets"], size)
    raw = model(x, with_kpt_offsets=True)
    priors, _ = model.head.priors_for(raw)
    assert float(priors[:, 0].max()) > size[0] - 32 and float(priors[:, 0].max()) < size[0]
    want = RTMOCriterion(model.head, task.assigner, easy_keypoints=task.easy_keypoints)(raw, targets,
                                                                                       task.weights_at(0))
    assert float(loss.detach()) == pytest.approx(float(want["loss"].detach()), rel=1e-5)
    model.eval()  # evaluation mode: no resize
    with torch.no_grad():
        task.compute_loss(model, batch)
    with pytest.raises(ValueError, match="stage2"):
        d2 = {**d, "data": {**d["data"], "options": {**d["data"]["options"], "stage2_epoch": 1,
                                                      "stage2": {"batch_resize_range": [96, 96]}}}}
        RTMOTask().build_datasets(config_from_dict(d2).validate())


# ------------------------------------------------------------------------------------------------ mixup
_PTS = {"left_shoulder": (180.0, 100.0), "right_shoulder": (300.0, 104.0), "left_hip": (190.0, 220.0),
        "right_hip": (290.0, 224.0), "left_knee": (185.0, 318.0), "right_knee": (296.0, 322.0)}


def _aux_person():
    """A 480x360 black image with one person whose left-side keypoints are blue dots and right-side ones red."""
    names = list(COCO17.keypoints)
    kp = np.zeros((1, 17, 3), np.float32)
    blue = [xy for n, xy in _PTS.items() if n.startswith("left")]
    red = [xy for n, xy in _PTS.items() if n.startswith("right")]
    for n, (x, y) in _PTS.items():
        kp[0, names.index(n)] = (x, y, 2)
    img = np.zeros((360, 480, 3), np.float64)
    img[..., 0] = _gauss((360, 480), blue, 6.0) * 250
    img[..., 2] = _gauss((360, 480), red, 6.0) * 250
    return {"image": np.round(img).astype(np.uint8), "keypoints": kp,
            "boxes": np.array([[150.0, 70.0, 330.0, 350.0]], np.float32), "areas": np.array([20000.0], np.float32)}


def test_yolox_mixup_rescaled_second_image_keypoints_land_on_their_dots():
    names = list(COCO17.keypoints)
    aux = _aux_person()
    base = {"image": np.zeros((192, 192, 3), np.uint8), "keypoints": np.zeros((0, 17, 3), np.float32),
            "boxes": np.zeros((0, 4), np.float32), "areas": np.zeros((0,), np.float32)}
    mix = YOLOXMixUp(COCO17, img_scale=(192, 192), ratio_range=(0.8, 1.6), flip_prob=0.5)
    r = 192 / 480  # the fit of the 480x360 image into 192x192
    flips, scales, checked = set(), [], 0
    for seed in range(24):
        out = mix.mix(base, aux, np.random.default_rng(seed))
        assert out["image"].shape == (192, 192, 3) and out["keypoints"].shape == (1, 17, 3)
        kp = out["keypoints"][0]
        ls, lh = kp[names.index("left_shoulder")], kp[names.index("left_hip")]
        s = np.hypot(*(ls[:2] - lh[:2])) / np.hypot(*np.subtract(_PTS["left_shoulder"], _PTS["left_hip"]))
        scales.append(s / r)  # the jitter factor
        assert float(out["areas"][0]) == pytest.approx(20000.0 * s * s, rel=1e-3)
        # which colour the "left_*" labels sit on tells whether the image was mirrored (then labels swap)
        left_on = None
        for n in _PTS:
            x, y, v = kp[names.index(n)]
            inside = 8 <= x < 192 - 8 and 8 <= y < 192 - 8
            if not (-0.5 <= x < 191.5 and -0.5 <= y < 191.5):
                assert v == 0  # off the output: no longer labelled
            if v == 0 or not inside:
                continue
            b = _dot_centroid(out["image"][..., 0], (x, y))
            rd = _dot_centroid(out["image"][..., 2], (x, y))
            eb, er = np.hypot(b[0] - x, b[1] - y), np.hypot(rd[0] - x, rd[1] - y)
            colour = "blue" if eb < er else "red"
            assert min(eb, er) < 0.15, (seed, n, b, rd, (x, y))
            on_left_colour = colour if n.startswith("left") else {"blue": "red", "red": "blue"}[colour]
            assert left_on in (None, on_left_colour)
            left_on = on_left_colour
            checked += 1
        if left_on is not None:
            flips.add(left_on == "red")
        box = out["boxes"][0]
        assert 0 <= box[0] <= box[2] <= 191 and 0 <= box[1] <= box[3] <= 191
    assert flips == {True, False}  # both mirrored and plain draws, labels swapped with the mirror
    assert checked > 60
    assert 0.8 <= min(scales) < 0.95 and 1.45 < max(scales) <= 1.6 + 1e-2  # the 0.8-1.6 rescale
    # the mixed image is the floor of the average; no people in the second image: unchanged
    empty = {**aux, "keypoints": np.zeros((0, 17, 3), np.float32), "boxes": np.zeros((0, 4), np.float32),
             "areas": np.zeros((0,), np.float32)}
    assert mix.mix(base, empty, np.random.default_rng(0))["image"] is base["image"]


def test_yolox_mixup_matrix_places_the_canvas_like_yolox():
    """The affine equals YOLOX's steps: fit (aspect kept, top-left), rescale the canvas, mirror about the
    rescaled canvas, crop at the offset; the pad (114) fills the rest; sample and aux average to the floor."""
    mix = YOLOXMixUp(COCO17, img_scale=(640, 640), ratio_range=(0.8, 1.6))
    M, win = mix.matrix((1000, 500), 1.25, False, (30, 20))  # fit 0.64 -> 640x320, canvas 800x800
    np.testing.assert_allclose(M, [[0.8, 0, 0.4 - 0.5 - 30], [0, 0.8, 0.4 - 0.5 - 20]], atol=1e-12)
    np.testing.assert_allclose(win, (-30.5, -20.5, 769.5, 379.5), atol=1e-9)
    Mf, winf = mix.matrix((1000, 500), 1.25, True, (30, 20))  # mirrored about the 800-wide canvas
    x = np.array([[10.0, 7.0]])
    from posekit.data.geometry import apply_affine

    np.testing.assert_allclose(apply_affine(x, Mf)[0, 0], 799 - (0.8 * 10.5 - 0.5) - 30, atol=1e-9)
    np.testing.assert_allclose(winf[0], 800 - 1 - 799.5 - 30, atol=1e-9)
    # pixels: a white aux image, grey sample -> (100 + 255) // 2 inside the placed image, (100 + 114) // 2 outside
    base = {"image": np.full((640, 640, 3), 100, np.uint8), "keypoints": np.zeros((0, 17, 3), np.float32),
            "boxes": np.zeros((0, 4), np.float32), "areas": np.zeros((0,), np.float32)}
    aux = {"image": np.full((500, 1000, 3), 255, np.uint8), "keypoints": np.tile(np.float32([600, 300, 2]), (1, 17, 1)),
           "boxes": np.array([[0.0, 0.0, 999.0, 499.0]], np.float32), "areas": np.array([1.0], np.float32)}
    mix2 = YOLOXMixUp(COCO17, (640, 640), (1.25, 1.25), flip_prob=0.0)
    out = mix2.mix(base, aux, np.random.default_rng(0))
    img = out["image"][..., 0]
    rows = np.nonzero(img[:, 5] == 177)[0]
    cols = np.nonzero(img[5] == 177)[0]
    assert img.max() == 177 and img.min() == 107
    b = out["boxes"][0]  # the box of the whole aux image is the placed window, clipped to the output
    # the placed image is 800x400 at a random offset in [0, 160]^2: all 640 columns, 400 - dy rows from the top
    assert len(cols) == 640 and rows.min() == 0 and 240 <= rows.max() + 1 <= 400 and len(rows) == rows.max() + 1
    assert b[0] == 0 and b[1] == 0 and b[2] == 639 and b[3] == pytest.approx(rows.max(), abs=0.5)
    assert out["keypoints"][0, 0, 2] == 2 and out["areas"][0] == pytest.approx(0.64)
