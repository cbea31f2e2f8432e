"""Image reading and writing with clear errors.

:func:`read_image` returns an ``H x W x 3`` uint8 **BGR** array (OpenCV's layout) for any image OpenCV can decode,
from any path (non-ASCII paths included: the bytes are read with NumPy and decoded in memory). It raises
:class:`ImageReadError` (a ``ValueError``) naming the path when the file is missing, cannot be decoded, or is
**truncated** -- OpenCV happily decodes a JPEG that was cut short and fills the missing rows with grey, so the
container is checked first (JPEG end-of-image marker after the main scan, PNG ``IEND`` chunk, BMP/WebP declared
sizes).

:func:`write_image` writes atomically: the encoded bytes go to a temporary file in the destination folder, which
then replaces the destination with ``os.replace``. A failing write leaves neither a partial file nor a temporary
file behind, and an existing destination untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["ImageReadError", "read_image", "decode_image", "write_image", "write_bytes_atomic", "is_truncated",
           "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "is_video", "media_files", "TORCH_SUFFIXES", "is_torch_weights"]

#: Extensions :func:`write_image` accepts (lower case, with the dot).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: what ``posekit predict`` (and a batch run) reads as a video
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def is_video(path: str | os.PathLike) -> bool:
    """Whether the file name has one of :data:`VIDEO_EXTENSIONS` (any case)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def media_files(folder: str | os.PathLike) -> list[Path]:
    """The images and videos of a folder (one level), sorted by name: the order ``posekit predict`` reads them."""
    return sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)

#: weight file suffixes that select the PyTorch backend (a name test, here so that torch-free code can ask it).
TORCH_SUFFIXES = (".pth", ".pt")


def is_torch_weights(path) -> bool:
    """True for a ``.pth`` / ``.pt`` file name."""
    return path is not None and Path(str(path)).suffix.lower() in TORCH_SUFFIXES


class ImageReadError(ValueError):
    """An image file is missing, unreadable, undecodable or truncated. ``path`` names the file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


# ------------------------------------------------------------------------------------------- truncation checks
def _jpeg_complete(buf: bytes) -> bool:
    """True when a JPEG byte string has an end-of-image marker after its main scan.

    The marker segments are walked from the start (so an EXIF thumbnail, which has its own SOS/EOI inside an APP1
    segment, is skipped); after the first top-level start-of-scan the entropy-coded data cannot contain ``FF D9``
    (0xFF bytes are stuffed there), so its presence means the file was written to the end. Trailing data after the
    EOI (camera trailers) is fine.
    """
    n = len(buf)
    i = 2
    while i + 1 < n:
        if buf[i] != 0xFF:
            # Not where a marker must be: the header is not what we expect; fall back to a plain search.
            return buf.rfind(b"\xff\xd9") > 2
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:  # EOI before any scan (header-only file): decodable but no image data
            return False
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # stand-alone markers
            i += 2
            continue
        if i + 4 > n:
            return False
        length = (buf[i + 2] << 8) | buf[i + 3]
        if marker == 0xDA:  # start of scan
            return buf.find(b"\xff\xd9", i + 2 + length) != -1
        i += 2 + length
    return False  # ended inside the header


def is_truncated(buf: bytes) -> bool:
    """Whether an encoded image (JPEG, PNG, BMP, WebP) is visibly cut short. Other formats: False."""
    if buf[:3] == b"\xff\xd8\xff":
        return not _jpeg_complete(buf)
    if buf[:8] == b"\x89PNG\r\n\x1a\n":
        return buf.rfind(b"IEND") == -1
    if buf[:2] == b"BM" and len(buf) >= 6:
        declared = int.from_bytes(buf[2:6], "little")
        return declared > len(buf)
    if buf[:4] == b"RIFF" and buf[8:12] == b"WEBP":
        declared = int.from_bytes(buf[4:8], "little") + 8
        return declared > len(buf)
    return False


# ---------------------------------------------------------------------------------------------------- reading
def read_image(path: str | os.PathLike, exif_orientation: bool = False, reduce: int = 1) -> np.ndarray:
    """Read an image file as ``H x W x 3`` uint8 BGR.

    Grey images are replicated to three channels, an alpha channel is dropped (colour kept as stored), 16-bit
    images are scaled to 8 bits.

    Args:
        path: the image file (any characters; read with ``np.fromfile`` and decoded with ``cv2.imdecode``).
        exif_orientation: apply the EXIF orientation tag. Off by default: COCO-style annotations refer to the
            pixels as stored.
        reduce: 1, 2, 4 or 8: decode at that fraction of the size (``cv2.IMREAD_REDUCED_COLOR_*``: JPEG scales in
            the DCT domain, several times faster than a full decode and a resize); the result is
            ``ceil(W / reduce) x ceil(H / reduce)``.

    Raises:
        ImageReadError: naming the path, when the file is missing, is not a file, cannot be read, is empty,
            is truncated or cannot be decoded.
    """
    if reduce not in (1, 2, 4, 8):
        raise ValueError(f"read_image: reduce must be 1, 2, 4 or 8, got {reduce!r}")
    p = Path(path)
    if not p.exists():
        raise ImageReadError(p, "file not found")
    if not p.is_file():
        raise ImageReadError(p, "not a file")
    try:
        raw = np.fromfile(str(p), dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(p, f"{type(e).__name__}: {e}") from e
    return decode_image(raw, p, exif_orientation, reduce)


def decode_image(data: bytes | np.ndarray, name: str | os.PathLike = "image", exif_orientation: bool = False,
                 reduce: int = 1) -> np.ndarray:
    """Decode encoded image bytes (a file's content, an upload) as ``read_image`` does (``reduce`` as there);
    ``ImageReadError`` naming ``name`` when they are empty, truncated or not decodable."""
    import cv2

    if reduce not in (1, 2, 4, 8):
        raise ValueError(f"read_image: reduce must be 1, 2, 4 or 8, got {reduce!r}")

    raw = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if raw.size == 0:
        raise ImageReadError(name, "empty file")
    if is_truncated(raw.tobytes()):
        raise ImageReadError(name, "truncated file (the image data ends before its end marker)")
    reduced = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
               8: cv2.IMREAD_REDUCED_COLOR_8}
    flags = reduced[reduce] if exif_orientation else reduced[reduce] | cv2.IMREAD_IGNORE_ORIENTATION
    img = cv2.imdecode(raw, flags)
    if img is None:
        raise ImageReadError(name, "not a decodable image (unknown format or corrupt data)")
    if img.ndim == 2:  # defensive: IMREAD_COLOR always gives 3 channels
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.dtype != np.uint8:
        img = (img / 256).astype(np.uint8) if img.dtype == np.uint16 else np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


# ---------------------------------------------------------------------------------------------------- writing
_UMASK: list[int] = []


def _umask() -> int:
    if not _UMASK:
        current = os.umask(0o022)
        os.umask(current)
        _UMASK.append(current)
    return _UMASK[0]


def write_image(path: str | os.PathLike, img: np.ndarray, quality: int | None = None) -> Path:
    """Write an image atomically; create missing parent folders. Returns the path written.

    Args:
        path: destination; the extension picks the format (one of :data:`IMAGE_EXTENSIONS`, any case).
        img: ``H x W x 3`` BGR, ``H x W x 4`` BGRA or ``H x W`` grey, uint8 (uint16 also for PNG/TIFF).
        quality: JPEG/WebP quality 1..100 (OpenCV's default, 95, when None).

    Raises:
        ValueError: unknown extension, or an array that is not an image (naming the path and the shape/dtype).
        OSError: the file system refused the write (no partial or temporary file is left behind).
    """
    import cv2

    p = Path(path)
    ext = p.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"cannot write image {p}: unknown extension {p.suffix!r}; use one of {list(IMAGE_EXTENSIONS)}")
    img = np.asarray(img)
    ok_channels = img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3, 4))
    ok_dtype = img.dtype == np.uint8 or (img.dtype == np.uint16 and ext in (".png", ".tif", ".tiff"))
    if not ok_channels or not ok_dtype or img.size == 0:
        raise ValueError(
            f"cannot write image {p}: expected HxW, HxWx3 or HxWx4 uint8 (uint16 for png/tiff), "
            f"got shape {img.shape} dtype {img.dtype}"
        )
    params: list[int] = []
    if quality is not None:
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"cannot write image {p}: quality must be 1..100, got {quality}")
        if ext in (".jpg", ".jpeg"):
            params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
        elif ext == ".webp":
            params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(img), params)
    if not ok:
        raise ValueError(f"cannot write image {p}: OpenCV could not encode a {img.shape} {img.dtype} array as {ext}")

    return write_bytes_atomic(p, buf.tobytes())


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the destination folder (created if needed),
    fsync, then ``os.replace``. A failing write leaves neither a partial file nor a temporary one, and an existing
    destination untouched. Returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent))
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p


def read_json(path: str | os.PathLike, what: str = "json file"):
    """Parse a json file; a missing file or invalid json raises an error naming ``what`` and the path.

    orjson parses it when installed (about twice as fast on large annotation and results files, same values); what
    orjson refuses (``NaN`` literals, integers beyond 64 bits) goes to the standard library's parser, whose error
    (or result) is the one returned."""
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is in the evaluation extra
        orjson = None
    if orjson is not None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
