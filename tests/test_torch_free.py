"""The paths that need no network training run without importing torch (issue 17, item 5).

Evaluation (library and ``posekit evaluate --results``), model cards, ONNX pipelines, video I/O and drawing are
used on machines without torch (edge boxes, evaluation jobs), and importing torch costs about 2 s per process. The
test runs them in a fresh interpreter and checks ``sys.modules`` afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO_ROOT, shared_path

SCRIPT = r"""
import io, json, sys, contextlib
import numpy as np
import posekit, posekit.evaluation, posekit.pipelines, posekit.runtime, posekit.viz, posekit.data
import posekit.evaluation.coco, posekit.evaluation.results, posekit.runtime.cards, posekit.runtime.onnx
import posekit.pipelines.estimator, posekit.pipelines.tracking, posekit.pipelines.topdown
import posekit.pipelines.onestage, posekit.pipelines.bottomup, posekit.pipelines.video, posekit.detectors
assert "torch" not in sys.modules, "import"

from posekit.data import read_image
from posekit.pipelines.estimator import PoseEstimator
from posekit.viz import draw_people
from posekit.cli import main

weights, image, gt, res = sys.argv[1:5]
est = PoseEstimator("tfpose-mnv2", weights=weights, threads=1)
img = read_image(image)
people = est(img)
canvas = draw_people(img, people)
assert len(people) >= 1 and canvas.shape == img.shape
assert "torch" not in sys.modules, "pipeline"

with contextlib.redirect_stdout(io.StringIO()) as out:
    rc = main(["evaluate", "--annotations", gt, "--results", res, "--quiet"])
assert rc == 0
stats = json.loads(out.getvalue().strip().splitlines()[-1])
with contextlib.redirect_stdout(io.StringIO()) as out:
    rc = main(["evaluate", "--annotations", gt, "--results", res, "--quiet", "--backend", "pycocotools"])
ref = json.loads(out.getvalue().strip().splitlines()[-1])
assert rc == 0 and stats == ref, (stats, ref)
print(json.dumps({"people": len(people), "AP": stats["AP"], "torch": "torch" in sys.modules}))
"""


def test_evaluation_cards_onnx_pipelines_and_drawing_do_not_import_torch(tmp_path):
    weights = shared_path("weights", "openpose_mobilenet_v2_small_432x368.onnx")
    gt_path = shared_path("data", "mmpose-coco", "person_keypoints.json")
    image = sorted(shared_path("data", "mmpose-coco", "images").glob("*.jpg"))[0]
    gt = json.loads(gt_path.read_text())
    # results: the ground truth with a shift that grows with the annotation index (an AP strictly between 0 and 1)
    res = []
    for i, a in enumerate(a for a in gt["annotations"] if a["num_keypoints"] > 0):
        kp = [v + (3.0 * i if j % 3 != 2 else 0.0) for j, v in enumerate(a["keypoints"])]
        res.append({"image_id": a["image_id"], "category_id": 1, "keypoints": kp, "score": 1.0 - 0.05 * i})
    res_path = tmp_path / "res.json"
    res_path.write_text(json.dumps(res))

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(weights), str(image), str(gt_path), str(res_path)],
                       capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    assert out["people"] >= 1
    assert 0.0 < out["AP"] < 1.0
