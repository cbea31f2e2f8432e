"""A bounded worker pool per model: inference runs on threads, never on the event loop.

Each model has ``workers`` replicas (``PoseEstimator`` objects, each with its own sessions and stage timer) and as
many threads; a replica serves one request at a time, so its timer's difference over a call is that request's
per-stage times. At most ``queue_size`` requests wait for a free replica; one more is refused (``QueueFull``:
the service answers 503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

__all__ = ["QueueFull", "ModelWorkers", "stage_times"]


class QueueFull(RuntimeError):
    """Every replica is busy and ``queue_size`` requests already wait."""


def stage_times(timer, before: dict[str, float]) -> dict[str, float]:
    """Milliseconds spent per stage since ``before`` (a copy of ``timer.totals``)."""
    return {k: 1e3 * (v - before.get(k, 0.0)) for k, v in timer.totals.items() if v - before.get(k, 0.0) > 0}


class ModelWorkers:
    """The replicas of one model, their threads and their wait queue.

    ``await submit(fn)`` runs ``fn(estimator)`` on a free replica's thread and returns its result. A replica is given
    back when its thread finishes, not when the awaiting request gives up (a timed-out call keeps its replica until
    the network returns, so no replica ever serves two requests at once).
    """

    def __init__(self, name: str, estimators: Sequence, queue_size: int) -> None:
        if not estimators:
            raise ValueError(f"model {name!r}: at least one worker is needed")
        self.name = name
        self.estimators = list(estimators)
        self.queue_size = int(queue_size)
        self.executor = ThreadPoolExecutor(len(self.estimators), thread_name_prefix=f"posekit-{name}")
        self._free: asyncio.Queue | None = None
        self.waiting = 0  # requests waiting for a replica
        self.running = 0  # requests on a replica

    @property
    def depth(self) -> int:
        """Requests waiting or running."""
        return self.waiting + self.running

    def _queue(self) -> asyncio.Queue:
        if self._free is None:  # created in the running loop
            self._free = asyncio.Queue()
            for est in self.estimators:
                self._free.put_nowait(est)
        return self._free

    async def submit(self, fn: Callable):
        free = self._queue()
        if free.empty() and self.waiting >= self.queue_size:
            raise QueueFull(f"model {self.name!r} is busy: {self.running} request(s) running and {self.waiting} "
                            f"waiting (--queue-size {self.queue_size})")
        self.waiting += 1
        try:
            est = await free.get()
        finally:
            self.waiting -= 1
        loop = asyncio.get_running_loop()
        self.running += 1

        def release(_):
            loop.call_soon_threadsafe(self._release, est)

        try:
            cf = self.executor.submit(fn, est)
        except BaseException:
            self._release(est)
            raise
        cf.add_done_callback(release)
        return await asyncio.wrap_future(cf)

    def _release(self, est) -> None:
        self.running -= 1
        self._queue().put_nowait(est)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)


class RateWindow:
    """Events per second over the last ``window`` seconds (the images/s gauge)."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self.times: list[float] = []
        self.start = time.monotonic()

    def add(self) -> None:
        now = time.monotonic()
        self.times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        cut = now - self.window
        i = 0
        while i < len(self.times) and self.times[i] < cut:
            i += 1
        del self.times[:i]

    def rate(self) -> float:
        now = time.monotonic()
        self._trim(now)
        span = min(self.window, max(now - self.start, 1e-9))
        return len(self.times) / span
