"""``posekit serve``: the pose-estimation web service and its browser page (docs/serve.md)."""

from __future__ import annotations

import argparse

from posekit.cli.model_args import add_model_arguments, model_specs

#: environment variable holding the API key (instead of --api-key, which other users can see in ``ps``)
API_KEY_ENV = "POSEKIT_API_KEY"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve pose models over HTTP (JSON API, websocket stream, browser page, Prometheus metrics)",
        description="Load one or more pose models and serve them: POST /v1/pose, GET /v1/models, GET /healthz, "
                    "GET /metrics, WS /v1/stream and a browser page at /. Each --model may be followed by its "
                    "own --weights / --detector / --detector-weights. See docs/serve.md.",
    )
    add_model_arguments(p, multiple=True)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1,
                   help="inference workers per model (each a copy of the model on its own thread; default 1)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads per worker (default: all cores)")
    p.add_argument("--queue-size", type=int, default=8,
                   help="requests that may wait per model while its workers are busy; one more answers 503 (8)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a request answers 504 (30)")
    p.add_argument("--max-body-mb", type=float, default=16.0,
                   help="largest request body / stream frame in MiB; larger answers 413 (16)")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="largest image in pixels (width x height), checked on the header before decoding (4e7)")
    p.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' on every route but /healthz and the "
                                     f"page (default: the environment variable {API_KEY_ENV}, else no key)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow cross-origin requests from this origin (repeatable; default: no CORS)")
    p.add_argument("--flip-test", action="store_true", help="top-down flip test")
    p.add_argument("--ort-spinning", choices=["on", "off"], default="off",
                   help="onnxruntime's thread spinning (busy-waiting between runs). Off by default: the spinning "
                        "threads take the cores the event loop and the decoding need (docs/serve.md)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)


def build_service(args: argparse.Namespace):
    """``(app, config)`` from the parsed arguments: every model loaded (``--workers`` replicas each)."""
    import os

    from posekit.serving import ServeConfig, create_app

    for name, minimum in (("workers", 1), ("queue_size", 0), ("port", 0)):
        if getattr(args, name) < minimum:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {minimum}, got {getattr(args, name)}")
    if not args.max_body_mb > 0 or not args.timeout > 0 or args.max_pixels < 1:
        raise ValueError("--max-body-mb, --timeout and --max-pixels must be positive")
    models: dict[str, list] = {}
    for spec in model_specs(args):
        replicas = [spec.build(threads=args.threads, flip_test=args.flip_test, spinning=args.ort_spinning == "on")
                    for _ in range(args.workers)]
        name = replicas[0].card.name
        if name in models:
            raise ValueError(f"--model {spec.model}: a model named {name!r} is already served; serve each card once")
        models[name] = replicas
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    config = ServeConfig(max_body_bytes=int(args.max_body_mb * 2 ** 20), max_pixels=args.max_pixels,
                         queue_size=args.queue_size, timeout_s=args.timeout, api_key=api_key,
                         cors_origins=tuple(args.cors_origin))
    return create_app(models, config), config


def run(args: argparse.Namespace) -> int:
    import uvicorn

    app, config = build_service(args)
    names = ", ".join(app.state.service.names)
    print(f"posekit serve: {names} on http://{args.host}:{args.port}"
          + (" (API key required)" if config.api_key else ""), flush=True)
    # uvicorn handles SIGINT/SIGTERM: it stops accepting, lets in-flight requests finish (up to the request
    # timeout), then runs the lifespan shutdown (the worker threads finish).
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, ws_max_size=config.max_body_bytes,
                timeout_graceful_shutdown=int(config.timeout_s) + 1, server_header=False)
    return 0
