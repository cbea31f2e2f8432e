"""RTMO training: losses against their formulas, SimOTA assignment on a constructed case, the task's data/loss
plumbing and loss schedule, and a short CPU run that learns (AP on its images, MLE falls, sigma shrinks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from posekit.losses.rtmo import (RTMOCriterion, RTMOLossSchedule, RTMOLossWeights, SimOTAAssigner, box_iou_torch,
                                 iou_loss, mle_cc_loss, mle_target_heatmaps, mmpose_loss_schedule, oks_loss, pose_oks,
                                 varifocal_loss)
from posekit.models.rtmo import build_rtmo

TINY = dict(widen_factor=0.125, neck_widen_factor=0.125, hidden_dim=32, num_heads=2, feedforward_channels=64,
            neck_out_channels=32, head_in_channels=128, head_widen_factor=0.125, cls_feat_channels=128,
            pose_vec_channels=32, dcc_feat_channels=16, num_bins=(24, 32), spe_channels=16, gau_s=16)


def test_mle_loss_is_the_laplace_likelihood_under_the_bins():
    torch.manual_seed(0)
    dcc = build_rtmo("rtmo-s", **TINY).head.dcc
    n, k = 3, 17
    cs = torch.tensor([[50.0, 60.0, 40.0, 80.0], [20.0, 30.0, 10.0, 12.0], [100.0, 90.0, 64.0, 64.0]])
    mu = cs[:, None, :2] + (torch.rand(n, k, 2) - 0.5) * cs[:, None, 2:] * 0.8
    sig = torch.rand(n, k) * 0.1 + 0.01
    areas = torch.tensor([900.0, 0.25, 2500.0])  # the middle one is clamped to s = 1
    px = torch.softmax(torch.randn(n, k, 24), -1)
    py = torch.softmax(torch.randn(n, k, 32), -1)
    vis = (torch.rand(n, k) > 0.3).float()
    tx, ty = mle_target_heatmaps(dcc, mu, cs, sig, areas)
    got = mle_cc_loss((px, py), (tx, ty), vis)
    # the formula of the issue, in float64: -log(prod_axis sum_i p(b_i) (1/sigma) exp(-|b_i - mu| / (2 sigma s)))
    xb = (torch.linspace(-0.5, 0.5, 24)[None] * cs[:, 2:3] + cs[:, 0:1]).double()
    yb = (torch.linspace(-0.5, 0.5, 32)[None] * cs[:, 3:4] + cs[:, 1:2]).double()
    s = areas.double().sqrt().clamp(min=1)[:, None, None]
    sg = sig.double()[..., None]
    lx = (px.double() * torch.exp(-(mu[..., :1].double() - xb[:, None]).abs() / (2 * sg * s)) / sg).sum(-1)
    ly = (py.double() * torch.exp(-(mu[..., 1:].double() - yb[:, None]).abs() / (2 * sg * s)) / sg).sum(-1)
    want = -torch.log(lx * ly + 1e-4) * vis
    np.testing.assert_allclose(got.double().numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    assert float(got[vis == 0].abs().max()) == 0.0
    # a sharper sigma is rewarded when the distribution sits on the annotation
    on = torch.zeros(1, 1, 24)
    on[0, 0, 12] = 1.0
    c1 = torch.tensor([[0.0, 0.0, 23.0, 31.0]])
    mu1 = torch.tensor([[[0.5, 0.0]]])
    losses = [float(mle_cc_loss((on, torch.full((1, 1, 32), 1 / 32)),
                                mle_target_heatmaps(dcc, mu1, c1, torch.tensor([[sg_]]), torch.tensor([400.0]))))
              for sg_ in (0.1, 0.03, 0.01)]
    assert losses[0] > losses[1] > losses[2]


def test_varifocal_iou_and_oks_losses():
    x = torch.tensor([-3.0, 0.0, 2.0, 12.0])
    t = torch.tensor([0.0, 0.7, 0.0, 0.9])
    p = torch.sigmoid(x.clamp(-10, 10))
    bce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    w = torch.where(t > 1e-4, t, 0.75 * torch.sigmoid(x) ** 2)
    np.testing.assert_allclose(varifocal_loss(x, t).numpy(), (bce * w).numpy(), rtol=1e-4)
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    np.testing.assert_allclose(box_iou_torch(a, b, aligned=True).numpy(), [1 / 3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(iou_loss(a, b).numpy(), [1 - 1 / 9, 0.0], atol=1e-6)
    sig = torch.full((2,), 0.1)
    pred = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])
    gt = torch.zeros(1, 2, 2)
    # keypoint 1 is 5 px off, s = 10, sigma 0.1: exp(-25 / (2 * 100 * 0.04)) ; weights / K
    want = 1 - (1 + math.exp(-25 / 8)) / 2
    assert float(oks_loss(pred, gt, torch.ones(1, 2), torch.tensor([100.0]), sig)) == pytest.approx(want, rel=1e-6)
    assert float(pose_oks(pred, gt, torch.tensor([[0.0, 1.0]]), torch.tensor([100.0]), sig)) == \
        pytest.approx(math.exp(-25 / 8), rel=1e-6)


def test_simota_dynamic_k_on_a_constructed_case():
    # a 10 x 10 grid of stride 16 (160 px); one person at the left, one at the right
    ys, xs = torch.meshgrid(torch.arange(10) * 16 + 7.5, torch.arange(10) * 16 + 7.5, indexing="ij")
    priors = torch.stack((xs.reshape(-1), ys.reshape(-1)), -1)
    strides = torch.full((100,), 16.0)
    k = 4
    gt_boxes = torch.tensor([[10.0, 10.0, 70.0, 150.0], [90.0, 10.0, 150.0, 150.0]])
    gt_kpts = torch.tensor([[[40.0, 30.0], [40.0, 60.0], [40.0, 90.0], [40.0, 120.0]],
                            [[120.0, 30.0], [120.0, 60.0], [120.0, 90.0], [120.0, 120.0]]])
    gt_vis = torch.ones(2, k)
    areas = torch.tensor([60.0 * 140, 60.0 * 140])
    sig = torch.full((k,), 0.08)
    # predictions: every prior predicts the person whose box contains it, keypoints off by a prior-specific amount
    owner = (priors[:, 0] > 80).long()
    err = (priors - gt_kpts[owner].mean(1)).norm(dim=-1, keepdim=True) / 10.0
    kpts = gt_kpts[owner] + err[:, None, :] * torch.tensor([1.0, 0.0])
    boxes = gt_boxes[owner].clone()
    scores = torch.full((100,), 0.5)
    a = SimOTAAssigner()
    res = a.assign(priors, strides, scores, boxes, kpts, torch.ones(100, k), gt_boxes, gt_kpts, gt_vis, areas, sig)
    oks = pose_oks(kpts[:, None], gt_kpts[None], gt_vis[None], areas[None], sig)  # (P, G)
    for g in range(2):
        mine = (res["gt_inds"] == g).nonzero().squeeze(1)
        valid, _ = a.candidates(priors, strides, gt_boxes, gt_kpts, gt_vis)
        kk = int(oks[valid, g].topk(10).values.sum())
        assert len(mine) == max(1, kk) >= 2  # dynamic k from the top-10 OKS
        # the chosen priors are the most accurate ones inside the box and near the keypoint centre
        assert set(mine.tolist()) == set(oks[:, g].argsort(descending=True)[:len(mine)].tolist())
        np.testing.assert_allclose(res["overlaps"][mine].numpy(), oks[mine, g].numpy(), rtol=1e-6)
    assert int((res["gt_inds"] >= 0).sum()) < 100
    empty = a.assign(priors, strides, scores, boxes, kpts, torch.ones(100, k), gt_boxes[:0], gt_kpts[:0],
                     gt_vis[:0], areas[:0], sig)
    assert bool((empty["gt_inds"] == -1).all())


def test_schedule_and_weights_are_config_values():
    s = RTMOLossSchedule(switch_epoch=280, switch={"proxy_target_cc": True, "mle": 5.0, "oks": 10.0})
    assert s.at(279) == RTMOLossWeights() and s.at(279).oks == 30.0 and s.at(279).bbox == 5.0
    assert s.at(280).proxy_target_cc and s.at(280).mle == 5.0 and s.at(600).oks == 10.0 and s.at(280).cls == 1.0
    with pytest.raises(ValueError, match="unknown RTMO loss weight"):
        RTMOLossWeights.from_dict({"mle_weight": 1.0})
    with pytest.raises(ValueError, match="must be a number"):
        RTMOLossWeights.from_dict({"oks": -1})
    # MMPose's 600-epoch recipe: RTMOModeSwitchHook at 280, YOLOXPoseModeSwitchHook(num_last_epochs=20) fires
    # when epoch + 1 == 600 - 20, i.e. the auxiliary box loss is on from epoch 579
    m = mmpose_loss_schedule(600)
    assert m.at(279) == RTMOLossWeights() and m.at(280) == s.at(280) and m.at(578).bbox_aux == 0.0
    assert m.at(579) == s.at(280).replace(bbox_aux=1.0) and m.at(599).bbox_aux == 1.0


def test_task_loss_schedule_defaults():
    """The official presets train with MMPose's schedule unless told otherwise; other models never switch."""
    from types import SimpleNamespace

    from posekit.training.tasks.rtmo import RTMOTask

    def sched(name, epochs=600, **opts):
        task = RTMOTask()
        task._task_options(SimpleNamespace(task_options=opts, model=SimpleNamespace(name=name), epochs=epochs))
        return task.schedule

    assert sched("rtmo-s") == mmpose_loss_schedule(600)
    assert sched("rtmo-l", epochs=300).aux_epoch == 279 and sched("rtmo-t").switch_epoch == 280
    assert sched("my-rtmo").switch_epoch is None and sched("my-rtmo").aux_epoch is None
    custom = sched("rtmo-s", switch_epoch=None, aux_epoch=10, aux={"bbox_aux": 2.0})
    assert custom.at(599) == RTMOLossWeights(bbox_aux=2.0) and custom.at(9) == RTMOLossWeights()
    with pytest.raises(ValueError, match="aux_epoch"):
        sched("rtmo-s", aux_epoch=-1)
    with pytest.raises(ValueError, match="task_options.aux"):
        sched("rtmo-s", aux={"l1": 1.0})


def test_auxiliary_box_loss_is_l1_on_the_raw_deltas():
    torch.manual_seed(0)
    model = build_rtmo("rtmo-s", **TINY).train()
    x = torch.rand(2, 3, 160, 160) * 255
    gts = [{"boxes": torch.tensor([[20.0, 30.0, 90.0, 150.0]]), "keypoints": torch.rand(1, 17, 2) * 60 + 30,
            "visible": torch.ones(1, 17), "areas": torch.tensor([5000.0])} for _ in range(2)]
    raw = model(x)
    crit = RTMOCriterion(model.head)
    det = {}
    out = crit(raw, gts, RTMOLossWeights(bbox_aux=2.0), details=det)
    base = crit(raw, gts, RTMOLossWeights())
    assert "loss_bbox_aux" not in base
    t = det["targets"]
    pos = t["pos"]
    # the targets are the deltas that decode to the ground-truth box at each positive's prior
    boxes = model.head.decode_boxes(det["bbox_aux_targets"], t["prior_xy"], t["prior_stride"])
    np.testing.assert_allclose(boxes.detach().numpy(), t["boxes"].numpy(), rtol=1e-5, atol=1e-3)
    deltas = model.head.flatten_levels(raw["bbox_preds"]).reshape(-1, 4)[pos]
    want = (deltas - det["bbox_aux_targets"]).abs().sum() / len(pos)
    assert float(out["loss_bbox_aux"].detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    assert float(out["loss"].detach()) == pytest.approx(float(base["loss"].detach()) + 2.0 * float(want.detach()),
                                                         rel=1e-5)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from posekit.training.tasks.openpose import make_synthetic_splits

    return make_synthetic_splits(tmp_path_factory.mktemp("rtmo_synth"), num_train=24, num_val=4, size=(160, 160),
                                 min_head_px=12, max_people=2, val_inside_only=False)


def _cfg(data, out_dir, **top):
    from posekit.training.config import config_from_dict

    d = {"task": "rtmo", "model": {"name": "rtmo-s", "overrides": {k: list(v) if isinstance(v, tuple) else v
                                                                   for k, v in TINY.items()}},
         "data": {**data, "input_size": [160, 160], "options": {"mosaic_prob": 0.5, "mixup_prob": 0.3}},
         "optim": {"name": "adamw", "lr": 4e-3, "weight_decay": 0.0, "grad_clip": 10.0},
         "schedule": {"name": "constant", "warmup_steps": 0},
         "eval": {"every_epochs": 1000, "use_ema": False}, "checkpoint": {"save_best": False},
         "task_options": {"switch_epoch": 2, "switch": {"proxy_target_cc": True, "mle": 5.0, "oks": 10.0}},
         "seed": 0, "epochs": 1, "batch_size": 8, "workers": 0, "out_dir": str(out_dir), "device": "cpu",
         "progress": False, "log_every_steps": 1}
    d.update(top)
    return config_from_dict(d).validate()


def test_task_batch_loss_and_switch(synth, tmp_path):
    from posekit.training.tasks.rtmo import RTMOTask

    task = RTMOTask()
    cfg = _cfg(synth, tmp_path / "run")
    train, val = task.build_datasets(cfg)
    model = task.build_model(cfg)
    assert float(model.head.head_module.out_cls[0].bias[0]) == pytest.approx(-math.log(99), rel=1e-6)
    s0, s0b = train[0], train[0]
    np.testing.assert_array_equal(s0["image"], s0b["image"])  # reproducible per (seed, epoch, index)
    batch = task.collate([train[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 160, 160) and batch["image"].max() > 1  # raw 0..255 BGR
    t0 = batch["targets"][0]
    assert t0["keypoints"].shape[1:] == (17, 2) and t0["boxes"].shape[0] == t0["areas"].shape[0] >= 1
    model.train()
    loss, sc = task.compute_loss(model, batch)
    parts = sc["loss_cls"] + 5 * sc["loss_bbox"] + 30 * sc["loss_oks"] + sc["loss_vis"] + sc["loss_mle"]
    assert sc["num_pos"] > 0 and float(loss) == pytest.approx(parts, rel=1e-5) and sc["proxy_target_cc"] == 0.0
    loss.backward()
    assert model.head.dcc.sigma_fc[0].weight.grad.abs().sum() > 0  # sigma is learned through the MLE loss
    train.set_epoch(2)  # the official phase-2 change, from task_options
    loss2, sc2 = task.compute_loss(model, batch)
    assert sc2["proxy_target_cc"] == 1.0
    assert float(loss2) == pytest.approx(sc2["loss_cls"] + 5 * sc2["loss_bbox"] + 10 * sc2["loss_oks"]
                                         + sc2["loss_vis"] + 5 * sc2["loss_mle"], rel=1e-5)
    # no people: only the classification loss, every parameter still in the graph
    crit = RTMOCriterion(model.head)
    raw = model(batch["image"][:2])
    empty = {"boxes": torch.zeros(0, 4), "keypoints": torch.zeros(0, 17, 2), "visible": torch.zeros(0, 17),
             "areas": torch.zeros(0)}
    out = crit(raw, [empty, empty])
    assert float(out["num_pos"]) == 0 and float(out["loss"]) == pytest.approx(float(out["loss_cls"]), rel=1e-6)
    with pytest.raises(ValueError, match="unknown data.options"):
        cfg.data.options = {"mosiac_prob": 1.0}
        task.build_datasets(cfg)


def _overfit_run(tmp_path, size: int, steps: int, lr: float, seed: int = 0):
    """The whole training path (SimOTA, every loss, DCC decoding, evaluation) on 4 easy synthetic images of
    ``size`` x ``size`` (one front-facing person, heads scaled with the image), ``steps`` AdamW steps of the tiny
    model with one thread, evaluated on the same images. Returns ``(last_eval, mle, sigma_easy, oks_dcc)``, the
    series logged at every step (train/loss_mle, train/sigma_easy, train/oks_dcc)."""
    from posekit.training.logging import read_csv_scalars
    from posekit.training.tasks.openpose import make_synthetic_splits
    from posekit.training.tasks.rtmo import RTMOTask
    from posekit.training.trainer import train

    head = (17.5 * size / 160, 21.8 * size / 160)
    data = make_synthetic_splits(tmp_path / "data", num_train=4, num_val=1, size=(size, size), seed=seed,
                                 min_head_px=head[0], head_range=head, views="front", inside=True, background="plain",
                                 val_inside_only=False)
    data = {**data, "val_ann": data["train_ann"], "val_images": data["train_images"]}
    cfg = _cfg(data, tmp_path / "run", max_steps=steps, epochs=1, batch_size=4)
    cfg.data.input_size = [size, size]
    cfg.data.options = {"augment": False}
    cfg.task_options = {}
    cfg.optim.lr = lr
    cfg.schedule.name, cfg.schedule.warmup_steps = "cosine", 20
    cfg.eval.every_epochs = 1000
    res = train(cfg, task=RTMOTask())  # one torch thread (conftest)
    rows = read_csv_scalars(tmp_path / "run" / "scalars.csv")
    series = lambda tag: np.array([float(r["value"]) for r in rows if r["tag"] == tag])  # noqa: E731
    mle, sig, oks = series("train/loss_mle"), series("train/sigma_easy"), series("train/oks_dcc")
    assert len(mle) == len(sig) == steps and np.isfinite(mle).all()
    print(f"AP {res['last_eval']['AP']:.3f}; MLE {mle[:10].mean():.2f} -> {mle[-10:].mean():.2f}; sigma_easy "
          f"{sig[:5].mean():.4f} -> peak {sig.max():.4f} -> {sig[-10:].mean():.4f}; oks_dcc {oks[-10:].mean():.3f}")
    return res["last_eval"], mle, sig, oks


def test_short_overfit_run_learns(tmp_path):
    """The default-suite run: 200 steps at 128x128 (about a third of the slow run's cost). This is memorisation,
    not generalisation (the held-out runs below and docs/rtmo.md are that). Measured with data seeds 0 (the test's) /
    5: AP 0.763 / 0.389, MLE 1.70 -> -7.34 / 0.73 -> -7.24, sigma_easy 0.051 -> peak 0.099 -> 0.011 / 0.052 -> 0.092
    -> 0.011, oks_dcc 0.920 / 0.871. Before training AP is ~0."""
    ev, mle, sig, oks = _overfit_run(tmp_path, size=128, steps=200, lr=3e-3)
    assert np.mean(mle[-10:]) < np.mean(mle[:10]) - 3.0
    assert np.mean(sig[-10:]) < 0.5 * sig.max() and np.mean(sig[-10:]) < np.mean(sig[:5])
    assert np.mean(oks[-10:]) > 0.8
    assert ev["AP"] >= 0.25


@pytest.mark.slow
def test_overfit_run_reaches_ap_mle_falls_sigma_shrinks(tmp_path):
    """The longer memorisation run: 350 steps at 160x160. Measured AP 0.78 (this data seed) and 0.47 (seed 5);
    before training ~0. The MLE loss falls and the predicted sigma of the torso keypoints shrinks after its early
    rise."""
    ev, mle, sig, oks = _overfit_run(tmp_path, size=160, steps=350, lr=2e-3)
    assert np.mean(mle[-10:]) < np.mean(mle[:10]) - 3.0
    assert np.mean(sig[-10:]) < 0.5 * sig.max() and np.mean(sig[-10:]) < np.mean(sig[:5])
    assert np.mean(oks[-10:]) > 0.8
    assert ev["AP"] >= 0.4


# ------------------------------------------------------------------------------------------------ held-out run
STEPS = 1500  # configs/rtmo-nano-synth.yaml max_steps


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory):
    """The recipe of configs/rtmo-nano-synth.yaml trained once on 800 SYNTH_EASY images (one front-facing person,
    128x192): the backbone from the YOLOX-nano person detector in ../shared/weights, neck and head from scratch;
    evaluated on 30 held-out images. Measured numbers: docs/rtmo.md."""
    import importlib.util
    from pathlib import Path

    from conftest import shared_path

    spec = importlib.util.spec_from_file_location(
        "train_rtmo_synth", Path(__file__).resolve().parents[1] / "bench" / "train_rtmo_synth.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.BACKBONE_ONNX == shared_path(*bench.BACKBONE_ONNX.parts[-2:])  # skips only without ../shared
    tmp = tmp_path_factory.mktemp("rtmo_held_out")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine one thread is several times faster than two
    try:
        data = bench.make_data(tmp / "data", num_train=800, num_val=30, seed=12)
        r = bench.run_recipe(data, tmp / "run")
    finally:
        torch.set_num_threads(threads)
    r = {**r, **{k: np.array([x for _, x in r[k]]) for k in ("loss_mle", "sigma_easy", "oks_dcc", "iou")}}
    print(f"held-out ({r['num_val']} images) AP {r['before']['AP']:.3f} -> {r['after']['AP']:.3f} (AP50 "
          f"{r['after']['AP50']:.3f}) after {r['steps']} steps in {r['seconds']:.0f} s; MLE {r['loss_mle'][:10].mean():.2f} "
          f"-> {r['loss_mle'][-10:].mean():.2f}; sigma_easy {r['sigma_easy'][:5].mean():.4f} -> peak "
          f"{r['sigma_easy'].max():.4f} -> {r['sigma_easy'][-10:].mean():.4f}; positives: box IoU "
          f"{r['iou'][-10:].mean():.2f}, DCC OKS {r['oks_dcc'][-10:].mean():.2f}")
    return r


@pytest.mark.slow
def test_held_out_run_mle_falls_and_sigma_shrinks(held_out_run):
    """The logged half of the acceptance line: the MLE loss falls and the predicted sigma of the torso keypoints
    shrinks after its early rise."""
    r = held_out_run
    assert r["steps"] == STEPS and r["num_val"] == 30
    mle, sig = r["loss_mle"], r["sigma_easy"]
    assert np.isfinite(mle).all() and np.isfinite(sig).all()
    assert mle[-10:].mean() < mle[:10].mean() - 2.0  # measured -1.35 -> -5.28
    assert sig[-10:].mean() < 0.5 * sig.max()  # measured 0.095 -> peak 0.140 -> 0.014


@pytest.mark.slow
def test_held_out_run_reaches_ap(held_out_run):
    """The issue's bar: held-out AP from about 0 to >= 0.5 (measured 0.000 -> 0.534, AP50 0.957)."""
    r = held_out_run
    assert r["before"]["AP"] < 0.05
    assert r["after"]["AP"] >= 0.5, f"held-out AP {r['after']['AP']:.3f} after {r['steps']} steps"
