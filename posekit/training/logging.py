"""Scalar logging: a CSV file and TensorBoard event files (through tensorboardX), written only by rank 0.

``scalars.csv`` is long-format: ``step,epoch,tag,value,wall_time``, one row per scalar. TensorBoard event files go
to ``out_dir/tb``; :func:`read_event_scalars` reads them back (tests, quick checks without TensorBoard).
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import Mapping

__all__ = ["ScalarLogger", "read_csv_scalars", "read_event_scalars"]


def read_event_scalars(path: str | os.PathLike) -> list[tuple[int, str, float]]:
    """``(step, tag, value)`` of every scalar in a TensorBoard event file (or every file of a folder), in order."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    path = Path(path)
    files = sorted(path.glob("events.out.tfevents.*")) if path.is_dir() else [path]
    out = []
    for f in files:
        data, i = f.read_bytes(), 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = Event.FromString(data[i + 12:i + 12 + n])
            i += 16 + n
            out.extend((int(event.step), v.tag, float(v.simple_value)) for v in event.summary.value)
    return out


class ScalarLogger:
    """``log(scalars, step, epoch)`` to ``out_dir/scalars.csv`` and ``out_dir/tb/`` (TensorBoard).

    ``enabled=False`` (ranks other than 0) makes every call a no-op. ``resume_step``: rows of an interrupted run
    with ``step > resume_step`` are dropped from the CSV first, so a resumed run's CSV has each step once.
    """

    FIELDS = ("step", "epoch", "tag", "value", "wall_time")

    def __init__(self, out_dir: str | os.PathLike, enabled: bool = True, resume_step: int | None = None,
                 tensorboard: bool = True):
        self.enabled = enabled
        self.csv_path = Path(out_dir) / "scalars.csv"
        self.tb = None
        if not enabled:
            return
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None or not self.csv_path.exists():
            with open(self.csv_path, "w", newline="") as f:
                csv.writer(f).writerow(self.FIELDS)
        else:
            rows = [r for r in read_csv_scalars(self.csv_path) if int(r["step"]) <= resume_step]
            tmp = self.csv_path.with_name(".scalars.csv.tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.FIELDS)
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, self.csv_path)
        if tensorboard:
            from tensorboardX import SummaryWriter

            # purge_step: TensorBoard hides the interrupted run's events past the resumed step
            self.tb = SummaryWriter(str(Path(out_dir) / "tb"), purge_step=None if resume_step is None
                                    else resume_step + 1, flush_secs=30)

    def log(self, scalars: Mapping[str, float], step: int, epoch: int) -> None:
        if not self.enabled or not scalars:
            return
        now = time.time()
        with open(self.csv_path, "a", newline="") as f:
            w = csv.writer(f)
            for tag, v in scalars.items():
                w.writerow([int(step), int(epoch), tag, repr(float(v)), f"{now:.3f}"])
        if self.tb is not None:
            for tag, v in scalars.items():
                if math.isfinite(float(v)):
                    self.tb.add_scalar(tag, float(v), int(step), walltime=now)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_csv_scalars(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``scalars.csv`` as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
