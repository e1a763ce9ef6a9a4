"""Image files to one stacked batch of model input, in threads or in worker processes."""

from __future__ import annotations

import os
import stat

import numpy as np


def decode_files(
    paths: list[str], height: int, width: int, channels: int, mode: str, check: bool = False
) -> tuple[list[int], np.ndarray | None, dict[int, str], dict[int, str]]:
    """Decode a batch of files for the model.

    Returns the indices of the files that decoded, their pixels stacked [n, H, W, C] uint8 (None
    when none did), index -> one-line reason for the others, and (with `check`, for
    single-channel models) index -> why a decoded image does not look like one glyph
    (client.preprocess.glyph_check). A module-level function taking plain values, so that
    worker processes can run it too.
    """
    from client.preprocess import default_max_pixels, glyph_checks, load_image

    expected = (height, width, channels)
    order: list[int] = []
    images: list[np.ndarray] = []
    errors: dict[int, str] = {}
    try:
        limit = default_max_pixels()  # once per batch: an environment lookup per file shows
    except ValueError as error:  # a malformed TFS_MAX_IMAGE_PIXELS: every file's reason
        return order, None, dict.fromkeys(range(len(paths)), one_line(error)), {}
    for index, path in enumerate(paths):
        try:
            image = load_image(
                path, height=height, width=width, channels=channels, mode=mode, max_pixels=limit
            )
        except ValueError as error:  # ImageError is a ValueError with a one-line reason
            errors[index] = one_line(error)
        except Exception as error:  # one file must never stop the run
            errors[index] = one_line(f"{type(error).__name__}: {error}")
        else:
            if image.shape == expected:
                order.append(index)
                images.append(image)
            else:
                errors[index] = f"decoded to shape {image.shape}, the model takes {expected}"
    stacked = np.stack(images) if images else None
    notes: dict[int, str] = {}
    if check and channels == 1 and stacked is not None:
        notes = {
            order[row]: note for row, note in enumerate(glyph_checks(stacked)) if note is not None
        }
    return order, stacked, errors, notes


# A file sent as it is to a signature that takes encoded images may be at most this large: a
# batch is held in memory whole, and TF Serving's REST and gRPC bodies have limits too.
MAX_ENCODED_BYTES = 16 * 1024 * 1024


def read_files(
    paths: list[str], max_bytes: int = MAX_ENCODED_BYTES
) -> tuple[list[int], np.ndarray | None, dict[int, str], dict[int, str]]:
    """Read a batch of files to send as they are (the model decodes them), with the return
    shape of `decode_files`: the indices read, their bytes as an object array [n], index ->
    one-line reason for the others, and no glyph notes (there are no pixels to check)."""
    order: list[int] = []
    contents: list[bytes] = []
    errors: dict[int, str] = {}
    for index, path in enumerate(paths):
        try:
            data = _read(path, max_bytes + 1)
        except FileNotFoundError:
            errors[index] = "file not found"
        except IsADirectoryError:
            errors[index] = "is a folder, not a file"
        except PermissionError:
            errors[index] = "permission denied"
        except OSError as error:
            errors[index] = one_line(f"cannot read file ({error.strerror or error})")
        else:
            if not data:
                errors[index] = "empty file"
            elif len(data) > max_bytes:
                errors[index] = f"file too large to send (over {max_bytes // 2**20} MiB)"
            else:
                order.append(index)
                contents.append(data)
    if not contents:
        return order, None, errors, {}
    stacked = np.empty(len(contents), dtype=object)
    stacked[:] = contents
    return order, stacked, errors, {}


def _read(path: str, limit: int) -> bytes:
    """At most `limit` bytes of the file, with os.open and os.read, which cost a fraction of
    open()'s file objects for a file of a few hundred bytes."""
    from client.preprocess import read_descriptor

    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(path)
        size = info.st_size if stat.S_ISREG(info.st_mode) else None
        return read_descriptor(descriptor, size, limit)
    finally:
        os.close(descriptor)


def process_pool(processes: int):
    """Worker processes for decoding, started clean (never forked from a process with gRPC
    threads) and with Ctrl-C left to the parent, which cancels their work."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(["client.preprocess"])
    return ProcessPoolExecutor(processes, mp_context=context, initializer=_ignore_interrupts)


def _ignore_interrupts() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def one_line(message: object) -> str:
    return " ".join(str(message).split()) or "unknown error"
