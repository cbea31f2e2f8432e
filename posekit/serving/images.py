"""Uploaded image bytes -> ``H x W x 3`` BGR, refusing anything over the pixel limit before it is decoded."""

from __future__ import annotations

import io
import warnings

import numpy as np

from posekit.data.io import ImageReadError, decode_image

__all__ = ["ImageRejected", "image_size", "decode_upload"]


class ImageRejected(ValueError):
    """An upload that is not served: ``status`` (400 bad data, 413 too many pixels) and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def image_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` read from the image header only (Pillow reads no pixel data in ``Image.open``).

    Raises ImageRejected: 400 for empty data or a format Pillow does not identify; 413 when ``width * height``
    exceeds ``max_pixels`` (a decompression bomb: a small file that declares a huge image)."""
    from PIL import Image

    if not data:
        raise ImageRejected(400, "empty image: the request has no image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
    except Image.DecompressionBombError as e:
        raise ImageRejected(413, f"image too large: {e} (this server's limit: {max_pixels} pixels)") from None
    except Exception as e:  # Pillow raises UnidentifiedImageError, SyntaxError, struct.error... on garbage
        raise ImageRejected(400, f"not an image (the bytes are no known image format: {type(e).__name__})") \
            from None
    if w <= 0 or h <= 0:
        raise ImageRejected(400, f"not an image: it declares a size of {w}x{h} pixels")
    if w * h > max_pixels:
        raise ImageRejected(413, f"image too large: {w}x{h} = {w * h} pixels, the limit is {max_pixels} pixels "
                                 f"(--max-pixels)")
    return w, h


def decode_upload(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """The image of an upload, decoded like ``posekit.data.io.read_image`` (same pixels as reading the file);
    ``size`` is what :func:`image_size` read from its header (checked against the pixel limit there), and the
    decoded image must have it. Raises ImageRejected (400)."""
    w, h = size
    try:
        img = decode_image(data, "upload")
    except ImageReadError as e:
        raise ImageRejected(400, f"cannot decode the image: {e.reason}") from None
    if img.shape[:2] != (h, w):  # the header lied about the size (never trust it for the pixel limit)
        raise ImageRejected(400, f"the image header declares {w}x{h} but the data decodes to "
                                 f"{img.shape[1]}x{img.shape[0]}")
    return img
