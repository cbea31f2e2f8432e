"""`posekit evaluate`: same stats as pycocotools called directly, JSON as the last output line, clear errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, shared_path
from posekit.cli import main
from posekit.evaluation.results import perturbed_results, save_results

VAL = ("data", "annotations", "coco-val2017-538images-person_keypoints.json")
NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def _noisy_results(gt: dict, seed: int = 1) -> list[dict]:
    """Ground truth with size-scaled noise, dropped keypoints, missed people, false positives, varied scores."""
    return perturbed_results(gt["annotations"], np.random.default_rng(seed))


def _direct(gt_path, res_path) -> dict:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        ev = COCOeval(coco, coco.loadRes(str(res_path)), iouType="keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(NAMES, ev.stats.tolist()))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    gt_path = shared_path(*VAL)
    gt = json.loads(gt_path.read_text())
    res_path = save_results(_noisy_results(gt), tmp_path_factory.mktemp("cli") / "res.json")
    ref = _direct(gt_path, res_path)
    assert 0.2 < ref["AP"] < 0.95
    return gt_path, res_path, ref


def _close(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert abs(a[k] - b[k]) <= 1e-12, (k, a[k], b[k])


def test_in_process_matches_pycocotools(files, capsys):
    gt_path, res_path, ref = files
    rc = main(["evaluate", "--annotations", str(gt_path), "--results", str(res_path)])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.rstrip("\n").split("\n")
    _close(json.loads(lines[-1]), ref)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ]" in out  # pycocotools' summary
    assert f"AP50  {ref['AP50']:.3f}" in out  # the table
    assert out.index("Average Precision") < out.index("metric  value") < out.rindex("{")


def test_subprocess_last_line_is_json(files):
    gt_path, res_path, ref = files
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(
        [sys.executable, "-m", "posekit.cli", "evaluate", "--annotations", str(gt_path), "--results", str(res_path)],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300,
    )
    assert p.returncode == 0, p.stderr
    _close(json.loads(p.stdout.rstrip("\n").split("\n")[-1]), ref)


def test_quiet_no_area_and_schema_options(files, capsys, tmp_path):
    gt_path, res_path, ref = files
    assert main(["evaluate", "--annotations", str(gt_path), "--results", str(res_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    _close(json.loads(out), ref)

    assert main(["evaluate", "--annotations", str(gt_path), "--results", str(res_path), "--quiet", "--no-area",
                 "--backend", "xtcocotools"]) == 0
    xt = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--annotations", str(gt_path), "--results", str(res_path), "--quiet", "--no-area"]) == 0
    py = json.loads(capsys.readouterr().out)
    _close(py, xt)
    assert max(abs(py[k] - ref[k]) for k in ref) > 1e-3

    # A schema file with wider sigmas: a higher AP.
    from posekit.schema import COCO17

    d = COCO17.to_dict()
    d["name"] = "coco17-wide"
    d["sigmas"] = [2 * s for s in COCO17.sigmas]
    schema = tmp_path / "wide.json"
    schema.write_text(json.dumps(d))
    assert main(["evaluate", "--annotations", str(gt_path), "--results", str(res_path), "--quiet",
                 "--schema", str(schema)]) == 0
    assert json.loads(capsys.readouterr().out)["AP"] > ref["AP"] + 0.05


def test_clear_errors(files, capsys, tmp_path):
    gt_path, _, _ = files
    assert main(["evaluate", "--annotations", str(gt_path)]) == 1
    assert "posekit evaluate: error: --results is required" in capsys.readouterr().err

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 397133, "category_id": 1, "keypoints": [1.0] * 51, "score": 1.0},
                               {"image_id": 397133, "category_id": 1, "keypoints": [1.0] * 51}]))
    assert main(["evaluate", "--annotations", str(gt_path), "--results", str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "entry 1: missing field 'score'" in err

    assert main(["evaluate", "--annotations", str(tmp_path / "none.json"), "--results", str(bad)]) == 1
    assert "annotation file not found" in capsys.readouterr().err

    assert main(["evaluate", "--annotations", str(gt_path), "--results", str(bad), "--schema", "nope"]) == 1
    assert "unknown keypoint schema 'nope'" in capsys.readouterr().err


def test_empty_results_file(files, capsys, tmp_path):
    gt_path, _, _ = files
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.warns(UserWarning, match="no results"):
        assert main(["evaluate", "--annotations", str(gt_path), "--results", str(empty)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.rstrip("\n").split("\n")[-1]) == {k: 0.0 for k in NAMES}
