"""Training-side parity with MMPose (issue 14, top-down half): posekit's codecs, losses and gradients on the fixed
batches of ../shared/reference/mmpose-tiny-train, and ``posekit check-training-parity``."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import shared_path
from posekit.cli import main
from posekit.training.parity import (GRAD_RTOL, LOSS_RTOL, RTMO_NOT_CHECKED, TARGET_ATOL, all_passed,
                                     check_reference, check_topdown_folder, format_rows)

TOPDOWN = ["rtmpose", "simplebaseline-res50", "vitpose-classic", "cpm", "hourglass"]


@pytest.fixture(scope="module")
def rows():
    torch.set_num_threads(1)
    return check_reference(shared_path("reference", "mmpose-tiny-train"))


def _of(rows, model):
    return {r.term: r for r in rows if r.model == model}


def test_every_reference_folder_is_listed(rows):
    root = shared_path("reference", "mmpose-tiny-train")
    folders = {p.name for p in root.iterdir() if (p / "meta.json").is_file()}
    assert folders == set(TOPDOWN) | {"rtmo"}
    assert {r.model for r in rows} == folders


@pytest.mark.parametrize("name", TOPDOWN)
def test_targets_equal(rows, name):
    root = shared_path("reference", "mmpose-tiny-train", name)
    ref = torch.load(root / "targets.pt", weights_only=True)
    got = _of(rows, name)
    keys = {k.split(".", 1)[1] for k in ref}  # sample{b}.<key>
    for key in keys:
        r = got[f"targets.{key} (sum)"]
        assert r.passed, r
        assert r.tolerance == (0.0 if key == "keypoint_weights" else TARGET_ATOL)
        assert r.max_diff <= r.tolerance
    assert got["targets.keypoint_weights (sum)"].max_diff == 0.0


@pytest.mark.parametrize("name", TOPDOWN)
def test_every_loss_term(rows, name):
    root = shared_path("reference", "mmpose-tiny-train", name)
    ref = torch.load(root / "loss.pt", weights_only=True)
    got = _of(rows, name)
    terms = [k for k in ref if "loss" in k or k == "total"]
    assert "loss_kpt" in terms
    if name == "cpm":  # both stages against the same targets, summed
        assert {"stage0.loss_kpt", "stage1.loss_kpt"} <= set(terms)
    for k in terms:
        r = got[k]
        assert r.passed, r
        assert r.mmpose == pytest.approx(float(ref[k]), rel=1e-7)
        if not k.startswith("trainmode."):
            assert r.tolerance == LOSS_RTOL
    # what ``posekit train`` optimises for the published recipe is MMPose's loss too
    task = [r for t, r in got.items() if t.startswith("loss_kpt (posekit train")]
    assert len(task) == 1 and task[0].passed, task


@pytest.mark.parametrize("name", TOPDOWN)
def test_gradients(rows, name):
    root = shared_path("reference", "mmpose-tiny-train", name)
    meta = json.loads((root / "meta.json").read_text())
    grads = torch.load(root / "grads.pt", weights_only=True)
    got = _of(rows, name)
    assert got["grads.names"].passed and got["grads.params_without_grad"].passed
    assert got["grads.params_without_grad"].mmpose == len(meta["grads"]["params_without_grad"][""])
    tops = {k.split(".")[0] for k in grads}
    for top in tops:
        (r,) = [v for t, v in got.items() if t.startswith(f"grads.{top} ")]
        assert r.passed and r.max_diff <= GRAD_RTOL, r
        assert r.posekit == pytest.approx(meta["grads"]["grad_norm_per_top_module"][""][top], rel=1e-4)


def test_rtmo_rows_are_listed_not_checked(rows):
    rtmo = [r for r in rows if r.model == "rtmo"]
    assert rtmo and all(r.passed is None and r.status == RTMO_NOT_CHECKED for r in rtmo)
    assert {"phase0.total", "phase1.total", "phase2.total"} <= {r.term for r in rtmo}
    assert all_passed(rows)
    assert "not checked (RTMO" in format_rows(rtmo)


def test_wrong_sigma_is_reported():
    root = shared_path("reference", "mmpose-tiny-train", "simplebaseline-res50")
    got = {r.term: r for r in check_topdown_folder(root, codec_overrides={"sigma": 2.5}, trainmode=False)}
    assert not got["targets.heatmaps (sum)"].passed
    assert got["targets.heatmaps (sum)"].max_diff > 0.1
    assert not got["loss_kpt"].passed
    assert not all_passed(got.values())


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "rows.json"
    rc = main(["check-training-parity", str(shared_path("reference", "mmpose-tiny-train")), "--models",
               "cpm,rtmo", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "stage1.loss_kpt" in text and "not checked (RTMO: not implemented in this checker yet)" in text
    assert "FAIL" not in text
    data = json.loads(out.read_text())
    assert {d["model"] for d in data} == {"cpm", "rtmo"}
    assert all(d["passed"] for d in data if d["model"] == "cpm")


def _copy(tmp_path, name="vitpose-classic"):
    root = tmp_path / "mmpose-tiny-train"
    shutil.copytree(shared_path("reference", "mmpose-tiny-train", name), root / name)
    for p in (root / name).iterdir():
        p.chmod(0o644)
    return root, root / name


def test_cli_perturbed_target_fails(tmp_path, capsys):
    root, d = _copy(tmp_path)
    t = torch.load(d / "targets.pt", weights_only=True)
    t["sample1.heatmaps"][3, 10, 10] += 1e-4  # one heatmap cell
    torch.save(t, d / "targets.pt")
    fwd = str(shared_path("reference", "mmpose-tiny"))
    rc = main(["check-training-parity", str(root), "--forward", fwd, "--no-trainmode"])
    text = capsys.readouterr().out
    assert rc == 1
    (line,) = [x for x in text.splitlines() if "targets.heatmaps" in x]
    assert "FAIL" in line and "1.000e-04" in line
    # a gradient off by 1e-3 of its tensor's largest entry is caught too
    t["sample1.heatmaps"][3, 10, 10] -= 1e-4
    torch.save(t, d / "targets.pt")
    g = torch.load(d / "grads.pt", weights_only=True)
    g["head.final_layer.weight"].view(-1)[0] += 1e-3 * g["head.final_layer.weight"].abs().max()
    torch.save(g, d / "grads.pt")
    rc = main(["check-training-parity", str(root), "--forward", fwd, "--no-trainmode"])
    text = capsys.readouterr().out
    assert rc == 1
    (line,) = [x for x in text.splitlines() if "grads.head" in x]
    assert "FAIL" in line and "head.final_layer.weight" in line
    assert [x for x in text.splitlines() if "targets.heatmaps" in x][0].split()[-1] == "pass"


def test_cli_missing_and_malformed_files(tmp_path, capsys):
    root, d = _copy(tmp_path)
    fwd = str(shared_path("reference", "mmpose-tiny"))
    (d / "grads.pt").unlink()
    assert main(["check-training-parity", str(root), "--forward", fwd]) == 1
    err = capsys.readouterr().err
    assert "missing reference file" in err and "grads.pt" in err
    (d / "grads.pt").write_bytes(b"not a torch file")
    assert main(["check-training-parity", str(root), "--forward", fwd]) == 1
    err = capsys.readouterr().err
    assert "malformed reference file" in err and "grads.pt" in err
    (d / "meta.json").write_text("{")
    assert main(["check-training-parity", str(root), "--forward", fwd]) == 1
    assert "meta.json" in capsys.readouterr().err
    assert main(["check-training-parity", str(tmp_path / "nowhere")]) == 1
    assert "not found" in capsys.readouterr().err
    # the forward folder is looked for beside DIR: absent here
    shutil.rmtree(root)
    root, d = _copy(tmp_path)
    assert main(["check-training-parity", str(root)]) == 1
    err = capsys.readouterr().err
    assert "mmpose-tiny" in err and "meta.json" in err


def test_simcc_loss_norm_option():
    from posekit.training.tasks.topdown import TopDownTask

    g = torch.Generator().manual_seed(0)
    raw = {"pred_x": torch.randn(4, 17, 192, generator=g), "pred_y": torch.randn(4, 17, 256, generator=g)}
    batch = {"x_labels": torch.rand(4, 17, 192, generator=g), "y_labels": torch.rand(4, 17, 256, generator=g),
             "keypoint_weights": torch.ones(4, 17)}
    values = {}
    for preset, opt in [("rtmpose-t", None), ("rtmpose-nano", None), ("rtmpose-nano", "mmpose"),
                        ("rtmpose-t", "batch")]:
        task = TopDownTask()
        task.model_name = preset
        task.task_options["simcc_loss_norm"] = opt
        values[preset, opt] = float(task._loss(raw, batch)[0])
    # the published recipe: MMPose's KLDiscretLoss (sum over instances / K); the CPU preset: per-sample mean
    assert values["rtmpose-t", None] == pytest.approx(4 * values["rtmpose-nano", None], rel=1e-6)
    assert values["rtmpose-nano", "mmpose"] == pytest.approx(values["rtmpose-t", None], rel=1e-6)
    assert values["rtmpose-t", "batch"] == pytest.approx(values["rtmpose-nano", None], rel=1e-6)
