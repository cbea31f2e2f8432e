"""The three paradigms (and a multi-stage model) trained on the same synthetic people, then `posekit compare`d.

    python bench/compare_synth.py [--out runs/compare-synth] [--threads 1] [--train-images 600]
        [--rtmo-steps 800] [--openpose-steps 800] [--simplebaseline-steps 800] [--hourglass-steps 800]
        [--test-per-level 15] [--no-sweep]

Data and trained checkpoints (``OUT/<model>/last.pt``) already in OUT are reused; delete them to remake them.

1. Data (posekit synth, :func:`posekit.training.tasks.openpose.make_synthetic_splits` with SYNTH_EASY's figures:
   front-facing, plain background, heads 17–22 px, fully inside): ONE training set of 256x192 images with 1–4
   people, which every model trains on; a test set at four crowd levels (1, 2–3, 4–7 and 8–10 people per 256x192
   image, people overlapping), merged into one COCO file.
2. Training with the existing recipes (their configs, the data and input size pointed at this set, the step counts
   above): one-stage RTMO (``configs/rtmo-nano-synth.yaml``, backbone from the YOLOX-nano detector), bottom-up
   OpenPose-light (``configs/openpose-light-synth.yaml``), top-down SimpleBaseline-R18, light
   (``configs/topdown-simplebaseline-synth.yaml``; heatmaps) and the multi-stage Stacked Hourglass with 2 stacks
   (``configs/topdown-hourglass-synth.yaml``).
3. ``posekit compare`` on the test set: RTMO; OpenPose-light; SimpleBaseline with ground-truth boxes ("oracle boxes")
   and with the trained RTMO (PyTorch) as its person detector; Hourglass with oracle boxes and ``--stages``;
   plus the scaling sweep. Report under ``OUT/compare``.

Every number is measured with ``--threads`` threads (torch and onnxruntime) on this machine; the CPU times of
each step are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
YOLOX = SHARED / "weights" / "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx"
SIZE = (256, 192)
LEVELS = (("1", 1, 1), ("2-3", 2, 3), ("4-7", 4, 7), ("8-10", 8, 10))


def make_data(out: Path, n_train: int, per_level: int) -> dict:
    """The shared training set and the merged multi-level test set; reused when present."""
    from posekit.data.synthetic import make_synthetic_dataset
    from posekit.training.tasks.openpose import SYNTH_EASY, make_synthetic_splits

    synth = {**SYNTH_EASY, "size": SIZE, "min_people": 1, "max_people": 4}
    paths = {"train_ann": str(out / "train" / "train" / "person_keypoints.json"),
             "train_images": str(out / "train" / "train" / "images"),
             "val_ann": str(out / "train" / "val" / "person_keypoints_inside.json"),
             "val_images": str(out / "train" / "val" / "images")}
    if not Path(paths["val_ann"]).is_file():
        paths = make_synthetic_splits(out / "train", n_train, 20, seed=100, **synth)
    test = out / "test" / "person_keypoints.json"
    if not test.is_file():
        merged = {"images": [], "annotations": [], "categories": None}
        (out / "test" / "images").mkdir(parents=True, exist_ok=True)
        for i, (label, lo, hi) in enumerate(LEVELS):
            d = out / "test" / f"level-{label}"
            kw = {k: v for k, v in synth.items() if k not in ("size", "min_people", "max_people")}
            js = make_synthetic_dataset(d, per_level, size=SIZE, seed=200 + i, min_people=lo, max_people=hi,
                                        crowd_prob=0.0, small_prob=0.0, occluder_prob=0.0, **kw)
            data = json.loads(Path(js).read_text())
            merged["categories"] = data["categories"]
            id_map = {}
            for im in data["images"]:
                new_id = 1000 * (i + 1) + int(im["id"])
                id_map[int(im["id"])] = new_id
                name = f"{label}_{im['file_name']}"
                os.replace(d / "images" / im["file_name"], out / "test" / "images" / name)
                merged["images"].append({**im, "id": new_id, "file_name": name})
            for a in data["annotations"]:
                merged["annotations"].append({**a, "id": 100000 * (i + 1) + int(a["id"]),
                                              "image_id": id_map[int(a["image_id"])]})
        tmp = test.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged))
        os.replace(tmp, test)
    return {**paths, "test_ann": str(test), "test_images": str(out / "test" / "images")}


def _train(config: Path, data: dict, out_dir: Path, steps: int, extra=(), task=None) -> dict:
    from posekit.training.config import load_config
    from posekit.training.trainer import train

    last = out_dir / "last.pt"
    if last.is_file():
        print(f"  reusing {last}")
        return {"last_checkpoint": str(last), "seconds": 0.0, "last_eval": None}
    over = [f"data.{k}={v}" for k, v in data.items() if k in ("train_ann", "train_images", "val_ann", "val_images")]
    over += [f"max_steps={steps}", f"out_dir={out_dir}", "progress=false", "eval.every_epochs=1000",
             "checkpoint.save_best=false", *extra]
    cfg = load_config(config, over)
    t0 = time.perf_counter()
    res = train(cfg, task=task) if task is not None else train(cfg)
    res["seconds"] = time.perf_counter() - t0
    print(f"  {res['step']} steps in {res['seconds']:.0f} s; held-out AP (the recipe's own eval): "
          f"{(res.get('last_eval') or {}).get('AP')}")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/compare-synth")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-images", type=int, default=600)
    ap.add_argument("--test-per-level", type=int, default=15)
    ap.add_argument("--rtmo-steps", type=int, default=800)
    ap.add_argument("--openpose-steps", type=int, default=800)
    ap.add_argument("--simplebaseline-steps", type=int, default=800)
    ap.add_argument("--hourglass-steps", type=int, default=800)
    ap.add_argument("--no-sweep", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    times = {}
    t0 = time.perf_counter()
    data = make_data(out / "data", args.train_images, args.test_per_level)
    times["data"] = time.perf_counter() - t0
    print(f"data: {data} ({times['data']:.0f} s)")
    w, h = SIZE
    from posekit.training.tasks.rtmo import RTMOTask
    from posekit.training.tasks.topdown import TopDownTask

    print("training RTMO (one-stage)")
    rtmo = _train(ROOT / "configs" / "rtmo-nano-synth.yaml", data, out / "rtmo", args.rtmo_steps,
                  [f"data.input_size=[{w}, {h}]", f"task_options.backbone_onnx={YOLOX}"], task=RTMOTask())
    print("training OpenPose-light (bottom-up)")
    op = _train(ROOT / "configs" / "openpose-light-synth.yaml", data, out / "openpose", args.openpose_steps,
                [f"data.input_size=[{w}, {h}]"])
    print("training SimpleBaseline-R18, light (top-down, heatmaps)")
    rp = _train(ROOT / "configs" / "topdown-simplebaseline-synth.yaml", data, out / "simplebaseline",
                args.simplebaseline_steps, task=TopDownTask())
    print("training Hourglass, 2 stacks (multi-stage top-down)")
    hg = _train(ROOT / "configs" / "topdown-hourglass-synth.yaml", data, out / "hourglass", args.hourglass_steps,
                task=TopDownTask())
    times.update({"rtmo": rtmo["seconds"], "openpose": op["seconds"], "simplebaseline": rp["seconds"],
                  "hourglass": hg["seconds"]})

    from posekit.compare import CompareConfig, PipelineSpec, run_compare

    T = args.threads
    specs = [
        PipelineSpec("rtmo", "rtmo-s", weights=rtmo["last_checkpoint"], threads=T),
        PipelineSpec("openpose-light", "openpose-light", weights=op["last_checkpoint"], threads=T),
        PipelineSpec("sb-oracle", "simplebaseline-r18", weights=rp["last_checkpoint"], boxes="gt", threads=T),
        PipelineSpec("hourglass-oracle", "hourglass-52", weights=hg["last_checkpoint"], boxes="gt", threads=T,
                     stages=True),
    ]
    # the trained RTMO (PyTorch) as the top-down person detector: its people's boxes
    specs.insert(3, PipelineSpec("sb-rtmo-boxes", "simplebaseline-r18", weights=rp["last_checkpoint"],
                                 detector="rtmo-s", detector_weights=rtmo["last_checkpoint"], threads=T))
    cfg = CompareConfig(data["test_ann"], data["test_images"], specs, out_dir=str(out / "compare"),
                        sweep=not args.no_sweep, stages=True, sweep_repeats=3)
    t0 = time.perf_counter()
    rep = run_compare(cfg)
    times["compare"] = time.perf_counter() - t0
    print(f"\nthreads {T}; {os.cpu_count()} CPUs; load average {os.getloadavg()}; times (s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    for n, e in rep["pipelines"].items():
        if e["status"] != "ok":
            print(f"{n}: ERROR {e['error']}")
            continue
        s = e["accuracy"]["stats"]
        bc = e["accuracy"]["by_crowd"]
        print(f"{n:<20} {e['paradigm']:<10} AP {s['AP']:.3f} AP50 {s['AP50']:.3f} AR {s['AR']:.3f} | "
              + " ".join(f"{k}: {v['AP']:.3f}" for k, v in bc.items())
              + f" | median {e['cost']['total']['median']:.1f} ms")
    for c in rep["claims"]:
        print(f"- {c['claim']}: {c['measured']}")
    print(f"report: {out / 'compare' / 'report.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
