"""The official COCO recipes (configs/coco/*.yaml): each parses, carries the published hyper-parameters of the
source its header cites, and trains for 2 steps on the real COCO images of ../shared/data/coco-mini-train.

The published values below are transcribed from the sources (MMPose 1.x configs at commit 759b39c1, the authors'
tf-cpn config and trainer, CMU's pose_solver.prototxt and CPMData layer); each recipe's header cites its file."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from posekit.training.config import load_config
from posekit.training.schedules import lr_factor

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "configs" / "coco"
MM = "open-mmlab/mmpose configs/body_2d_keypoint"

_RTMPOSE_COMMON = {
    "task": "topdown", "epochs": 420, "batch_size": 8 * 256, "seed": 21, "workers": 10, "sync_bn": True,
    "optim.name": "adamw", "optim.lr": 4e-3, "optim.no_decay_1d": True, "optim.amp": "off",
    "schedule.name": "piecewise", "schedule.warmup_steps": 1000, "schedule.warmup_start_factor": 1e-5,
    "schedule.phases": [{"end_epoch": 210, "kind": "constant", "start": 1.0},
                        {"end_epoch": 420, "kind": "cosine", "start": 1.0, "end": 0.05}],
    "ema.decay": 0.9998, "ema.warmup_steps": 2000, "data.input_size": [192, 256],
    "data.options.scale_range": [0.6, 1.4], "data.options.rot_factor": 80.0, "data.options.hsv_aug": True,
    "data.options.blur_prob": 0.1, "data.options.median_blur_prob": 0.1, "data.options.coarse_dropout_prob": 1.0,
    "data.options.half_body_min_keypoints": 9, "data.options.half_body_upper_prob": 0.7,
    "data.options.stage2_epoch": 420 - 30,
    "data.options.stage2": {"shift_factor": 0.0, "scale_range": [0.75, 1.25], "rot_factor": 60.0,
                            "coarse_dropout_prob": 0.5},
}
_RTMO_COMMON = {
    "task": "rtmo", "epochs": 600, "batch_size": 256, "workers": 8, "optim.name": "adamw", "optim.lr": 4e-3,
    "optim.weight_decay": 0.05, "optim.grad_clip": 0.1, "optim.lr_mult": {"neck.encoder": 0.05},
    "schedule.warmup_kind": "quadratic", "schedule.warmup_epochs": 5.0, "ema.enabled": True, "ema.decay": 0.9998,
    "data.input_size": [640, 640], "data.options.mosaic_prob": 1.0, "data.options.mixup_prob": 1.0,
    "data.options.scale_range": [0.75, 1.0], "data.options.max_rotation": 10.0, "data.options.max_translate": 0.1,
    "data.options.hsv_aug": True, "data.options.stage2_epoch": 600 - 20, "task_options.switch_epoch": 280,
    "task_options.aux_epoch": 600 - 21, "task_options.aux.bbox_aux": 1.0,
    "task_options.loss.cls": 1.0, "task_options.loss.bbox": 5.0, "task_options.loss.oks": 30.0,
    "task_options.loss.vis": 1.0, "task_options.score_thr": 0.1, "task_options.nms_thr": 0.65,
    # YOLOXMixUp(ratio_range=(0.8, 1.6)) with its default flip_ratio 0.5, and the data preprocessor's
    # BatchSyncRandomResize(random_size_range=(480, 800), size_divisor=32, interval=1) (same config file)
    "data.options.mixup_ratio_range": [0.8, 1.6], "data.options.mixup_flip_prob": 0.5,
    "data.options.batch_resize_range": [480, 800], "data.options.batch_resize_divisor": 32,
    "data.options.batch_resize_interval": 1,
}
_MM_TOPDOWN = {
    "task": "topdown", "epochs": 210, "schedule.name": "step", "schedule.warmup_steps": 500,
    "schedule.warmup_start_factor": 0.001, "schedule.milestones": [170, 200], "schedule.gamma": 0.1,
    "data.options.scale_range": [0.5, 1.5], "data.options.rot_factor": 80.0, "data.options.rot_prob": 0.6,
    "data.options.shift_factor": 0.16, "data.options.shift_prob": 0.3, "data.options.half_body_prob": 0.3,
    "optim.lr": 5e-4, "sync_bn": False, "optim.amp": "off",
}
#: recipe -> (source, {dotted config key: published value})
PUBLISHED = {
    "rtmpose-t": (f"{MM}/rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py",
                  {**_RTMPOSE_COMMON, "model.name": "rtmpose-t", "optim.weight_decay": 0.0, "ema.enabled": False}),
    "rtmpose-s": (f"{MM}/rtmpose/coco/rtmpose-s_8xb256-420e_coco-256x192.py",
                  {**_RTMPOSE_COMMON, "model.name": "rtmpose-s", "optim.weight_decay": 0.0, "ema.enabled": True}),
    "rtmpose-m": (f"{MM}/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py",
                  {**_RTMPOSE_COMMON, "model.name": "rtmpose-m", "optim.weight_decay": 0.05, "ema.enabled": True}),
    "rtmpose-l": (f"{MM}/rtmpose/coco/rtmpose-l_8xb256-420e_coco-256x192.py",
                  {**_RTMPOSE_COMMON, "model.name": "rtmpose-l", "optim.weight_decay": 0.05, "ema.enabled": True}),
    "rtmo-s": (f"{MM}/rtmo/coco/rtmo-s_8xb32-600e_coco-640x640.py",
               {**_RTMO_COMMON, "model.name": "rtmo-s", "task_options.loss.mle": 1.0,
                "task_options.switch": {"proxy_target_cc": True, "mle": 5.0, "oks": 10.0}}),
    "rtmo-m": (f"{MM}/rtmo/coco/rtmo-m_16xb16-600e_coco-640x640.py",
               {**_RTMO_COMMON, "model.name": "rtmo-m", "task_options.loss.mle": 0.01,
                "task_options.switch": {"proxy_target_cc": True, "mle": 5.0, "oks": 10.0, "overlaps_power": 1.0,
                                        "cls": 2.0}}),
    "rtmo-l": (f"{MM}/rtmo/coco/rtmo-l_16xb16-600e_coco-640x640.py",
               {**_RTMO_COMMON, "model.name": "rtmo-l", "task_options.loss.mle": 0.01,
                "task_options.switch": {"proxy_target_cc": True, "mle": 5.0, "oks": 10.0, "overlaps_power": 1.0,
                                        "cls": 2.0}}),
    "simplebaseline-r50": (f"{MM}/topdown_heatmap/coco/td-hm_res50_8xb64-210e_coco-256x192.py",
                           {**_MM_TOPDOWN, "model.name": "simplebaseline-r50", "optim.name": "adam",
                            "optim.weight_decay": 0.0, "batch_size": 512, "workers": 2,
                            "data.input_size": [192, 256]}),
    "vitpose-b": (f"{MM}/topdown_heatmap/coco/td-hm_ViTPose-base_8xb64-210e_coco-256x192.py",
                  {**_MM_TOPDOWN, "model.name": "vitpose-b", "optim.name": "adamw", "optim.weight_decay": 0.1,
                   "optim.betas": [0.9, 0.999], "optim.layer_decay": 0.75, "optim.layer_decay_num_layers": 12,
                   "optim.grad_clip": 1.0, "optim.no_decay_keys": ["pos_embed"], "batch_size": 512, "workers": 4,
                   "data.input_size": [192, 256]}),
    "hourglass-52": (f"{MM}/topdown_heatmap/coco/td-hm_hourglass52_8xb32-210e_coco-256x256.py",
                     {**_MM_TOPDOWN, "model.name": "hourglass-52", "optim.name": "adam", "optim.weight_decay": 0.0,
                      "batch_size": 256, "workers": 2, "data.input_size": [256, 256]}),
    "cpm": (f"{MM}/topdown_heatmap/coco/td-hm_cpm_8xb64-210e_coco-256x192.py",
            {**_MM_TOPDOWN, "model.name": "cpm", "optim.name": "adam", "optim.weight_decay": 0.0, "batch_size": 512,
             "workers": 2, "data.input_size": [192, 256]}),
    "cpn-r50": ("chenyilun95/tf-cpn models/COCO.res50.256x192.CPN/config.py + lib/tfflat/base.py",
                {"task": "topdown", "model.name": "cpn-r50", "optim.name": "adam", "optim.lr": 5e-4,
                 "optim.weight_decay": 1e-5, "batch_size": 32, "schedule.name": "step", "schedule.gamma": 0.5,
                 "schedule.step_size_steps": 60 * 60000 // 32, "max_steps": 400 * 60000 // 32,
                 "data.input_size": [192, 256]}),
    "openpose-cmu": ("ZheC/Realtime_Multi-Person_Pose_Estimation training/example_proto/pose_solver.prototxt + "
                     "CPMData layer (README)",
                     {"task": "openpose", "model.name": "openpose-cmu-coco", "optim.name": "sgd",
                      "optim.lr": 4e-5, "optim.momentum": 0.9, "optim.weight_decay": 5e-4, "schedule.name": "step",
                      "schedule.gamma": 0.333, "schedule.step_size_steps": 136106, "max_steps": 600000,
                      "batch_size": 10, "data.input_size": [368, 368], "data.options.scale_range": [0.5, 1.1],
                      "data.options.max_rotation": 40.0}),
}


def _get(cfg, dotted: str):
    obj = cfg
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def test_every_recipe_is_covered():
    assert sorted(p.stem for p in RECIPES.glob("*.yaml")) == sorted(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_recipe_parses_and_carries_the_published_values(name):
    source, values = PUBLISHED[name]
    path = RECIPES / f"{name}.yaml"
    header = path.read_text().split("\ntask:")[0]
    assert source.split()[0].split("/")[-1] in header or source.split()[0] in header, f"{name}: header cites {source}"
    cfg = load_config(path)
    for key, want in values.items():
        got = _get(cfg, key)
        if isinstance(want, float):
            assert math.isclose(float(got), want, rel_tol=1e-12), f"{name}: {key} = {got!r}, published {want!r}"
        else:
            got = list(got) if isinstance(got, tuple) else got
            assert got == want, f"{name}: {key} = {got!r}, published {want!r}"


def test_rtmpose_schedule_matches_mmengine_chain():
    """RTMPose: LinearLR(1e-5, 1000 iters) then flat, cosine from epoch 210 to 0.05 at 420."""
    cfg = load_config(RECIPES / "rtmpose-m.yaml")
    spe = 58  # COCO train2017: 149813 person instances / 2048 per step -> 73; any value shows the shape
    f = [lr_factor(s, cfg.schedule, 420 * spe, spe) for s in (0, 500, 1000, 210 * spe, 315 * spe, 420 * spe - 1)]
    assert f[0] == pytest.approx(1e-5) and f[1] == pytest.approx(1e-5 + (1 - 1e-5) * 0.5)
    assert f[2] == 1.0 and f[3] == 1.0
    assert f[4] == pytest.approx(0.05 + 0.95 * 0.5) and f[5] == pytest.approx(0.05, abs=1e-4)


def test_rtmo_schedule_matches_published_phases():
    cfg = load_config(RECIPES / "rtmo-s.yaml")
    spe = 100
    f = lambda e: lr_factor(int(e * spe), cfg.schedule, 600 * spe, spe)  # noqa: E731
    assert f(0) == pytest.approx((1 / 500) ** 2) and f(2.5) == pytest.approx(0.25, rel=0.01)  # quadratic warm-up
    assert f(5) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 5 / 280)), rel=1e-6)
    assert f(279.99) == pytest.approx(0.05, rel=1e-3)          # 2e-4 at the first cosine's end
    assert f(280) == 0.125 and f(280.5) == 0.125               # ConstantLR x2.5: 5e-4
    assert f(430.5) == pytest.approx(0.0875, rel=1e-3)         # halfway back down
    assert f(580) == 0.05 and f(599.99) == 0.05                # constant 2e-4 to the end


def test_vitpose_layer_decay_groups_match_mmpose():
    """LayerDecayOptimWrapperConstructor: lr scale 0.75 ** (13 - layer id); no decay on 1-D, biases, pos_embed."""
    from posekit.models.presets import build_model
    from posekit.training.trainer import param_groups

    cfg = load_config(RECIPES / "vitpose-b.yaml")
    model = build_model("vitpose-b", drop_path_rate=0.3)
    groups = param_groups(model, cfg.optim)
    scale = {n: g["lr"] / cfg.optim.lr for g in groups for n in g["names"]}
    wd = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert scale["backbone.pos_embed"] == pytest.approx(0.75 ** 13)
    assert scale["backbone.patch_embed.projection.weight"] == pytest.approx(0.75 ** 13)
    assert scale["backbone.layers.0.attn.qkv.weight"] == pytest.approx(0.75 ** 12)
    assert scale["backbone.layers.11.attn.qkv.weight"] == pytest.approx(0.75)
    assert scale["head.final_layer.weight"] == 1.0 and scale["backbone.ln1.weight"] == 1.0
    assert wd["backbone.pos_embed"] == 0.0 and wd["backbone.layers.3.attn.qkv.bias"] == 0.0
    assert wd["backbone.layers.3.attn.qkv.weight"] == 0.1
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_rtmo_encoder_lr_mult():
    from posekit.models.presets import build_model
    from posekit.training.trainer import param_groups

    cfg = load_config(RECIPES / "rtmo-s.yaml")
    groups = param_groups(build_model("rtmo-s"), cfg.optim)
    scale = {n: g["lr"] / cfg.optim.lr for g in groups for n in g["names"]}
    enc = [n for n in scale if n.startswith("neck.encoder")]
    assert enc and all(scale[n] == 0.05 for n in enc)
    assert all(scale[n] == 1.0 for n in scale if not n.startswith("neck.encoder"))


# ------------------------------------------------------------------------------------------------ 2 steps on COCO
#: recipes run in the default suite (full published input sizes; ~35 s together on an idle 2-core machine); the
#: rest are ``slow`` (Hourglass-52 14 s, CPM 19 s, RTMO-m 11 s, RTMO-l 23 s, OpenPose-CMU at 368x368 34 s)
DEFAULT_RUNS = ("rtmpose-t", "rtmpose-s", "rtmpose-m", "rtmpose-l", "rtmo-s", "simplebaseline-r50", "vitpose-b",
                "cpn-r50")


def _two_steps(name, tmp_path, shared):
    from posekit.training.trainer import train

    mini = shared("data", "coco-mini-train")
    # only data paths (the COCO layout -> ../shared), batch, steps, loader processes and the CPU change:
    over = [f"data.train_ann={mini / 'person_keypoints.json'}", f"data.train_images={mini / 'images'}",
            "data.val_ann=", "batch_size=2", "max_steps=2", "workers=0", "device=cpu", f"out_dir={tmp_path}",
            "progress=false", "log_every_steps=1"]
    cfg = load_config(RECIPES / f"{name}.yaml", over)
    out = train(cfg)
    assert out["step"] == 2
    with open(tmp_path / "scalars.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["tag"] == "train/loss"]
    assert [int(r["step"]) for r in rows] == [1, 2]
    losses = [float(r["value"]) for r in rows]
    assert all(math.isfinite(v) and v > 0 for v in losses), losses
    if cfg.task == "rtmo":  # BatchSyncRandomResize: step 1 at the loader's 640, step 2 at the (seed, step) draw
        from posekit.training.tasks.rtmo import BatchSyncRandomResize

        with open(tmp_path / "scalars.csv") as f:
            sizes = [float(r["value"]) for r in csv.DictReader(f) if r["tag"] == "train/input_h"]
        want = BatchSyncRandomResize((480, 800), 32, 1, seed=cfg.seed).size_at(1, (640, 640))[1]
        assert sizes == [640.0, want] and want % 32 == 0 and 480 <= want <= 800
    ckpt = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    return losses


@pytest.mark.parametrize("name", DEFAULT_RUNS)
def test_recipe_two_steps_on_coco(name, tmp_path, shared):
    _two_steps(name, tmp_path, shared)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(PUBLISHED) - set(DEFAULT_RUNS)))
def test_recipe_two_steps_on_coco_slow(name, tmp_path, shared):
    _two_steps(name, tmp_path, shared)


# ------------------------------------------------------------------------------------------------ augmentations
def _sample(img):
    return {"image": img, "keypoints": np.zeros((1, 17, 3), np.float32), "boxes": np.zeros((1, 4), np.float32),
            "areas": np.ones(1, np.float32), "warp": np.eye(2, 3)}


def test_coarse_dropout_hole_sizes_and_probability():
    from posekit.data.transforms import CoarseDropout

    img = np.full((200, 100, 3), 200, np.uint8)
    t = CoarseDropout(prob=1.0)
    for seed in range(20):
        out = t(_sample(img), np.random.default_rng(seed))["image"]
        hole = (out == 0).all(-1)
        ys, xs = np.nonzero(hole)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert hole.sum() == h * w                     # one rectangle
        assert 40 <= h <= 80 and 20 <= w <= 40          # 0.2-0.4 of H=200 and W=100
    half = CoarseDropout(prob=0.5)
    hit = sum((half(_sample(img), np.random.default_rng(s))["image"] == 0).any() for s in range(400))
    assert 160 < hit < 240


def test_hsv_and_blur():
    from posekit.data.transforms import HSVRandomAug, RandomBlur

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)
    changed = 0
    for s in range(50):
        out = HSVRandomAug()(_sample(img), np.random.default_rng(s))["image"]
        assert out.shape == img.shape and out.dtype == np.uint8
        changed += not np.array_equal(out, img)
    assert 30 < changed < 50  # all three gains are off with probability 1/8 (plus rounding to 0)
    blurred = RandomBlur(prob=1.0)(_sample(img), np.random.default_rng(1))["image"]
    assert blurred.std() < 0.8 * img.std()  # a box blur of noise lowers its spread
    med = RandomBlur(prob=1.0, median=True)(_sample(img), np.random.default_rng(1))["image"]
    assert med.std() < 0.8 * img.std()
    same = RandomBlur(prob=0.0)(_sample(img), np.random.default_rng(1))["image"]
    assert np.array_equal(same, img)


def test_second_phase_switches_with_the_epoch(shared):
    """data.options.stage2 takes over from stage2_epoch (PipelineSwitchHook): no coarse dropout after the switch."""
    from posekit.training.tasks.topdown import TopDownTask

    mini = shared("data", "coco-mini-train")
    cfg = load_config(RECIPES / "rtmpose-t.yaml", [
        f"data.train_ann={mini / 'person_keypoints.json'}", f"data.train_images={mini / 'images'}", "data.val_ann=",
        "data.options.stage2_epoch=3", "data.options.stage2.coarse_dropout_prob=0.0"])
    task = TopDownTask()
    train, _ = task.build_datasets(cfg)
    names = lambda: [type(t).__name__ for t in train.transform.active.transforms]  # noqa: E731
    train.set_epoch(2)
    assert "CoarseDropout" in names()
    train.set_epoch(3)
    assert "CoarseDropout" not in names()
    rot = [t for t in train.transform.active.transforms if type(t).__name__ == "RandomBBoxTransform"][0]
    assert rot.rot_factor == 60.0 and rot.scale_range == (0.75, 1.25) and rot.shift_factor == 0.0
