"""The top-down pipeline end to end on ../shared/data/mmpose-coco: `posekit evaluate --model <exported top-down
card>` with ground-truth boxes, with the YOLOX detector card and with the AP_H_56 detections json; the PyTorch
backend (`--weights x.pth`) gives the very same results and stats as the exported file. The weights are random
(no real top-down checkpoint is available offline), so AP is ~0: these tests check the plumbing and the equality
of the backends, not accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import shared_path
from posekit.cli import main
from posekit.models.presets import build_model

DATA = ("data", "mmpose-coco")
TINY = ["--set", "base_channels=8", "--set", "stem_channels=8", "--set", "deconv_out_channels=[16,16,16]"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small SimpleBaseline-R18 (random weights, seeded) as a posekit checkpoint and as an exported card."""
    d = tmp_path_factory.mktemp("e2e")
    torch.manual_seed(0)
    m = build_model("simplebaseline-r18", base_channels=8, stem_channels=8, deconv_out_channels=(16, 16, 16))
    over = {"base_channels": 8, "stem_channels": 8, "deconv_out_channels": [16, 16, 16]}
    torch.save({"model": m.state_dict(), "config": {"model": {"name": "simplebaseline-r18", "overrides": over}}},
               d / "sb.pt")
    assert main(["export", "--model", "simplebaseline-r18", "--weights", str(d / "sb.pt"), "--out",
                 str(d / "sb.onnx"), *TINY]) == 0
    return d


def _evaluate(capsys, model, boxes, out_json, *extra):
    root = shared_path(*DATA)
    rc = main(["evaluate", "--model", str(model), "--boxes", str(boxes), "--images", str(root / "images"),
               "--annotations", str(root / "person_keypoints.json"), "--out-json", str(out_json), "--quiet",
               *extra])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    stats = json.loads(last)
    assert {"AP", "AR"} <= set(stats) and len(stats) >= 10
    assert all(-1.0 <= v <= 1.0 for v in stats.values())
    return stats, json.loads(out_json.read_text())


def test_evaluate_gt_boxes_onnx_and_torch(exported, capsys, tmp_path):
    root = shared_path(*DATA)
    gt = json.loads((root / "person_keypoints.json").read_text())
    n_gt = sum(1 for a in gt["annotations"] if not a.get("iscrowd", 0))
    det = str(shared_path("weights", "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx"))
    s_onnx, r_onnx = _evaluate(capsys, exported / "sb.yaml", "gt", tmp_path / "a.json", "--detector-weights", det)
    assert len(r_onnx) == n_gt == 14  # one result per ground-truth person box
    s_torch, r_torch = _evaluate(capsys, "simplebaseline-r18", "gt", tmp_path / "b.json", "--weights",
                                 str(exported / "sb.pt"), "--detector-weights", det, "--flip-test")
    s_onnx_flip, r_onnx_flip = _evaluate(capsys, exported / "sb.yaml", "gt", tmp_path / "c.json",
                                         "--detector-weights", det, "--flip-test")
    assert s_torch == pytest.approx(s_onnx_flip, abs=1e-6)
    key = lambda r: (r["image_id"], r["bbox"])  # noqa: E731
    for p, q in zip(sorted(r_torch, key=key), sorted(r_onnx_flip, key=key)):
        assert p["image_id"] == q["image_id"]
        np.testing.assert_allclose(np.array(p["keypoints"]).reshape(-1, 3)[:, :2],
                                   np.array(q["keypoints"]).reshape(-1, 3)[:, :2], atol=1e-3)


def test_evaluate_with_detector_and_detections_json(exported, capsys, tmp_path):
    det = str(shared_path("weights", "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx"))
    stats, res = _evaluate(capsys, exported / "sb.yaml", "model", tmp_path / "d.json", "--detector",
                           "yolox-nano-human", "--detector-weights", det)
    assert 10 <= len(res) <= 16  # YOLOX-nano finds 1 + 2 + 5 + 5 people at score > 0.3 (README of ../shared)
    dets = shared_path(*DATA, "person_detections_AP_H_56.json")
    stats2, res2 = _evaluate(capsys, exported / "sb.yaml", dets, tmp_path / "e.json", "--detector-weights", det)
    assert len(res2) == len(json.loads(dets.read_text()))  # one pose per detection box (118)
