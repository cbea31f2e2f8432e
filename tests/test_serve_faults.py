"""``posekit serve`` under hostile input: 200 bad and good requests (1000 under -m slow) leave it up, every good
one answered correctly, its memory bounded; a request over the timeout answers 504 without handing its busy worker
to another request; SIGTERM lets in-flight requests finish."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import httpx
import numpy as np
import pytest

from serve_util import Server, coco_images, free_port, tfpose_args
from test_serve_api import assert_people_equal, bomb_png


@pytest.fixture(scope="module")
def server():
    srv = Server(tfpose_args() + ["--threads", "1", "--queue-size", "64", "--max-body-mb", "2",
                                  "--max-pixels", "4000000"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def expected():
    from posekit.data.io import read_image
    from posekit.pipelines.estimator import PoseEstimator

    est = PoseEstimator("tfpose-mnv2", weights=tfpose_args()[3], threads=1)
    return [(p.read_bytes(), est(read_image(p))) for p in coco_images()]


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0/SOF2) is rewritten to declare ``width x height``."""
    buf = bytearray(data)
    i = 2
    while i < len(buf):
        marker, length = buf[i + 1], (buf[i + 2] << 8) | buf[i + 3]
        if marker in (0xC0, 0xC1, 0xC2):
            buf[i + 5:i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
            return bytes(buf)
        i += 2 + length
    raise ValueError("no SOF marker")


def hostile_requests(rng: random.Random, good: bytes) -> list[tuple[str, dict, set[int]]]:
    """``(method path, httpx kwargs, accepted statuses)`` for every kind of bad request."""
    j = {"Content-Type": "image/jpeg"}
    flipped = bytearray(good)
    for _ in range(20):
        k = rng.randrange(200, len(flipped) - 2)
        flipped[k] ^= 1 << rng.randrange(8)
    kinds = [
        ("POST /v1/pose", {"content": b"", "headers": j}, {400}),
        ("POST /v1/pose", {"content": bytes(rng.randbytes(5000)), "headers": j}, {400}),
        ("POST /v1/pose", {"content": b"\xff\xd8\xff" + rng.randbytes(3000), "headers": j}, {400}),
        ("POST /v1/pose", {"content": good[: rng.randrange(100, len(good) - 10)], "headers": j}, {400}),
        ("POST /v1/pose", {"content": bomb_png(), "headers": {"Content-Type": "image/png"}}, {413}),
        ("POST /v1/pose", {"content": jpeg_with_size(good, 60000, 60000), "headers": j}, {413}),
        # a header that declares another size than the scan holds: libjpeg may still decode it
        ("POST /v1/pose", {"content": jpeg_with_size(good, 700, 500), "headers": j}, {200, 400}),
        ("POST /v1/pose", {"content": bytes(flipped), "headers": j}, {200, 400}),  # corrupt scan data
        ("POST /v1/pose", {"content": good, "headers": {"Content-Type": "text/html"}}, {415}),
        ("POST /v1/pose", {"content": good, "headers": j, "params": {"model": "../../etc/passwd"}}, {404}),
        ("POST /v1/pose", {"content": good, "headers": j, "params": {"score_thr": "1e999"}}, {422}),
        ("POST /v1/pose", {"content": good, "headers": j, "params": {"max_people": "-3"}}, {422}),
        ("POST /v1/pose", {"content": good, "headers": j, "params": {"format": "<script>"}}, {422}),
        ("POST /v1/pose", {"content": b"\0" * (3 * 2 ** 20), "headers": j}, {413}),
        ("POST /v1/pose", {"content": b"--x\r\n\r\n" + rng.randbytes(2000),
                           "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, {400, 422}),
        ("POST /v1/pose", {"content": good, "headers": {"Content-Type": "multipart/form-data"}}, {400, 422}),
        ("POST /v1/pose", {"files": {"image": ("../../x.jpg", b"not an image", "image/jpeg")}}, {400}),
        ("GET /../../etc/passwd", {}, {404}),
        ("GET /static/..%2f..%2fpyproject.toml", {}, {404}),
        ("DELETE /v1/models", {}, {405}),
        ("GET /v1/pose", {}, {405}),
    ]
    return kinds


@pytest.mark.parametrize("n, good_every", [
    (200, 20),  # default: 200 requests, 10 good among them (and 20 good ones before)
    pytest.param(1000, 4, marks=pytest.mark.slow),  # 1000 requests, 250 good
])
def test_hostile_requests(server, expected, n, good_every):
    rng = random.Random(16)
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        for k in range(20):
            data, people = expected[k % len(expected)]
            r = c.post("/v1/pose", content=data, headers={"Content-Type": "image/jpeg"})
            assert r.status_code == 200
            assert_people_equal(r.json()["people"], people)
    rss0 = server.rss_kb()

    plan = []
    decodable = 0  # hostile requests that may decode and run the model: a few (they cost a network run each)
    for k in range(n):
        if k % good_every == 0:
            i = rng.randrange(len(expected))
            plan.append(("POST /v1/pose", {"content": expected[i][0], "headers": {"Content-Type": "image/jpeg"}},
                         {200}, i))
            continue
        kinds = hostile_requests(rng, expected[rng.randrange(len(expected))][0])
        if decodable >= max(4, n // 50):
            kinds = [kind for kind in kinds if 200 not in kind[2]]
        kind = rng.choice(kinds)
        decodable += 200 in kind[2]
        plan.append((*kind, None))

    async def run_all():
        sem = asyncio.Semaphore(4)
        async with httpx.AsyncClient(base_url=server.url, timeout=60.0) as c:
            async def one(item):
                what, kw, ok, i = item
                method, path = what.split(" ", 1)
                async with sem:
                    try:
                        return item, await c.request(method, path, **kw)
                    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError) as e:
                        return item, e  # a body over the limit: the server may close before the client is done
            return await asyncio.gather(*[one(item) for item in plan])
    answers = asyncio.run(run_all())
    n_good = 0
    for (what, kw, ok, i), r in answers:
        if isinstance(r, Exception):
            assert ok == {413}, (what, r)
            continue
        assert r.status_code in ok, (what, kw.get("params"), r.status_code, r.text[:200])
        body = r.json()
        if i is not None:
            assert_people_equal(body["people"], expected[i][1])
            n_good += 1
        elif r.status_code != 200:
            assert body["status"] == r.status_code and isinstance(body["error"], str) and body["error"]
    assert n_good == n // good_every
    assert httpx.get(server.url + "/healthz").status_code == 200
    rss1 = server.rss_kb()
    assert rss1 <= 1.5 * rss0, (rss0, rss1)


def test_sigterm_lets_in_flight_requests_finish(server, expected):
    data, people = expected[0]
    n = 6
    results = [None] * n

    def post(k):
        try:
            results[k] = httpx.post(server.url + "/v1/pose", content=data, headers={"Content-Type": "image/jpeg"},
                                    timeout=60.0)
        except Exception as e:  # noqa: BLE001 - recorded and asserted below
            results[k] = e
    threads = [threading.Thread(target=post, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while True:  # wait until the server holds all of them (running or queued)
        depth = [line for line in httpx.get(server.url + "/metrics").text.splitlines()
                 if line.startswith("posekit_queue_depth")]
        if float(depth[0].rsplit(" ", 1)[1]) >= n - 1 or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    code = server.stop()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a client was never answered nor disconnected"
    assert code in (0, -15), server.output()
    answered = [r for r in results if isinstance(r, httpx.Response)]
    assert len(answered) >= n - 1, results
    for r in answered:
        assert r.status_code == 200
        assert_people_equal(r.json()["people"], people)
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/healthz", timeout=2.0)


class _SlowOnce:
    """A PoseEstimator whose next call sleeps first (a stuck network), to test the service's timeout."""

    def __init__(self, est) -> None:
        self.est, self.card, self.timer, self.backend, self.sleep = est, est.card, est.timer, est.backend, 0.0

    def __call__(self, image):
        s, self.sleep = self.sleep, 0.0
        time.sleep(s)
        return self.est(image)


def test_timeout_answers_504_and_keeps_the_worker(expected):
    import uvicorn

    from posekit.pipelines.estimator import PoseEstimator
    from posekit.serving import ServeConfig, create_app

    slow = _SlowOnce(PoseEstimator("tfpose-mnv2", weights=tfpose_args()[3], threads=1))
    app = create_app({"tfpose-mnv2": slow}, ServeConfig(timeout_s=1.5))
    workers = app.state.service.workers["tfpose-mnv2"]
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    url = f"http://127.0.0.1:{port}"
    try:
        while not srv.started:
            time.sleep(0.02)
        data, people = expected[0]
        post = lambda: httpx.post(url + "/v1/pose", content=data, headers={"Content-Type": "image/jpeg"},  # noqa
                                  timeout=30)
        slow.sleep = 4.0
        r = post()
        assert r.status_code == 504 and "timeout of 1.5 s" in r.json()["error"]
        assert workers.depth >= 1  # answered while the stuck call still holds the worker
        r = post()  # the only worker is still busy with the stuck call: this one waits and times out too
        assert r.status_code == 504 and workers.depth >= 1
        while workers.depth:  # the stuck call returns; its worker is free again
            time.sleep(0.02)
        r = post()
        assert r.status_code == 200
        assert_people_equal(r.json()["people"], people)

        def slow_body():  # a client that stalls mid-body: 408 after the timeout, no worker held
            yield data[:1000]
            time.sleep(2.0)
            yield data[1000:]
        try:
            r = httpx.post(url + "/v1/pose", content=slow_body(), headers={"Content-Type": "image/jpeg"},
                           timeout=30)
            assert r.status_code == 408 and "did not arrive" in r.json()["error"]
        except httpx.TransportError:  # the server answered 408 and closed while the client still wrote
            pass
        metrics = httpx.get(url + "/metrics").text
        assert 'posekit_requests_total{route="/v1/pose",status="408"} 1.0' in metrics
    finally:
        srv.should_exit = True
        th.join(10)
