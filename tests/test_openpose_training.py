"""OpenPose training task: targets/loss plumbing, and end-to-end runs of the light model on easy synthetic people
made here: the default suite trains a quick run at 96x144 that must raise held-out COCO AP from 0 to >= 0.2; the
slow run (``-m slow``) is the recipe, to AP >= 0.5. Both export the trained model and check that the ONNX file gives
the same people through ``PoseEstimator`` as the PyTorch pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from posekit.training.config import config_from_dict, load_config
from posekit.training.tasks import get_task
from posekit.training.tasks.openpose import (SYNTH_EASY, OpenPoseTask, eval_params_for, make_synthetic_splits,
                                             synth_easy)

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "openpose-light-synth.yaml"
SIZE = 160


def _cfg(data: dict, out_dir, **over) -> object:
    d = {
        "task": "openpose",
        "model": {"name": "openpose-light", "overrides": {}},
        "data": {**data, "input_size": [SIZE, SIZE],
                 "options": {"augment": True, "scale_range": [0.85, 1.15], "max_rotation": 10.0,
                             "max_translate": 0.05}},
        "optim": {"name": "adamw", "lr": 5e-3, "weight_decay": 0.0, "grad_clip": 0.0},
        "schedule": {"name": "cosine", "warmup_steps": 20, "min_lr_ratio": 0.02},
        "eval": {"every_epochs": 1000, "metric": "AP", "use_ema": False},
        "checkpoint": {"save_best": False},
        "seed": 0, "epochs": 30, "batch_size": 16, "workers": 0, "out_dir": str(out_dir), "device": "cpu",
        "progress": False, "log_every_steps": 50,
    }
    for k, v in over.items():
        d[k] = v
    return config_from_dict(d).validate()


def test_task_is_registered_and_targets_match_the_codec(tmp_path):
    data = make_synthetic_splits(tmp_path / "d", num_train=8, num_val=2, size=(64, 64), min_head_px=6)
    task = get_task("openpose")
    assert isinstance(task, OpenPoseTask)
    cfg = _cfg(data, tmp_path / "run")
    cfg.data.input_size = [64, 48]
    cfg.data.options = {"augment": False}
    train, val = task.build_datasets(cfg)
    model = task.build_model(cfg)
    batch = task.collate([train[0], train[1]])
    assert batch["image"].shape == (2, 3, 48, 64)
    assert batch["heatmaps"].shape == (2, 19, 6, 8) and batch["pafs"].shape == (2, 38, 6, 8)
    assert batch["mask"].shape == (2, 6, 8)
    # the image is the model's own preprocessing of the warped sample
    np.testing.assert_allclose(batch["image"][0].numpy(), model.preprocess(train[0]["image"])[0].numpy(), atol=1e-6)
    enc = task.codec.encode(train[1])
    np.testing.assert_array_equal(batch["pafs"][1].numpy(), enc["pafs"])
    loss, scalars = task.compute_loss(model, batch)
    assert loss.ndim == 0 and abs(float(loss) - scalars["loss_paf"] - scalars["loss_heatmap"]) < 1e-3 * float(loss)
    # per-sample normaliser: the loss of a batch is the mean of the single-sample losses
    model.eval()
    single = [float(task.compute_loss(model, task.collate([train[i]]))[0]) for i in (0, 1)]
    assert float(task.compute_loss(model, batch)[0]) == pytest.approx(np.mean(single), rel=1e-4)
    with pytest.raises(ValueError, match="unknown data.options"):
        cfg.data.options = {"augmnt": True}
        task.build_datasets(cfg)


def test_eval_params_adapt_to_the_input():
    p = eval_params_for((160, 120), {"peak_threshold": 0.2})
    assert p.input_mode == "keep_aspect" and p.target_height == 120 and p.upsample == 2
    assert p.peak_threshold == 0.2 and p.min_parts == 3
    with pytest.raises(ValueError, match="unknown PafParams"):
        eval_params_for((160, 160), {"bogus": 1})


def test_easy_synthetic_options():
    """The generator options behind SYNTH_EASY: one person facing the camera (the person's left side on the image's
    right), head heights in head_range, fully inside the image; the plain background has no edges of its own."""
    from posekit.data.synthetic import render_image
    from posekit.schema import COCO17

    w, h = SYNTH_EASY["size"]
    kw = {k: v for k, v in SYNTH_EASY.items() if k != "size"}
    names = COCO17.keypoints
    ls, rs, lh, rh = (names.index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))
    lo, hi = SYNTH_EASY["head_range"]
    heights, mirrored, whole = [], 0, 0
    for i in range(24):
        img, anns = render_image(np.random.default_rng([5, i]), (w, h), crowd_prob=0.0, small_prob=0.0,
                                 occluder_prob=0.0, **kw)
        assert img.shape == (h, w, 3) and len(anns) == 1
        kp = np.asarray(anns[0]["keypoints"], float).reshape(-1, 3)
        # inside: every keypoint in the image, unless the figure is taller than the image (arms up, largest heads)
        whole += int((kp[:, 2] > 0).all())
        mirrored += int(kp[ls, 0] > kp[rs, 0] and kp[lh, 0] > kp[rh, 0])
        heights.append(kp[:, 1].max() - kp[:, 1].min())
        # plain background: smooth away from the person (the textured one has shapes, lines and stripes)
        corner = img[:12, :12].astype(float)
        assert np.abs(np.diff(corner, axis=1)).mean() < 12
    assert whole >= 20
    assert mirrored >= 23  # front views: the person's left shoulder and hip on the image's right
    assert np.median(heights) > 0.5 * h  # keypoint extent of the figure (poses include sitting and squatting)
    assert max(heights) < h
    # default views ("all") include back views: left/right mirrored far less often
    mirrored_all = 0
    for i in range(24):
        _, anns = render_image(np.random.default_rng([5, i]), (w, h), min_people=1, max_people=1, crowd_prob=0.0,
                               small_prob=0.0, occluder_prob=0.0, min_head_px=8.0, head_range=(lo, hi), inside=True)
        kp = np.asarray(anns[0]["keypoints"], float).reshape(-1, 3)
        mirrored_all += int(kp[ls, 0] > kp[rs, 0] and kp[lh, 0] > kp[rh, 0])
    assert mirrored_all < 22
    with pytest.raises(ValueError, match="views"):
        render_image(np.random.default_rng(0), (64, 64), views="side")
    with pytest.raises(ValueError, match="head_range"):
        render_image(np.random.default_rng(0), (64, 64), head_range=(2.0, 8.0), min_head_px=5.0)
    with pytest.raises(ValueError, match="background"):
        render_image(np.random.default_rng(0), (64, 64), background="noise")


def test_synth_cli_easy_flags(tmp_path, capsys):
    import json

    from posekit.cli import main

    out = tmp_path / "ds"
    rc = main(["synth", str(out), "--images", "4", "--size", "96x144", "--min-people", "1", "--max-people", "1",
               "--crowd-prob", "0", "--views", "front", "--head-range", "12,14", "--inside", "--background", "plain"])
    assert rc == 0
    anns = json.loads((out / "person_keypoints.json").read_text())["annotations"]
    big = [a for a in anns if a["num_keypoints"] > 0]  # (the default small_prob still draws some tiny people)
    assert big and all(a["num_keypoints"] == 17 for a in big)
    assert all(35 < max(a["keypoints"][1::3]) - min(a["keypoints"][1::3]) < 144 for a in big)
    rc = main(["synth", str(tmp_path / "x"), "--images", "1", "--head-range", "12"])
    assert rc == 1 and "--head-range" in capsys.readouterr().err


def _train_and_export(tmp_path, overrides: list[str], synth: dict, num_train: int, seed: int):
    """Train configs/openpose-light-synth.yaml with ``overrides`` on easy synthetic data (``synth``: arguments of
    :func:`make_synthetic_splits`, ``num_train`` training and 30 held-out images, data seed ``seed``), one torch
    thread (conftest). Then export the last checkpoint to ONNX and check that ``PoseEstimator`` on the file finds
    the same people as the PyTorch pipeline on 10 held-out images. Returns ``(AP before, AP after, steps)``."""
    from posekit.data.io import read_image
    from posekit.export.onnx import export_openpose_onnx
    from posekit.models.checkpoints import load_openpose_checkpoint
    from posekit.pipelines.bottomup import torch_paf_pipeline
    from posekit.pipelines.estimator import PoseEstimator
    from posekit.training.trainer import train

    data = make_synthetic_splits(tmp_path / "data", num_train=num_train, num_val=30, seed=seed, **synth)
    cfg = load_config(CONFIG, [f"data.{k}={v}" for k, v in data.items()] + [
        f"out_dir={tmp_path / 'run'}", "progress=false", "eval.every_epochs=1000", "checkpoint.save_best=false",
        *overrides])
    w, h = cfg.data.input_size
    assert (w, h) == tuple(synth["size"])
    task = OpenPoseTask()
    _, val_ds = task.build_datasets(cfg)
    assert len(val_ds.index.image_ids) == 30
    torch.manual_seed(cfg.seed)
    before = task.evaluate(task.build_model(cfg), val_ds)
    out = train(cfg, task=task)
    after = out["last_eval"]
    print(f"AP {before['AP']:.3f} -> {after['AP']:.3f} (AP50 {after['AP50']:.3f}) after {out['step']} steps")

    # the checkpoint exports; PoseEstimator on the ONNX file finds the same people as the PyTorch pipeline
    model = load_openpose_checkpoint("openpose-light", out["last_checkpoint"])
    params = eval_params_for(cfg.data.input_size, cfg.task_options.get("paf_params"))
    onnx_path, card_path = export_openpose_onnx(model, tmp_path / "light.onnx", input_size=(w, h), params=params)
    est = PoseEstimator(str(card_path))
    ref = torch_paf_pipeline(model, params)
    n_people = 0
    for iid in val_ds.index.image_ids[:10]:
        img = read_image(val_ds.index.image_path(iid))
        a, b = est(img), ref(img)
        assert len(a) == len(b)
        n_people += len(a)
        for p, q in zip(a, b):
            np.testing.assert_allclose(p.keypoints, q.keypoints, atol=1e-2)
            assert abs(p.score - q.score) <= 1e-3
    assert n_people >= 9  # one person per image
    return before, after, out["step"]


#: the default-suite run: the recipe's model and settings on 96x144 images (SYNTH_EASY scaled), 400 steps of 8
#: images at lr 1e-2 -- about a ninth of the slow run's cost. Measured in docs/training-openpose.md.
QUICK = {"size": (96, 144), "steps": 400, "overrides": ["data.input_size=[96, 144]", "batch_size=8", "max_steps=400",
                                                       "optim.lr=1.0e-2", "schedule.warmup_steps=20",
                                                       f"data.options.sigma={9.899 * 144 / 192}"]}


def test_quick_run_learns_and_exports(tmp_path):
    """A short run on 200 training images raises held-out AP from 0 (docs/training-openpose.md has the measured AP
    over data seeds, and the result with the loss broken on purpose), and the trained model exports."""
    before, after, steps = _train_and_export(tmp_path, QUICK["overrides"], synth_easy(QUICK["size"]), 200, seed=12)
    assert before["AP"] < 0.02 and steps == QUICK["steps"]
    assert after["AP"] >= 0.2 and after["AP50"] >= 0.6, after


@pytest.mark.slow
def test_short_run_reaches_ap_and_exports(tmp_path):
    """The recipe of configs/openpose-light-synth.yaml (600 AdamW steps of 16 images, 128x192) on SYNTH_EASY data
    (800 training images, 30 held-out ones). Measured (docs/training-openpose.md): AP 0.706 / AP50 1.0 with this
    data seed (12), 0.610 / 1.0 with seed 11; the bar is the issue's 0.5."""
    before, after, steps = _train_and_export(tmp_path, [], SYNTH_EASY, 800, seed=12)
    assert before["AP"] < 0.05 and steps == 600
    assert after["AP"] >= 0.5 and after["AP50"] >= 0.8, after
