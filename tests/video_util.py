"""Test videos: written with OpenCV, an MP4 made streamable (moov before mdat), files cut short."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_video(path, frames: list[np.ndarray], fourcc: str, fps: float = 10) -> Path:
    import cv2

    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    for f in frames:
        vw.write(f)
    vw.release()
    return Path(path)


def faststart(data: bytes) -> bytes:
    """An MP4 with its index (``moov``) moved before the frames (``mdat``), chunk offsets (``stco``) shifted by
    the index's size, as ``ffmpeg -movflags faststart`` does. OpenCV writes the index last, so an OpenCV MP4 cut
    short loses it and does not open; a faststart MP4 cut short opens, promises every frame, and decodes the
    frames that are left."""
    top, i = {}, 0
    while i < len(data):
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        top[kind] = data[i:i + size]
        i += size
    moov = bytearray(top[b"moov"])

    def shift(start: int, end: int) -> None:
        j = start
        while j < end:
            size, kind = struct.unpack(">I4s", moov[j:j + 8])
            if kind in (b"trak", b"mdia", b"minf", b"stbl"):
                shift(j + 8, j + size)
            elif kind == b"stco":
                n = struct.unpack(">I", moov[j + 12:j + 16])[0]
                for k in range(n):
                    o = j + 16 + 4 * k
                    moov[o:o + 4] = struct.pack(">I", struct.unpack(">I", moov[o:o + 4])[0] + len(moov))
            j += size

    shift(8, len(moov))
    return top[b"ftyp"] + top.get(b"free", b"") + bytes(moov) + top[b"mdat"]


def cut_in_half(path, streamable_mp4: bool = False) -> Path:
    """Keep the first half of a video file (an MP4 made streamable first with ``streamable_mp4``)."""
    p = Path(path)
    data = p.read_bytes()
    if streamable_mp4:
        data = faststart(data)
    p.write_bytes(data[:len(data) // 2])
    return p


def read_frames(path) -> list[np.ndarray]:
    """Every frame that decodes, from the start until the first failed read."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def decodable_frames(path) -> int:
    return len(read_frames(path))
