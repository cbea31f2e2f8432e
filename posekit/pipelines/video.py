"""Video and webcam frames through a pose model, with decoding, the model and the consumer overlapped.

    runner = VideoRunner(estimator, tracker=GreedyTracker("coco17"))
    for i, frame, people in runner.run("clip.mp4"):      # frame order kept, track ids as the sequential loop
        writer.write(draw_people(frame, people))        # the consumer's work overlaps the next frames' model

Three stages, each in its own thread, joined by bounded queues:

    reader thread ──(frames, ≤ queue_size)──► model thread ──(people, ≤ queue_size)──► consumer (the caller)
    cv2.VideoCapture.read                      estimator(frame), tracker.update        drawing, encoding, results

One reader and one model thread keep the frame order, and the tracker sees the frames in order in the model thread,
so people and track ids are those of the sequential loop (``pipelined=False``). OpenCV's decoding and encoding and
onnxruntime release the GIL, so the stages run on separate cores. The queues are bounded: a consumer slower than
the model blocks the model thread, which blocks the reader, so at most :attr:`VideoRunner.max_in_flight` frames are
ever held (``2 * queue_size + 3``: both queues full, one frame in each thread), however slow the consumer is. An
exception in the reader or the model is raised in the consumer at the frame where it happened; a consumer that stops
early (``break``, an exception) stops and joins the threads and releases the capture.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

__all__ = ["VideoRunner", "open_video"]

_END = object()  # end of stream


def open_video(source: str | int | Path):
    """``cv2.VideoCapture`` for a file path or a webcam index (``0`` or ``"0"``); raises a clear error when it
    cannot be opened."""
    import cv2

    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        cap = cv2.VideoCapture(int(source))
        what = f"webcam {int(source)}"
    else:
        p = Path(source)
        if not p.exists():
            raise FileNotFoundError(f"video not found: {p}")
        cap = cv2.VideoCapture(str(p))
        what = f"video {p}"
    if not cap.isOpened():
        cap.release()
        raise RuntimeError(f"cannot open {what} (not a readable video / no such camera)")
    return cap


class _Failed:
    """An exception raised in a worker thread, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class VideoRunner:
    """Run ``model(frame) -> people`` over a video or webcam, pipelined (default) or one frame after another.

    Args:
        model: ``frame -> list[Person]`` (a :class:`~posekit.pipelines.estimator.PoseEstimator`).
        tracker: an object with ``update(people) -> people`` (e.g. :class:`~posekit.pipelines.tracking.GreedyTracker`),
            or None (no track ids).
        timer: a :class:`~posekit.pipelines.estimator.StageTimer` whose ``"decode"`` stage gets the reading time
            (default: ``model.timer`` when it has one).
        pipelined: False runs the sequential loop (read, model, track, yield) in the caller's thread.
        queue_size: frames each queue holds (>= 1).

    Attributes (for tests and benchmarks): ``frames_read``, ``frames_done`` (handed to the consumer, which then asked
    for the next one), ``peak_in_flight`` (the most frames ever read and not yet done: in the queues, in the threads
    and in the consumer's hands) and ``max_in_flight`` (its bound).
    """

    def __init__(self, model: Callable, tracker=None, timer=None, pipelined: bool = True,
                 queue_size: int = 4) -> None:
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.model = model
        self.tracker = tracker
        self.timer = timer if timer is not None else getattr(model, "timer", None)
        self.pipelined = bool(pipelined)
        self.queue_size = int(queue_size)
        self.max_in_flight = 2 * self.queue_size + 3 if self.pipelined else 1
        self._reset()

    def _reset(self) -> None:
        self.frames_read = 0
        self.frames_done = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()

    def _count_read(self) -> None:
        with self._lock:
            self.frames_read += 1
            self.peak_in_flight = max(self.peak_in_flight, self.frames_read - self.frames_done)

    def _count_done(self) -> None:
        with self._lock:
            self.frames_done += 1

    def _read(self, cap) -> tuple[bool, np.ndarray | None]:
        if self.timer is None:
            return cap.read()
        with self.timer.stage("decode"):
            return cap.read()

    def _people(self, frame: np.ndarray):
        people = self.model(frame)
        return self.tracker.update(people) if self.tracker is not None else people

    # ------------------------------------------------------------------------------------------------ running
    def run(self, source: str | int | Path, max_frames: int | None = None
            ) -> Iterator[tuple[int, np.ndarray, list]]:
        """Yield ``(frame_index, frame, people)`` for every frame of ``source`` (a video path or webcam index), in
        order, up to ``max_frames``."""
        cap = open_video(source)  # errors (missing file, no camera) are raised here, before any thread starts
        self._reset()
        if not self.pipelined:
            return self._sequential(cap, max_frames)
        return self._pipelined(cap, max_frames)

    def _sequential(self, cap, max_frames):
        try:
            i = 0
            while max_frames is None or i < max_frames:
                ok, frame = self._read(cap)
                if not ok:
                    break
                self._count_read()
                people = self._people(frame)
                self._count_done()
                yield i, frame, people
                i += 1
        finally:
            cap.release()

    def _pipelined(self, cap, max_frames):
        frames: queue.Queue = queue.Queue(maxsize=self.queue_size)
        results: queue.Queue = queue.Queue(maxsize=self.queue_size)
        stop = threading.Event()

        def put(q: queue.Queue, item) -> bool:
            """Put unless stopped (the consumer went away); False when stopped."""
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def reader() -> None:
            try:
                i = 0
                while max_frames is None or i < max_frames:
                    if stop.is_set():
                        return
                    ok, frame = self._read(cap)
                    if not ok:
                        break
                    self._count_read()
                    if not put(frames, (i, frame)):
                        return
                    i += 1
                put(frames, _END)
            except BaseException as e:  # noqa: BLE001 - carried to the consumer
                put(frames, _Failed(e))

        def worker() -> None:
            while not stop.is_set():
                try:
                    item = frames.get(timeout=0.05)
                except queue.Empty:
                    continue
                if item is _END or isinstance(item, _Failed):
                    put(results, item)
                    return
                i, frame = item
                try:
                    people = self._people(frame)
                except BaseException as e:  # noqa: BLE001 - carried to the consumer
                    put(results, _Failed(e))
                    return
                if not put(results, (i, frame, people)):
                    return

        threads = [threading.Thread(target=reader, name="posekit-video-reader", daemon=True),
                   threading.Thread(target=worker, name="posekit-video-model", daemon=True)]
        for t in threads:
            t.start()
        try:
            while True:
                item = results.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
                self._count_done()
        finally:
            stop.set()
            for t in threads:
                t.join()
            cap.release()
