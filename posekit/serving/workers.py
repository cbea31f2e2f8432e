"""A bounded worker pool per model: inference runs on threads, never on the event loop.

Each model has ``workers`` replicas (``PoseEstimator`` objects, each with its own sessions and stage timer), each
owned by one thread for the life of the service, so a replica never serves two requests at once and its timer's
difference over a call is that request's per-stage times. The event loop puts jobs on the model's queue and awaits
their futures; a thread that finishes a job takes the next one from the queue itself (no round trip through the
event loop between two images, which on a busy machine costs a scheduling delay each). At most ``queue_size`` jobs
wait beyond the busy threads; one more is refused (``QueueFull``: the service answers 503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Callable, Sequence

__all__ = ["QueueFull", "ModelWorkers", "stage_times"]


class QueueFull(RuntimeError):
    """Every replica is busy and ``queue_size`` requests already wait."""


def stage_times(timer, before: dict[str, float]) -> dict[str, float]:
    """Milliseconds spent per stage since ``before`` (a copy of ``timer.totals``)."""
    return {k: 1e3 * (v - before.get(k, 0.0)) for k, v in timer.totals.items() if v - before.get(k, 0.0) > 0}


class _Job:
    __slots__ = ("fn", "future", "loop", "abandoned")

    def __init__(self, fn, future, loop) -> None:
        self.fn, self.future, self.loop, self.abandoned = fn, future, loop, False


class ModelWorkers:
    """The replicas of one model, their threads and their wait queue.

    ``await submit(fn)`` runs ``fn(estimator)`` on a replica's thread and returns its result (or raises its
    exception). A job whose caller gave up (a timeout) before it started is skipped; one that started runs to its
    end and holds its thread meanwhile (Python cannot stop a running network call), and counts in ``depth`` until
    then.
    """

    def __init__(self, name: str, estimators: Sequence, queue_size: int) -> None:
        if not estimators:
            raise ValueError(f"model {name!r}: at least one worker is needed")
        self.name = name
        self.estimators = list(estimators)
        self.queue_size = int(queue_size)
        self.depth = 0  # jobs queued or running (changed on the event loop only)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._serve, args=(est,), name=f"posekit-{name}-{i}", daemon=True)
                         for i, est in enumerate(self.estimators)]
        for t in self._threads:
            t.start()

    @property
    def capacity(self) -> int:
        return len(self.estimators) + self.queue_size

    def _serve(self, est) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.abandoned:
                result, error = None, None
            else:
                try:
                    result, error = job.fn(est), None
                except BaseException as e:  # noqa: BLE001 - handed to the awaiting request
                    result, error = None, e
            job.loop.call_soon_threadsafe(self._finish, job, result, error)

    def _finish(self, job: _Job, result, error) -> None:
        self.depth -= 1
        if job.future.done():  # the caller gave up (timeout, client gone)
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    async def submit(self, fn: Callable):
        if self.depth >= self.capacity:
            running = min(self.depth, len(self.estimators))
            raise QueueFull(f"model {self.name!r} is busy: {running} request(s) running and {self.depth - running} "
                            f"waiting (--queue-size {self.queue_size})")
        loop = asyncio.get_running_loop()
        job = _Job(fn, loop.create_future(), loop)
        self.depth += 1
        self._jobs.put(job)
        try:
            return await job.future
        except asyncio.CancelledError:
            job.abandoned = True  # skipped if it has not started yet
            raise

    def shutdown(self, timeout: float | None = None) -> None:
        """Let the queued and running jobs finish, then stop the threads."""
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout)


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
