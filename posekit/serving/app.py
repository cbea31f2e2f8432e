"""The ASGI app of ``posekit serve`` (Starlette; the CLI runs it on uvicorn).

Routes: ``POST /v1/pose``, ``GET /v1/models``, ``GET /healthz``, ``GET /metrics``, ``WS /v1/stream``, ``GET /``
(the browser page and its two assets, nothing else: no static directory is mounted, and nothing a client sends is
used as a path). Every error is JSON ``{"error": message, "status": code, ...}``; see docs/serve.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Mapping, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from posekit.schema import get_schema
from posekit.serving.images import ImageRejected, decode_upload, image_size
from posekit.serving.metrics import CONTENT_TYPE_LATEST, Metrics
from posekit.serving.workers import ModelWorkers, QueueFull, stage_times

__all__ = ["ServeConfig", "create_app", "ApiError"]

FORMATS = ("json", "png", "jpeg")
PARAMS = ("model", "score_thr", "max_people", "format", "kpt_thr")
#: paths served without the API key: the health check and the page's static files (the same bytes for everyone,
#: no data; the page asks for the key and sends it with every API call).
PUBLIC_PATHS = ("/healthz", "/", "/static/app.js", "/static/style.css")
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/style.css": ("style.css", "text/css; charset=utf-8")}
ROUTES = ("/v1/pose", "/v1/models", "/v1/stream", "/healthz", "/metrics") + tuple(STATIC)


@dataclass
class ServeConfig:
    """Limits and security of the service.

    Attributes:
        max_body_bytes: a request body (or stream frame) above this answers 413 before it is read whole.
        max_pixels: an image whose header declares more pixels answers 413 before it is decoded.
        queue_size: requests that may wait per model while its workers are busy; one more answers 503.
        timeout_s: a request not answered in this time answers 504 (its network call finishes in the background).
        retry_after_s: the ``Retry-After`` of a 503.
        api_key: when set, every route but the public ones needs ``Authorization: Bearer <key>``.
        cors_origins: origins allowed by CORS (none: no CORS headers at all).
        kpt_thr: default keypoint score threshold for drawing (``format=png|jpeg``).
    """

    max_body_bytes: int = 16 * 2 ** 20
    max_pixels: int = 40_000_000
    queue_size: int = 8
    timeout_s: float = 30.0
    retry_after_s: int = 1
    api_key: str | None = None
    cors_origins: Sequence[str] = field(default_factory=tuple)
    kpt_thr: float = 0.3

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_pixels", "queue_size", "retry_after_s"):
            if int(getattr(self, name)) < (0 if name == "queue_size" else 1):
                raise ValueError(f"ServeConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"ServeConfig.timeout_s must be > 0, got {self.timeout_s!r}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("the API key is empty")


class ApiError(Exception):
    """An error answered as JSON: ``status``, ``message`` and extra fields (``field``, ``models``)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None, **extra) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, dict(headers or {}), extra

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message, "status": self.status, **self.extra}, self.status,
                            headers=self.headers)


class BodyTooLarge(ApiError):
    def __init__(self, limit: int, what: str = "request body") -> None:
        super().__init__(413, f"{what} too large: the limit is {limit} bytes (--max-body-mb)")


# ------------------------------------------------------------------------------------------------ middleware
async def _send_json(send, status: int, body: dict, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": raw})


def _header(scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v.decode("latin-1")
    return None


def _digest(s: str) -> bytes:
    return hashlib.sha256(s.encode()).digest()


def bearer_ok(scope, key_digest: bytes) -> bool:
    """Whether the ``Authorization`` header is ``Bearer <key>``; compared in constant time (digests of equal
    length, ``hmac.compare_digest``)."""
    got = _header(scope, b"authorization") or ""
    scheme, _, token = got.partition(" ")
    return hmac.compare_digest(_digest(token.strip() if scheme.lower() == "bearer" else "\0"), key_digest)


class MetricsMiddleware:
    """Counts every HTTP answer by route and status and times it (outermost: 401, 413 and 503 are counted too)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = [500]

        async def send_status(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


class AuthMiddleware:
    """``Authorization: Bearer <key>`` on every HTTP route but the public ones (401 otherwise). Websockets are
    checked by the stream endpoint (a browser cannot set the header there: it may send the key first)."""

    def __init__(self, app, api_key: str) -> None:
        self.app, self.key = app, _digest(api_key)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            scope.setdefault("state", {})["authorized"] = bearer_ok(scope, self.key)
        elif scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS and scope.get("method") != "OPTIONS" \
                and not bearer_ok(scope, self.key):
            return await _send_json(send, 401, {"error": "unauthorized: send 'Authorization: Bearer <api key>'",
                                                "status": 401}, [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for a body over the limit: at once from ``Content-Length``, else as soon as the streamed bytes pass it
    (the rest is never read)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await _send_json(send, 400, {"error": f"bad Content-Length {declared!r}", "status": 400})
            if int(declared) > self.limit:
                err = BodyTooLarge(self.limit)
                return await _send_json(send, 413, {"error": err.message, "status": 413},
                                        [(b"connection", b"close")])
        seen = 0

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return msg

        return await self.app(scope, limited_receive, send)


# ------------------------------------------------------------------------------------------------ parameters
@dataclass
class PoseParams:
    model: str
    score_thr: float | None = None
    max_people: int | None = None
    format: str = "json"
    kpt_thr: float = 0.3


def _float01(field_: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ApiError(422, f"parameter {field_!r} must be a number in [0, 1], got {text!r}", field=field_)
    return v


def parse_params(values: Mapping[str, str], models: Sequence[str], default_kpt_thr: float) -> PoseParams:
    """Validated parameters: 422 naming the field for a bad value or an unknown name, 404 listing the models for
    an unknown model."""
    unknown = sorted(set(values) - set(PARAMS))
    if unknown:
        raise ApiError(422, f"unknown parameter {unknown[0]!r}; the parameters are {list(PARAMS)}", field=unknown[0])
    model = values.get("model") or models[0]
    if model not in models:
        raise ApiError(404, f"unknown model {model!r}; this server has {list(models)}", models=list(models))
    p = PoseParams(model=model, kpt_thr=default_kpt_thr)
    if values.get("score_thr") not in (None, ""):
        p.score_thr = _float01("score_thr", values["score_thr"])
    if values.get("kpt_thr") not in (None, ""):
        p.kpt_thr = _float01("kpt_thr", values["kpt_thr"])
    if values.get("max_people") not in (None, ""):
        text = values["max_people"]
        if not (text.isdigit() and int(text) >= 1):
            raise ApiError(422, f"parameter 'max_people' must be an integer >= 1, got {text!r}", field="max_people")
        p.max_people = int(text)
    if values.get("format") not in (None, ""):
        if values["format"] not in FORMATS:
            raise ApiError(422, f"parameter 'format' must be one of {list(FORMATS)}, got {values['format']!r}",
                           field="format")
        p.format = values["format"]
    return p


def people_json(people) -> list[dict]:
    return [{"score": float(p.score), "box": [float(v) for v in p.box],
             "keypoints": [[float(x), float(y), float(s)] for x, y, s in p.keypoints]} for p in people]


def select_people(people, params: PoseParams) -> list:
    if params.score_thr is not None:
        people = [p for p in people if p.score >= params.score_thr]
    if params.max_people is not None:
        people = sorted(people, key=lambda p: -p.score)[:params.max_people]
    return list(people)


# ------------------------------------------------------------------------------------------------ the app
class PoseService:
    """The state behind the routes: the models' worker pools, their schemas, the metrics."""

    def __init__(self, models: Mapping[str, Sequence], config: ServeConfig) -> None:
        if not models:
            raise ValueError("no models to serve")
        self.config = config
        self.workers = {name: ModelWorkers(name, ests if isinstance(ests, (list, tuple)) else [ests],
                                           config.queue_size) for name, ests in models.items()}
        self.names = list(self.workers)
        self.metrics = Metrics(self.workers)
        self.schemas = {n: get_schema(w.estimators[0].card.schema) for n, w in self.workers.items()}
        self.key_digest = _digest(config.api_key) if config.api_key else None
        self.static = {path: resources.files("posekit.serving").joinpath("static", f).read_bytes()
                       for path, (f, _) in STATIC.items()}

    def describe(self, name: str) -> dict:
        est = self.workers[name].estimators[0]
        card = est.card
        paradigm = "top-down" if card.is_topdown else ("one-stage" if card.kind == "rtmo" else "bottom-up")
        return {"name": name, "paradigm": paradigm, "kind": card.kind, "backend": est.backend,
                "workers": len(self.workers[name].estimators), "input_size": list(card.input_size),
                "schema": self.schemas[name].to_dict()}

    async def run(self, data: bytes, params: PoseParams) -> tuple[dict, bytes | None]:
        """People (and the drawn image for png/jpeg) of one upload, on the model's workers, within the timeout."""
        try:
            size = image_size(data, self.config.max_pixels)  # 400 / 413 before the image takes a place in the queue
        except ImageRejected as e:
            raise ApiError(e.status, e.message) from None
        schema = self.schemas[params.model]

        def work(est):
            t0 = time.perf_counter()
            img = decode_upload(data, size)
            t1 = time.perf_counter()
            before = dict(est.timer.totals)
            people = select_people(est(img), params)
            times = {"decode": 1e3 * (t1 - t0), **stage_times(est.timer, before)}
            encoded = None
            if params.format != "json":
                import cv2

                from posekit.viz import draw_people

                t2 = time.perf_counter()
                canvas = draw_people(img, people, schema, kpt_thr=params.kpt_thr, draw_boxes=True)
                ok, buf = cv2.imencode(".png" if params.format == "png" else ".jpg", canvas)
                if not ok:
                    raise RuntimeError("the drawing could not be encoded")
                encoded = buf.tobytes()
                times["draw"] = 1e3 * (time.perf_counter() - t2)
            return img.shape, people, times, encoded

        try:
            shape, people, times, encoded = await asyncio.wait_for(
                self.workers[params.model].submit(work), self.config.timeout_s)
        except QueueFull as e:
            raise ApiError(503, str(e), headers={"Retry-After": str(self.config.retry_after_s)}) from None
        except asyncio.TimeoutError:
            raise ApiError(504, f"the request took longer than the timeout of {self.config.timeout_s:g} s "
                                f"(--timeout)") from None
        except ImageRejected as e:
            raise ApiError(e.status, e.message) from None
        self.metrics.image_done(params.model, times)
        result = {"model": params.model, "image": {"width": int(shape[1]), "height": int(shape[0])},
                  "keypoint_names": list(schema.keypoints), "people": people_json(people),
                  "times_ms": {k: round(v, 3) for k, v in times.items()}}
        return result, encoded


async def _read_upload(request: Request, limit: int) -> tuple[bytes, dict[str, str]]:
    """The image bytes and the form fields of a multipart upload or a raw image body."""
    ctype = request.headers.get("content-type", "")
    main = ctype.split(";")[0].strip().lower()
    if main == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=len(PARAMS), max_part_size=limit)
        except HTTPException as e:  # Starlette's multipart errors (too many files / fields, bad boundary)
            raise ApiError(400, f"bad multipart body: {e.detail}") from None
        try:
            fields: dict[str, str] = {}
            upload = None
            for key, value in form.multi_items():
                if isinstance(value, str):
                    fields[key] = value
                elif key == "image":
                    upload = value
                else:
                    raise ApiError(422, f"unexpected file field {key!r}; send the image as the field 'image'",
                                   field=key)
            if upload is None:
                raise ApiError(422, "the multipart body has no file field 'image'", field="image")
            return await upload.read(), fields
        finally:
            await form.close()  # the spooled upload (memory, or an anonymous temporary file) is released
    if main.startswith("image/") or main == "application/octet-stream":
        return await request.body(), {}
    raise ApiError(415, f"unsupported content type {ctype or '(none)'!r}: send multipart/form-data with the file "
                        f"field 'image', or the image bytes with Content-Type image/* or application/octet-stream")


def create_app(models: Mapping[str, Sequence], config: ServeConfig | None = None) -> Starlette:
    """The service for ``{name: PoseEstimator or [replicas]}`` (the first model is the default)."""
    config = config or ServeConfig()
    svc = PoseService(models, config)

    async def pose(request: Request) -> Response:
        try:  # a client that sends its body too slowly holds no worker and gets 408
            data, fields = await asyncio.wait_for(_read_upload(request, config.max_body_bytes), config.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within the timeout of {config.timeout_s:g} s "
                                f"(--timeout)") from None
        values = dict(request.query_params)
        for k, v in fields.items():
            if k in values and values[k] != v:
                raise ApiError(422, f"parameter {k!r} given twice with different values", field=k)
            values[k] = v
        params = parse_params(values, svc.names, config.kpt_thr)
        result, encoded = await svc.run(data, params)
        timing = ", ".join(f"{k};dur={v:.3f}" for k, v in result["times_ms"].items())
        if encoded is None:
            return JSONResponse(result, headers={"Server-Timing": timing})
        return Response(encoded, media_type=f"image/{params.format}",
                        headers={"Server-Timing": timing, "X-Posekit-People": str(len(result["people"]))})

    async def models_route(request: Request) -> Response:
        return JSONResponse({"models": [svc.describe(n) for n in svc.names], "default": svc.names[0]})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": svc.names})

    async def metrics(request: Request) -> Response:
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def static(request: Request) -> Response:
        path = request.url.path
        return Response(svc.static[path], media_type=STATIC[path][1],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    async def stream(ws: WebSocket) -> None:
        await stream_session(ws, svc)

    async def api_error(request, exc: ApiError) -> Response:
        return exc.response()

    async def http_error(request, exc: HTTPException) -> Response:
        extra = {"routes": list(ROUTES)} if exc.status_code == 404 else {}
        return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path}", "status":
                             exc.status_code, **extra}, exc.status_code, headers=exc.headers)

    async def server_error(request, exc: Exception) -> Response:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}", "status": 500}, 500)

    middleware = [Middleware(MetricsMiddleware, metrics=svc.metrics)]
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"]))
    if config.api_key:
        middleware.append(Middleware(AuthMiddleware, api_key=config.api_key))
    middleware.append(Middleware(BodyLimitMiddleware, limit=config.max_body_bytes))

    @asynccontextmanager
    async def lifespan(app):
        yield
        for w in svc.workers.values():  # in-flight work finishes before the process exits
            w.shutdown()

    routes = [Route("/v1/pose", pose, methods=["POST"]), Route("/v1/models", models_route),
              Route("/healthz", healthz), Route("/metrics", metrics), WebSocketRoute("/v1/stream", stream)]
    routes += [Route(path, static) for path in STATIC]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: server_error})
    app.state.service = svc
    return app


# ------------------------------------------------------------------------------------------------ the stream
async def stream_session(ws: WebSocket, svc: PoseService) -> None:
    """``WS /v1/stream``: binary messages are frames (encoded images), text messages are JSON settings
    (``model``, ``score_thr``, ``max_people``, ``kpt_thr``; and ``api_key`` when the server has one and the
    upgrade request had no ``Authorization`` header). Each answer is the JSON of ``/v1/pose`` plus ``frame`` (the
    number of the frame it answers, counted from 1) and ``dropped`` (frames replaced by a newer one before they
    were run: a client faster than the model loses old frames, it never builds a queue)."""
    await ws.accept()
    authorized = svc.key_digest is None or ws.scope.get("state", {}).get("authorized", False)
    settings: dict[str, str] = {}
    params = parse_params(settings, svc.names, svc.config.kpt_thr)
    latest: list = [None, 0]  # [frame bytes, frame number]
    state = {"received": 0, "dropped": 0, "closed": False}
    wake = asyncio.Event()
    svc.metrics.requests.labels("/v1/stream", "101").inc()

    async def send_error(status: int, message: str, **extra) -> None:
        await ws.send_json({"error": message, "status": status, **extra})

    async def receiver() -> None:
        nonlocal params, authorized
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                if msg.get("text") is not None:
                    try:
                        update = json.loads(msg["text"])
                        if not isinstance(update, dict):
                            raise ValueError("a JSON object")
                    except ValueError:
                        await send_error(400, "text messages must be a JSON object of settings")
                        continue
                    key = update.pop("api_key", None)
                    if svc.key_digest is not None and not authorized:
                        if not (isinstance(key, str) and hmac.compare_digest(_digest(key), svc.key_digest)):
                            await ws.close(4401, "unauthorized")
                            return
                        authorized = True
                    try:
                        new = {**settings, **{str(k): str(v) for k, v in update.items()}}
                        params = parse_params(new, svc.names, svc.config.kpt_thr)
                        if params.format != "json":
                            raise ApiError(422, "the stream answers json only", field="format")
                        settings.clear()
                        settings.update(new)
                    except ApiError as e:
                        await send_error(e.status, e.message, **e.extra)
                    continue
                data = msg.get("bytes") or b""
                if not authorized:
                    await ws.close(4401, "unauthorized: send {\"api_key\": ...} first")
                    return
                if len(data) > svc.config.max_body_bytes:
                    await send_error(413, BodyTooLarge(svc.config.max_body_bytes, "frame").message)
                    continue
                state["received"] += 1
                if latest[0] is not None:
                    state["dropped"] += 1
                    svc.metrics.dropped.inc()
                latest[0], latest[1] = data, state["received"]
                wake.set()
        finally:
            state["closed"] = True
            wake.set()

    async def processor() -> None:
        while True:
            await wake.wait()
            wake.clear()
            if state["closed"]:
                return
            data, number = latest
            latest[0] = None
            if data is None:
                continue
            try:
                result, _ = await svc.run(data, params)
                await ws.send_json({**result, "frame": number, "dropped": state["dropped"]})
            except ApiError as e:
                await send_error(e.status, e.message, frame=number, **e.extra)
            except (WebSocketDisconnect, RuntimeError) as e:
                if state["closed"] or isinstance(e, WebSocketDisconnect):
                    return  # the client left while its answer was being sent
                await send_error(500, f"internal error: {type(e).__name__}", frame=number)
            except Exception as e:  # noqa: BLE001 - a bug in a model must not end the stream
                await send_error(500, f"internal error: {type(e).__name__}", frame=number)

    rx = asyncio.create_task(receiver())
    px = asyncio.create_task(processor())
    try:
        await rx
    except WebSocketDisconnect:
        pass
    finally:
        state["closed"] = True
        wake.set()
        try:
            await px
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client left while an answer was being sent
