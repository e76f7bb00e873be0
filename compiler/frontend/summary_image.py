"""Images for ``tf.summary.image``: TF's conversion of one [H, W, C] image to uint8 pixels
and a small PNG encoder (zlib + CRC from the standard library; no imaging dependency).

TF's rule (``ImageSummaryOp``): uint8 images are kept as they are.  A float image is scaled
on its own: with no negative value by ``255 / max`` (so its largest value becomes 255),
otherwise by ``127 / max|value|`` around 128; a maximum under 1e-6 scales by 0; the
products are truncated to uint8.  Pixels with a NaN or infinite channel are ignored for the
range and drawn in red (255, 0, 0, 255 cut to C channels).
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

_BAD_COLOR = np.array([255, 0, 0, 255], np.uint8)
_ZERO_THRESHOLD = np.float32(1e-6)
_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (gray, gray+alpha, RGB, RGBA)


def image_pixels(image: np.ndarray) -> np.ndarray:
    """One [H, W, C] image as uint8 pixels, by TF's rule (module doc)."""
    if image.dtype == np.uint8:
        return image
    h, w, c = image.shape
    flat = image.reshape(h * w, c)
    finite = np.isfinite(flat).all(axis=1)
    good = flat[finite].astype(np.float32)
    lo = good.min() if good.size else np.float32(np.inf)
    hi = good.max() if good.size else np.float32(-np.inf)
    if lo < 0:
        max_val = max(abs(lo), abs(hi))
        scale = np.float32(0) if max_val < _ZERO_THRESHOLD else np.float32(127) / max_val
        offset = 128
    else:
        scale = np.float32(0) if hi < _ZERO_THRESHOLD else np.float32(255) / hi
        offset = 0
    dtype = flat.dtype.type
    pixels = np.empty((h * w, c), np.uint8)
    pixels[finite] = (flat[finite] * dtype(scale) + dtype(offset)).astype(np.uint8)
    pixels[~finite] = _BAD_COLOR[:c]
    return pixels.reshape(h, w, c)


def png(pixels: np.ndarray) -> bytes:
    """PNG bytes of uint8 ``pixels`` [H, W, C] (C = 1, 2, 3 or 4; 8 bits, no filtering)."""
    h, w, c = pixels.shape
    if h == 0 or w == 0:
        raise ValueError(f"cannot encode an image of shape {list(pixels.shape)} as PNG: it has no pixels")
    rows = np.concatenate([np.zeros((h, 1), np.uint8), np.ascontiguousarray(pixels).reshape(h, w * c)], axis=1)
    header = struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPE[c], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + _chunk(b"IEND", b""))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
