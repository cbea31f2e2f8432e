"""Scalar logging: a CSV file and TensorBoard event files, written only by rank 0.

The TensorBoard writer is self-contained (no ``tensorboard``/``tensorboardX`` dependency): it writes the
TFRecord framing (length, masked CRC-32C of the length, payload, masked CRC-32C of the payload) around
protobuf-encoded ``Event`` messages (``wall_time``, ``step``, ``file_version`` or ``summary`` with
``Value{tag, simple_value}``), which is what TensorBoard's scalar dashboard reads. :func:`read_event_scalars`
parses such a file back (checking every CRC).

``scalars.csv`` is long-format: ``step,epoch,tag,value,wall_time``, one row per scalar.
"""

from __future__ import annotations

import csv
import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import Iterator, Mapping

__all__ = ["crc32c", "masked_crc32c", "EventFileWriter", "read_event_scalars", "ScalarLogger", "read_csv_scalars"]


# --------------------------------------------------------------------------------------------- CRC-32C
def _make_table() -> list[int]:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``."""
    c = 0xFFFFFFFF
    t = _TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 and add ``0xa282ead8`` (mod 2**32)."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------------------------- protobuf bits
def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(num: int, payload: bytes) -> bytes:
    return _varint((num << 3) | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, *, file_version: str | None = None,
           scalars: Mapping[str, float] | None = None) -> bytes:
    msg = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(int(step))
    if file_version is not None:
        msg += _len_field(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _len_field(1, _len_field(1, str(tag).encode()) + b"\x15" + struct.pack("<f", float(v)))
            for tag, v in scalars.items()
        )
        msg += _len_field(5, summary)
    return msg


def _record(payload: bytes) -> bytes:
    header = struct.pack("<Q", len(payload))
    return header + struct.pack("<I", masked_crc32c(header)) + payload + struct.pack("<I", masked_crc32c(payload))


class EventFileWriter:
    """Appends scalar summaries to ``log_dir/events.out.tfevents.<time>.<host>.<pid>``."""

    def __init__(self, log_dir: str | os.PathLike):
        d = Path(log_dir)
        d.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = d / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}"
        self._f = open(self.path, "ab")
        self._f.write(_record(_event(now, 0, file_version="brain.Event:2")))
        self._f.flush()

    def add_scalars(self, scalars: Mapping[str, float], step: int, wall_time: float | None = None) -> None:
        finite = {k: float(v) for k, v in scalars.items() if math.isfinite(float(v))}
        if finite:
            self._f.write(_record(_event(time.time() if wall_time is None else wall_time, step, scalars=finite)))

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            self._f.close()


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        elif wt == 2:
            n, i = _read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield num, wt, v


def read_event_scalars(path: str | os.PathLike) -> list[tuple[int, str, float]]:
    """``[(step, tag, value), ...]`` of the scalar summaries in one event file (CRCs checked)."""
    data = Path(path).read_bytes()
    out, i = [], 0
    while i < len(data):
        if i + 12 > len(data):
            raise ValueError(f"{path}: truncated record header at byte {i}")
        header = data[i:i + 8]
        (n,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", data[i + 8:i + 12])
        if hcrc != masked_crc32c(header):
            raise ValueError(f"{path}: bad length CRC at byte {i}")
        payload = data[i + 12:i + 12 + n]
        (pcrc,) = struct.unpack("<I", data[i + 12 + n:i + 16 + n])
        if len(payload) != n or pcrc != masked_crc32c(payload):
            raise ValueError(f"{path}: bad payload CRC at byte {i}")
        i += 16 + n
        step = 0
        for num, _, v in _fields(payload):
            if num == 2:
                step = int(v)
            elif num == 5:
                for vnum, _, value in _fields(v):
                    if vnum != 1:
                        continue
                    tag, simple = None, None
                    for fnum, fwt, fv in _fields(value):
                        if fnum == 1:
                            tag = fv.decode()
                        elif fnum == 2 and fwt == 5:
                            simple = struct.unpack("<f", fv)[0]
                    if tag is not None and simple is not None:
                        out.append((step, tag, simple))
    return out


# --------------------------------------------------------------------------------------------- logger
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
            self.tb = EventFileWriter(Path(out_dir) / "tb")

    def log(self, scalars: Mapping[str, float], step: int, epoch: int) -> None:
        if not self.enabled or not scalars:
            return
        now = time.time()
        with open(self.csv_path, "a", newline="") as f:
            w = csv.writer(f)
            for tag, v in scalars.items():
                w.writerow([int(step), int(epoch), tag, repr(float(v)), f"{now:.3f}"])
        if self.tb is not None:
            self.tb.add_scalars(scalars, step, now)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_csv_scalars(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``scalars.csv`` as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
