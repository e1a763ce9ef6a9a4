"""Helpers that build small synthetic data sets in every format the trainer reads."""

from __future__ import annotations

import functools
import gzip
import struct
from pathlib import Path

import harness
import numpy as np


def write_idx(path: Path, array: np.ndarray, gzipped: bool = True) -> Path:
    """Write `array` (uint8) as an IDX file, the format of the original MNIST files."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + np.ascontiguousarray(array, np.uint8).tobytes()
    if gzipped:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def synthetic_arrays(count: int, size: int = 8, classes: int = 3, seed: int = 0):
    """Images whose brightness encodes the label, so a loader's pairing can be checked."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    rng.shuffle(labels)
    images = np.empty((count, size, size), np.uint8)
    for index, label in enumerate(labels):
        images[index] = 40 + 80 * label + rng.integers(0, 20, (size, size))
    return images, labels.astype(np.uint8)


def write_image_folder(root: Path, per_class: dict[str, int], size=(10, 12), mode: str = "L"):
    """root/<class>/<n>.png with brightness set by the class's position."""
    from PIL import Image

    for position, (name, count) in enumerate(per_class.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            value = 30 + 60 * position + index
            color = value if mode == "L" else (value, 255 - value, 7)
            Image.new(mode, (size[1], size[0]), color).save(root / name / f"{index:03d}.png")
    return root


# The trainer's tests bound each subprocess at 5 minutes unless they say otherwise.
run_python = functools.partial(harness.run_python, timeout=300)
