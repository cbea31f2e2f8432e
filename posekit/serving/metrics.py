"""Prometheus metrics of the service (``GET /metrics``), on a registry of its own per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, disable_created_metrics, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from posekit.serving.workers import RateWindow

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    """``posekit_requests_total{route,status}``, ``posekit_request_seconds{route}``,
    ``posekit_stage_seconds{model,stage}``, ``posekit_queue_depth{model}``, ``posekit_images_total{model}``,
    ``posekit_images_per_second{model}`` (last 10 s) and ``posekit_stream_frames_dropped_total``."""

    def __init__(self, workers: dict) -> None:
        disable_created_metrics()  # no ``*_created`` series (process-wide; the service owns its process)
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("posekit_requests", "HTTP requests and websocket sessions by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("posekit_request_seconds", "request latency by route", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.stages = Histogram("posekit_stage_seconds", "time per pipeline stage per image", ["model", "stage"],
                                buckets=_LATENCY_BUCKETS, registry=r)
        self.images = Counter("posekit_images", "images run through a model", ["model"], registry=r)
        self.dropped = Counter("posekit_stream_frames_dropped", "stream frames replaced by a newer one before they "
                               "were run", registry=r)
        depth = Gauge("posekit_queue_depth", "requests waiting for or running on a model's workers", ["model"],
                      registry=r)
        rate = Gauge("posekit_images_per_second", "images per second over the last 10 s", ["model"], registry=r)
        self.windows = {name: RateWindow(10.0) for name in workers}
        for name, w in workers.items():
            depth.labels(name).set_function(lambda w=w: w.depth)
            rate.labels(name).set_function(lambda win=self.windows[name]: win.rate())

    def image_done(self, model: str, times_ms: dict[str, float]) -> None:
        self.images.labels(model).inc()
        self.windows[model].add()
        for stage, ms in times_ms.items():
            self.stages.labels(model, stage).observe(ms / 1e3)

    def render(self) -> bytes:
        return generate_latest(self.registry)
