"""Write a data set split as PNG files, one folder per class (scoring inputs, test fixtures)."""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from trainer.data import DatasetError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def encode_png(pixels: np.ndarray) -> bytes:
    """A PNG of uint8 pixels [H, W, 1] (grayscale) or [H, W, 3] (RGB).

    Written directly (header, one zlib stream of unfiltered rows, end marker): for 28x28 images
    Pillow's per-image encoder set-up costs ten times more than the compression itself, which
    matters when a split has tens of thousands of images.
    """
    height, width, channels = pixels.shape
    if pixels.dtype != np.uint8 or channels not in (1, 3):
        raise ValueError(f"expected uint8 [H, W, 1 or 3] pixels, got {pixels.dtype} {pixels.shape}")
    color_type = 0 if channels == 1 else 2
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)
    # Each row starts with its filter type; 0 means "none".
    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(scanlines, 6))
        + _chunk(b"IEND", b"")
    )


def export_images(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    out: Path,
    limit: int | None = None,
) -> Counter:
    """Write `OUT/<class name>/<index>.png` for the first `limit` images; return counts per class.

    The index is the image's position in the split, zero-padded to at least five digits, so
    names are stable across runs and unique across classes.
    """
    for name in class_names:
        if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
            raise DatasetError(f"class name {name!r} cannot be a folder name")
    count = len(labels) if limit is None else min(limit, len(labels))
    width = max(5, len(str(max(count - 1, 0))))
    out = Path(out)
    for name in class_names:
        (out / name).mkdir(parents=True, exist_ok=True)
    written: Counter = Counter()
    for index in range(count):
        name = class_names[int(labels[index])]
        (out / name / f"{index:0{width}d}.png").write_bytes(encode_png(images[index]))
        written[name] += 1
    return written
