"""Video and webcam frames through a pose model, with decoding, the model and the consumer overlapped.

    runner = VideoRunner(estimator, tracker=GreedyTracker("coco17"))
    for i, frame, people in runner.run("clip.mp4"):      # frame order kept, track ids as the sequential loop
        writer.write(draw_people(frame, people))        # the consumer's work overlaps the next frames' model

Stages, each in its own thread, joined by bounded queues (``queue_size`` items each):

    reader ──► network ──► decoding + tracker ──► consumer (the caller)
    cv2 read    preprocess,   grouping / NMS,         drawing, encoding, results
                onnxruntime   tracker.update

(for models without a ``split`` the network and decoding are one stage). One thread per stage keeps the frame
order, and the tracker sees the frames in order in the last stage, so people and track ids are those of the
sequential loop (``pipelined=False``). OpenCV's decoding and encoding and onnxruntime release the GIL, so the network
of frame ``i + 1`` runs on one core while frame ``i`` is decoded (grouping), drawn and encoded on another. The queues
are bounded: a consumer slower than the model blocks the last stage, which blocks the one before, back to the reader,
so at most :attr:`VideoRunner.max_in_flight` frames are ever held, however slow the consumer is. An exception in a
stage is raised in the consumer at the frame where it happened; a consumer that stops early (``break``, an
exception) stops and joins the threads and releases the capture.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

__all__ = ["VideoRunner", "open_video", "video_frame_count", "video_fps", "video_ends_reason",
           "missing_frames_error", "shortfall_error"]

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


def video_frame_count(source: str | Path) -> int:
    """The frames a video file promises: the container's count (``CAP_PROP_FRAME_COUNT``), else (0 or missing)
    counted by grabbing every frame. Raises FileNotFoundError / RuntimeError (:func:`open_video`'s) when it does not
    open, RuntimeError when it has no frame. ``posekit predict`` (one process and ``--engine ray``) takes this as the
    promise that :func:`shortfall_error` checks the decoded frames against."""
    import cv2

    cap = open_video(Path(source))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if n <= 0:
            while cap.grab():
                n += 1
        if n <= 0:
            raise RuntimeError(f"video {source} has no frames")
        return n
    finally:
        cap.release()


def video_fps(cap) -> float:
    """A capture's frame rate, 25 when the container gives none (the rate of ``posekit predict``'s overlays)."""
    import cv2

    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    return fps if fps > 0 else 25.0


def video_ends_reason(frame: int) -> str:
    """Why the frames from ``frame`` on could not be read: the decoder stopped before the promised count."""
    return f"the video ends at frame {frame} (its header says more)"


def missing_frames_error(frames: list[int], reason: str) -> str:
    """The ``--errors`` entry of a video with unreadable frames (sorted frame numbers, the first reason)."""
    return f"{len(frames)} frame(s) could not be read ({frames[0]}..{frames[-1]}): {reason}"


def shortfall_error(promised: int, decoded: int) -> str | None:
    """The error of a video that promised ``promised`` frames (:func:`video_frame_count`, capped by
    ``--max-frames``) and decoded ``decoded`` (read in order until the first failed read), or None when nothing is
    missing. The same rule and text as the Ray engine's (frames ``decoded..promised-1`` missing, each ending at
    frame ``decoded``), so both paths flag the same videos with the same words; frames beyond the promise are
    never an error."""
    if decoded >= promised:
        return None
    return missing_frames_error(list(range(decoded, promised)), video_ends_reason(decoded))


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
        queue_size: items each queue between two stages holds (>= 1).
        split: ``(network, decoding)`` with ``decoding(frame, network(frame)) == model(frame)``: the pipelined
            runner then runs them in two threads (the network of frame ``i + 1`` overlaps the decoding of frame
            ``i``; ``PoseEstimator.video_stages()`` gives them for bottom-up and one-stage cards).

    Attributes (for tests and benchmarks): ``frames_read``, ``frames_done`` (handed to the consumer, which then asked
    for the next one), ``peak_in_flight`` (the most frames ever read and not yet done: in the queues, in the threads
    and in the consumer's hands) and ``max_in_flight`` (its bound: a full queue and one frame in every thread and in
    the consumer).
    """

    def __init__(self, model: Callable, tracker=None, timer=None, pipelined: bool = True,
                 queue_size: int = 4, split: tuple[Callable, Callable] | None = None) -> None:
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.model = model
        self.tracker = tracker
        self.timer = timer if timer is not None else getattr(model, "timer", None)
        self.pipelined = bool(pipelined)
        self.queue_size = int(queue_size)
        if split is None:
            self.stages: list[Callable] = [lambda frame, _: self.model(frame)]
        else:
            first, second = split
            self.stages = [lambda frame, _: first(frame), second]
        n = len(self.stages)  # worker threads; queues: one after the reader and after each worker
        self.max_in_flight = (n + 1) * self.queue_size + n + 2 if self.pipelined else 1
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

    def _apply(self, k: int, frame: np.ndarray, state):
        """Stage ``k`` on a frame; the last one ends with the tracker (so it sees the frames in order)."""
        out = self.stages[k](frame, state)
        if k == len(self.stages) - 1 and self.tracker is not None:
            out = self.tracker.update(out)
        return out

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
                state = None
                for k in range(len(self.stages)):
                    state = self._apply(k, frame, state)
                yield i, frame, state
                self._count_done()
                i += 1
        finally:
            cap.release()

    def _pipelined(self, cap, max_frames):
        queues = [queue.Queue(maxsize=self.queue_size) for _ in range(len(self.stages) + 1)]
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
                    if not put(queues[0], (i, frame, None)):
                        return
                    i += 1
                put(queues[0], _END)
            except BaseException as e:  # noqa: BLE001 - carried to the consumer
                put(queues[0], _Failed(e))

        def worker(k: int) -> None:
            src, dst = queues[k], queues[k + 1]
            while not stop.is_set():
                try:
                    item = src.get(timeout=0.05)
                except queue.Empty:
                    continue
                if item is _END or isinstance(item, _Failed):
                    put(dst, item)
                    return
                i, frame, state = item
                try:
                    state = self._apply(k, frame, state)
                except BaseException as e:  # noqa: BLE001 - carried to the consumer
                    put(dst, _Failed(e))
                    return
                if not put(dst, (i, frame, state)):
                    return

        threads = [threading.Thread(target=reader, name="posekit-video-reader", daemon=True)]
        threads += [threading.Thread(target=worker, args=(k,), name=f"posekit-video-stage{k}", daemon=True)
                    for k in range(len(self.stages))]
        for t in threads:
            t.start()
        try:
            while True:
                item = queues[-1].get()
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
