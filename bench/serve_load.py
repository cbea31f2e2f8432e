"""``posekit serve`` under load, against the same pipeline run in-process, and the micro-batching study.

    python bench/serve_load.py [--seconds 10] [--clients 1 4 16] [--threads 2] [--rounds 2] [--microbatch]

Part 1 starts ``posekit serve`` (tf-pose, ``../shared`` weights, one worker with ``--threads`` onnxruntime
threads, a queue long enough for every client) and, for each client count N, runs N concurrent clients (asyncio
+ httpx over loopback, each posting the 4 ``mmpose-coco`` images in turn) for a fixed time: requests/s, p50/p99
latency, failures (any answer but 200). The reference is the same pipeline in this process, in a loop over the
same encoded images (decode + ``PoseEstimator``) with the same thread budget. Rounds alternate (in-process, 1, 4,
16 clients, in-process, ...) so that the ratio sees the same machine load. On a busy machine the wall-time ratio
is noisy; the CPU time per request (the server process, all threads; in-process: this process) does not depend on
what else runs, so it is printed beside it, with the load generator's own CPU per request.

Part 2 (``--microbatch``) asks whether concurrent requests for a top-down model should share one batch of crops:
it times the top-down network (rtmpose-t at 256x192, random weights, exported to ONNX) on ``m`` requests of ``k``
crops each, as ``m`` calls of ``k`` crops vs one call of ``m*k`` crops, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = SHARED / "weights" / "openpose_mobilenet_v2_small_432x368.onnx"
IMAGES = sorted((SHARED / "data" / "mmpose-coco" / "images").glob("*.jpg"))


def in_process(datas: list[bytes], seconds: float, threads: int, spinning: str) -> dict:
    from posekit.data.io import decode_image
    from posekit.pipelines.estimator import PoseEstimator

    est = PoseEstimator("tfpose-mnv2", weights=WEIGHTS, threads=threads, spinning=spinning == "on")
    est(decode_image(datas[0]))  # warm-up
    lat, k = [], 0
    t_end = time.perf_counter() + seconds
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        est(decode_image(datas[k % len(datas)]))
        lat.append(time.perf_counter() - t)
        k += 1
    return {"n": k, "elapsed": time.perf_counter() - t0, "lat": lat, "fail": 0, "cpu": time.process_time() - c0}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _clients(url: str, datas: list[bytes], n_clients: int, seconds: float, pid: int) -> dict:
    import httpx

    lat, fail, done = [], [0], [0]
    limits = httpx.Limits(max_connections=n_clients, max_keepalive_connections=n_clients)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as c:
        await c.post("/v1/pose", content=datas[0], headers={"Content-Type": "image/jpeg"})  # warm-up
        t_end = time.perf_counter() + seconds

        async def client(i: int) -> None:
            k = i
            while time.perf_counter() < t_end:
                t = time.perf_counter()
                try:
                    r = await c.post("/v1/pose", content=datas[k % len(datas)], headers={"Content-Type": "image/jpeg"})
                    ok = r.status_code == 200
                except Exception:  # noqa: BLE001 - a failure of the service under load is counted, not raised
                    ok = False
                lat.append(time.perf_counter() - t)
                done[0] += 1
                fail[0] += not ok
                k += 1
        t0, c0, s0 = time.perf_counter(), time.process_time(), cpu_seconds(pid)
        await asyncio.gather(*[client(i) for i in range(n_clients)])
        return {"n": done[0], "elapsed": time.perf_counter() - t0, "lat": lat, "fail": fail[0],
                "cpu": cpu_seconds(pid) - s0, "client_cpu": time.process_time() - c0}


def start_server(threads: int, queue: int, spinning: str):
    import subprocess

    import httpx

    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "posekit.cli", "serve", "--model", "tfpose-mnv2", "--weights",
                             str(WEIGHTS), "--threads", str(threads), "--queue-size", str(queue), "--port", str(port),
                             "--ort-spinning", spinning, "--log-level", "warning"], env=env, cwd=str(ROOT))
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("posekit serve did not start")


def summary(runs: list[dict]) -> tuple[float, float, float, int, float, float]:
    """requests/s (mean of the rounds), p50 and p99 latency (ms, pooled), failures, and the CPU ms per request of
    the pipeline (the server process; in-process: this process) and of the load generator."""
    lat = np.concatenate([np.asarray(r["lat"]) for r in runs]) * 1e3
    rps = float(np.mean([r["n"] / r["elapsed"] for r in runs]))
    n = sum(r["n"] for r in runs)
    cpu = 1e3 * sum(r["cpu"] for r in runs) / n
    client = 1e3 * sum(r.get("client_cpu", 0.0) for r in runs) / n
    return rps, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), int(sum(r["fail"] for r in runs)), \
        cpu, client


def load_study(args) -> None:
    datas = [p.read_bytes() for p in IMAGES]
    proc, url = start_server(args.threads, queue=max(args.clients) + 4, spinning=args.spinning)
    try:
        results: dict[str, list[dict]] = {"in-process": [], **{f"{n} clients": [] for n in args.clients}}
        for r in range(args.rounds):
            results["in-process"].append(in_process(datas, args.seconds, args.threads, args.spinning))
            for n in args.clients:
                results[f"{n} clients"].append(asyncio.run(_clients(url, datas, n, args.seconds, proc.pid)))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(30)
    base, base_cpu = summary(results["in-process"])[0], summary(results["in-process"])[4]
    print(f"\n[1] tf-pose (432x368 network, 4 COCO images), {args.threads} onnxruntime thread(s), spinning "
          f"{args.spinning} (both sides), "
          f"{args.seconds:g} s x {args.rounds} rounds each; load before: {LOAD0}")
    print(f"| {'setting':<12} | {'requests/s':>10} | {'p50 ms':>7} | {'p99 ms':>7} | {'failures':>8} | "
          f"{'vs in-process':>13} | {'server CPU ms/req':>17} | {'CPU vs in-process':>17} | {'client CPU ms/req':>17} |")
    print(f"|{'-' * 14}|{'-' * 12}|{'-' * 9}|{'-' * 9}|{'-' * 10}|{'-' * 15}|{'-' * 19}|{'-' * 19}|{'-' * 19}|")
    for name, runs in results.items():
        rps, p50, p99, fails, cpu, client = summary(runs)
        print(f"| {name:<12} | {rps:>10.1f} | {p50:>7.1f} | {p99:>7.1f} | {fails:>8d} | {rps / base:>12.2f}x | "
              f"{cpu:>17.1f} | {cpu / base_cpu:>16.2f}x | {client:>17.1f} |")
    per_round = [a["n"] / a["elapsed"] / (b["n"] / b["elapsed"])
                 for a, b in zip(results[f"{max(args.clients)} clients"], results["in-process"])]
    print(f"{max(args.clients)} clients / in-process, per round: " + ", ".join(f"{x:.2f}" for x in per_round))


def microbatch_study(args) -> None:
    import torch

    from posekit.export.topdown import export_topdown_onnx
    from posekit.models.presets import build_model
    from posekit.runtime.cards import load_card
    from posekit.runtime.onnx import OnnxModel

    torch.manual_seed(0)
    model = build_model("rtmpose-t").eval()
    for m in model.modules():  # trained-like activation magnitudes (no denormals), as bench/topdown.py
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    tmp = Path(tempfile.mkdtemp(prefix="posekit-bench-"))
    onnx_path, card_path = export_topdown_onnx(model, tmp / "rtmpose-t.onnx")
    card = load_card(card_path)
    net = OnnxModel(onnx_path, threads=args.threads, card=card)
    W, H = card.input_size
    rng = np.random.default_rng(0)
    print(f"\n[2] micro-batching: rtmpose-t network at {W}x{H}, {args.threads} thread(s); m requests of k crops: "
          f"m calls of k crops (separate) vs one call of m*k crops (shared), best of {args.repeats} alternating")
    print(f"| {'m':>2} | {'k':>2} | {'separate ms':>11} | {'shared ms':>9} | {'speed-up':>8} |")
    print(f"|----|----|{'-' * 13}|{'-' * 11}|{'-' * 10}|")
    for m in (2, 4):
        for k in (1, 2, 5):
            x = rng.standard_normal((m * k, 3, H, W)).astype(np.float32)
            net.run(x)
            sep, sha = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                for i in range(m):
                    net.run(x[i * k:(i + 1) * k])
                sep.append(time.perf_counter() - t)
                t = time.perf_counter()
                net.run(x)
                sha.append(time.perf_counter() - t)
            print(f"| {m:>2} | {k:>2} | {1e3 * min(sep):>11.1f} | {1e3 * min(sha):>9.1f} | "
                  f"{min(sep) / min(sha):>7.2f}x |")
    # context: what else a top-down request costs per image, which batching crops does not touch
    from posekit.data.io import read_image
    from posekit.detectors import PersonDetector

    det_weights = SHARED / "weights" / "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx"
    det = PersonDetector(load_card("yolox-nano-human"), det_weights, args.threads)
    img = read_image(IMAGES[0])
    det(img)
    t_det = min(_timed(lambda: det(img)) for _ in range(args.repeats))
    one = rng.standard_normal((1, 3, H, W)).astype(np.float32)
    t_one = min(_timed(lambda: net.run(one)) for _ in range(args.repeats))
    print(f"per image: detector (yolox-nano-human, 416x416) {1e3 * t_det:.1f} ms; one crop {1e3 * t_one:.1f} ms")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


LOAD0 = ""


def main() -> None:
    global LOAD0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement (10)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads of the pipeline, both sides (2)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--spinning", choices=["on", "off"], default="off",
                    help="onnxruntime thread spinning, the same on both sides (serve's default: off)")
    ap.add_argument("--repeats", type=int, default=20, help="repeats of the micro-batching timings (20)")
    ap.add_argument("--microbatch", action="store_true", help="also run the micro-batching study")
    ap.add_argument("--only-microbatch", action="store_true")
    args = ap.parse_args()
    if not WEIGHTS.is_file() or not IMAGES:
        sys.exit(f"needs ../shared (weights {WEIGHTS} and the mmpose-coco images)")
    LOAD0 = open("/proc/loadavg").read().split()[:3]
    if not args.only_microbatch:
        load_study(args)
    if args.microbatch or args.only_microbatch:
        microbatch_study(args)
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
