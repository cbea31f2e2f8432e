"""The training engine: config loading/overrides, schedules, EMA, checkpoints, RNG states, scalar logs, the loop."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from posekit.data.synthetic import make_synthetic_dataset
from posekit.training.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from posekit.training.config import (ScheduleConfig, TrainConfig, apply_overrides, config_from_dict,
                                     config_to_dict, load_config, save_config)
from posekit.training.ema import ModelEMA
from posekit.training.logging import ScalarLogger, read_csv_scalars, read_event_scalars
from posekit.training.schedules import LRSchedule, lr_factor
from posekit.training.tasks import TASKS, get_task
from posekit.training.trainer import EpochSeededDataset, Trainer, build_optimizer


# ------------------------------------------------------------------------------------------------ config
def test_yaml_round_trip_and_typed_values(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim: {lr: 1e-3, betas: ['0.8', 0.99]}\nepochs: 4.0\nema: {enabled: 'yes'}\n"
                 "model: {name: tiny, overrides: {width: 4}}\n")
    cfg = load_config(p)
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)  # PyYAML reads "1e-3" as a string
    assert cfg.optim.betas == [0.8, 0.99] and cfg.epochs == 4 and cfg.ema.enabled is True
    assert cfg.model.overrides == {"width": 4} and cfg.schedule == ScheduleConfig()
    back = load_config(save_config(cfg, tmp_path / "out.yaml"))
    assert back == cfg and config_to_dict(back) == config_to_dict(cfg)


def test_unknown_keys_and_bad_values_are_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim: {lr: 0.1, lr_decay: 2}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*unknown config key 'optim\.lr_decay'"):
        load_config(p)
    p.write_text("epochs: 2.5\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: epochs: expected an integer, got 2\.5"):
        load_config(p)
    p.write_text("optim: {name: rmsprop}\n")
    with pytest.raises(ValueError, match=r"'optim\.name' must be 'adamw', 'adam' or 'sgd', got 'rmsprop'"):
        load_config(p)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_set_overrides_are_typed_by_the_field():
    cfg = apply_overrides(TrainConfig(), ["optim.lr=2e-4", "batch_size=32", "ema.enabled=true",
                                          "data.input_size=[48, 64]", "model.overrides.width=12",
                                          "model.overrides.block.depth=3", "out_dir=runs/x"])
    assert cfg.optim.lr == 2e-4 and cfg.batch_size == 32 and cfg.ema.enabled is True
    assert cfg.data.input_size == [48, 64] and cfg.model.overrides == {"width": 12, "block": {"depth": 3}}
    assert cfg.out_dir == "runs/x"
    with pytest.raises(ValueError, match="unknown config key 'optim.momentun'"):
        apply_overrides(cfg, ["optim.momentun=0.8"])
    with pytest.raises(ValueError, match="batch_size: expected an integer"):
        apply_overrides(cfg, ["batch_size=big"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(cfg, ["batch_size"])
    with pytest.raises(ValueError, match="is a section"):
        apply_overrides(cfg, ["optim=3"])


# ------------------------------------------------------------------------------------------------ schedules
def test_warmup_cosine_and_step_schedules():
    cos = ScheduleConfig(name="cosine", warmup_steps=10, warmup_start_factor=0.1, min_lr_ratio=0.05)
    assert lr_factor(0, cos, 110, 10) == pytest.approx(0.1)
    assert lr_factor(5, cos, 110, 10) == pytest.approx(0.55)
    assert lr_factor(10, cos, 110, 10) == pytest.approx(1.0)
    assert lr_factor(60, cos, 110, 10) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 50 / 99)))
    assert lr_factor(109, cos, 110, 10) == pytest.approx(0.05)
    step = ScheduleConfig(name="step", milestones=[2, 4], gamma=0.5)
    assert [lr_factor(s, step, 60, 10) for s in (0, 19, 20, 39, 40, 59)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert lr_factor(7, ScheduleConfig(name="constant", warmup_steps=3), 10, 5) == 1.0

    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, config_from_dict({"optim": {"lr": 0.2}}).optim)
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1]  # weight decayed, bias not
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    sch = LRSchedule(opt, cos, 110, 10)
    assert sch.apply(5) == pytest.approx(0.2 * 0.55)
    sch2 = LRSchedule(opt, cos, 110, 10)
    sch2.load_state_dict(sch.state_dict())
    assert sch2.step == 5 and sch2.base_lrs == [0.2, 0.2]


# ------------------------------------------------------------------------------------------------ EMA
def test_ema_follows_the_formula():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    ema = ModelEMA(model, decay=0.9, warmup_steps=2.0)
    e = model[0].weight.detach().clone()
    for n in range(1, 4):
        with torch.no_grad():
            model[0].weight.add_(0.1 * n)
        model(torch.randn(5, 4))  # changes BatchNorm's running stats and num_batches_tracked
        d = 0.9 * (1 - math.exp(-n / 2.0))
        assert ema.current_decay() == pytest.approx(d)
        ema.update(model)
        e = d * e + (1 - d) * model[0].weight.detach()
        assert torch.allclose(ema.module[0].weight, e, atol=1e-7)
    assert int(ema.module[1].num_batches_tracked) == 3 and ema.updates == 3
    assert not any(p.requires_grad for p in ema.module.parameters())


# ------------------------------------------------------------------------------------------------ checkpoints
def test_rng_state_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    path = save_checkpoint({"rng": [get_rng_state()], "x": torch.arange(3)}, tmp_path / "c.pt")
    want = (random.random(), np.random.normal(), np.random.rand(), torch.rand(2))
    set_rng_state(load_checkpoint(path)["rng"][0])
    got = (random.random(), np.random.normal(), np.random.rand(), torch.rand(2))
    assert want[:3] == got[:3] and torch.equal(want[3], got[3])
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # the temporary file was renamed away


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.pt"):
        load_checkpoint(bad)
    torch.save({"obj": ScheduleConfig()}, tmp_path / "pickled.pt")  # a pickled object: refused by weights_only
    with pytest.raises(RuntimeError, match="pickled.pt"):
        load_checkpoint(tmp_path / "pickled.pt")


def test_epoch_seeded_dataset_is_per_sample_and_leaves_the_main_rng_alone():
    class Draw:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return (random.random(), float(np.random.rand()), float(torch.rand(())))

    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = EpochSeededDataset(Draw(), seed=7, epoch=1)
    assert a[3] == a[3] and a[3] != a[2]
    assert a[3] != EpochSeededDataset(Draw(), seed=7, epoch=2)[3]
    assert torch.equal(torch.get_rng_state(), before)


# ------------------------------------------------------------------------------------------------ scalar logs
def test_scalar_logger_writes_tensorboard_events(tmp_path):
    log = ScalarLogger(tmp_path)
    log.log({"train/loss": 0.25, "val/AP": 0.5}, step=7, epoch=0)
    log.log({"train/loss": float("nan")}, step=8, epoch=0)  # non-finite values are skipped in TensorBoard
    log.log({"train/loss": 0.125}, step=300, epoch=1)
    log.close()
    assert read_event_scalars(tmp_path / "tb") == [(7, "train/loss", 0.25), (7, "val/AP", 0.5),
                                                   (300, "train/loss", 0.125)]
    assert [r["tag"] for r in read_csv_scalars(tmp_path / "scalars.csv")] == ["train/loss", "val/AP", "train/loss",
                                                                               "train/loss"]


def test_scalar_logger_csv_drops_rows_past_the_resume_step(tmp_path):
    log = ScalarLogger(tmp_path, tensorboard=False)
    for s in range(1, 6):
        log.log({"train/loss": 1.0 / s}, s, 0)
    log.close()
    ScalarLogger(tmp_path, resume_step=3, tensorboard=False).close()
    rows = read_csv_scalars(tmp_path / "scalars.csv")
    assert [(int(r["step"]), float(r["value"])) for r in rows] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    ScalarLogger(tmp_path, enabled=False).log({"x": 1.0}, 9, 0)  # a rank other than 0 writes nothing
    assert len(read_csv_scalars(tmp_path / "scalars.csv")) == 3


# ------------------------------------------------------------------------------------------------ the loop
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(root / "train", 40, size=(96, 96), seed=1, min_people=1, max_people=2)
    make_synthetic_dataset(root / "val", 8, size=(96, 96), seed=2, min_people=1, max_people=2)
    return root


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-exact comparisons and no oversubscription of the 2 cores
    yield
    torch.set_num_threads(n)


def _cfg(root: Path, out: Path, **kw) -> TrainConfig:
    d = {
        "task": "regression",
        "data": {"train_ann": str(root / "train/person_keypoints.json"),
                 "train_images": str(root / "train/images"),
                 "val_ann": str(root / "val/person_keypoints.json"), "val_images": str(root / "val/images"),
                 "input_size": [32, 32]},
        "model": {"name": "tiny", "overrides": {"width": 8}},
        "optim": {"lr": 3e-3},
        "batch_size": 8, "epochs": 2, "progress": False, "log_every_steps": 1, "out_dir": str(out),
    }
    for k, v in kw.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and k in d else v
    return config_from_dict(d)


def _rows(out: Path, tag: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r["value"])) for r in read_csv_scalars(out / "scalars.csv") if r["tag"] == tag]


def test_training_run_logs_evaluates_and_saves(data, tmp_path, one_thread):
    cfg = _cfg(data, tmp_path / "run", epochs=4, ema={"enabled": True, "decay": 0.5, "warmup_steps": 0},
               schedule={"name": "cosine", "warmup_steps": 3}, optim={"grad_clip": 5.0, "lr": 1e-2},
               data={"options": {"augment": False}},
               eval={"every_epochs": 2})
    out = Trainer(cfg).fit()
    spe = out["step"] // 4
    assert out["step"] == 4 * spe and spe >= 5
    loss = _rows(tmp_path / "run", "train/loss")
    assert [s for s, _ in loss] == list(range(1, out["step"] + 1))
    first, last = np.mean([v for _, v in loss[:3]]), np.mean([v for _, v in loss[-3:]])
    assert last < 0.8 * first, (first, last)  # it learns (measured: 0.113 -> 0.081)
    lrs = _rows(tmp_path / "run", "train/lr")  # the lr logged at step s is the one used by step s (index s-1)
    assert all(v == pytest.approx(1e-2 * lr_factor(s - 1, cfg.schedule, out["step"], spe)) for s, v in lrs)
    assert lrs[-1][1] == pytest.approx(1e-4)
    # evaluated after epochs 2 and 4; best.pt holds the EMA weights that scored the best AP
    aps = _rows(tmp_path / "run", "val/AP")
    assert [s for s, _ in aps] == [2 * spe, 4 * spe]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["best"]["value"] == max(v for _, v in aps) == out["best"]["value"]
    task = get_task("regression")
    _, val = task.build_datasets(cfg)
    net = task.build_model(cfg)
    net.load_state_dict(best["ema"]["module"])
    assert task.evaluate(net, val)["AP"] == pytest.approx(best["best"]["value"], abs=1e-6)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["step"] == out["step"] and last["ema"]["updates"] == out["step"] and last["config"] == config_to_dict(cfg)
    assert len(list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))) == 1
    assert load_config(tmp_path / "run" / "config.yaml") == cfg


def test_worker_count_does_not_change_the_result(data, tmp_path, one_thread):
    kw = dict(max_steps=4, eval={"every_epochs": 0}, model={"overrides": {"width": 8, "dropout": 0.3}},
              optim={"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
              schedule={"name": "step", "milestones": [1], "gamma": 0.1})
    a = Trainer(_cfg(data, tmp_path / "w0", workers=0, **kw)).fit()
    b = Trainer(_cfg(data, tmp_path / "w2", workers=2, **kw)).fit()
    assert a["step"] == b["step"] == 4
    ma, mb = load_checkpoint(tmp_path / "w0" / "last.pt")["model"], load_checkpoint(tmp_path / "w2" / "last.pt")["model"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    Trainer(_cfg(data, tmp_path / "s1", workers=0, seed=1, **kw)).fit()
    mc = load_checkpoint(tmp_path / "s1" / "last.pt")["model"]
    assert not torch.equal(ma["head.weight"], mc["head.weight"])  # another seed is another run


def test_tasks_registry():
    assert {"regression", "openpose"} <= set(TASKS)
    with pytest.raises(KeyError, match="unknown training task 'nope'.*regression"):
        get_task("nope")


def test_cli_train_errors_and_print_config(data, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"task": "regression", "optim": {"lrr": 1}}))
    r = subprocess.run([sys.executable, "-m", "posekit.cli", "train", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1 and "unknown config key 'optim.lrr'" in r.stderr and str(cfg) in r.stderr
    cfg.write_text(yaml.safe_dump({"task": "regression"}))
    r = subprocess.run([sys.executable, "-m", "posekit.cli", "train", str(cfg), "--set", "optim.lr=0.5",
                        "--print-config"], capture_output=True, text=True)
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["optim"]["lr"] == 0.5
