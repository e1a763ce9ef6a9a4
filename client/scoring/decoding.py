"""Image files to one stacked batch of model input, in threads or in worker processes."""

from __future__ import annotations

import os
import select
import stat
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait

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


# Files a run must have before `decode_processes=None` (auto) starts worker processes: their
# start (a fresh interpreter that imports numpy and Pillow, ~0.2 s here) and shutdown cost more
# than a smaller run gains. See Decoders.
AUTO_PROCESS_FILES = 5000


def auto_processes(files: int, cpus: int) -> int:
    """How many decoding processes auto mode starts: one per CPU up to 4, on a machine with at
    least 2 CPUs, for runs of at least AUTO_PROCESS_FILES files; else 0 (threads only)."""
    return min(4, cpus) if cpus >= 2 and files >= AUTO_PROCESS_FILES else 0


class Decoders:
    """Where batches are decoded: a thread pool, worker processes, or both.

    threads > 0 and processes > 0 (auto mode): batches go to the threads at once, and the
    process pool starts in a background thread; each batch submitted once it is ready goes to
    the processes. Threads share the interpreter lock with the sender threads and the row
    writing, so they decode small images on about one core; processes do not, but take ~0.2 s
    to start, which the threads cover. If the processes cannot start, the threads do it all.
    threads == 0: processes only, from the first batch. processes == 0: threads only.
    """

    def __init__(self, threads: int, processes: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._threads = (
            ThreadPoolExecutor(threads, thread_name_prefix="decode") if threads else None
        )
        self._processes = None
        self._starter: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        if processes and threads:
            self._starter = threading.Thread(
                target=self._start, args=(processes,), name="decode-start", daemon=True
            )
            self._starter.start()
        elif processes:
            self._processes = process_pool(processes)

    def _start(self, processes: int) -> None:
        try:
            pool = process_pool(processes)
            # Submitting starts the workers; batches go to them once one has warmed up (the
            # others take the shared queue's next batches as they come up).
            warming = [pool.submit(warm_up) for _ in range(processes)]
            done, _ = wait(warming, return_when=FIRST_COMPLETED)
            next(iter(done)).result()
        except Exception:  # no processes here (no /dev/shm, a sandbox): the threads go on
            return
        with self._lock:
            if not self._closed:
                self._processes = pool
                return
        pool.shutdown(wait=False, cancel_futures=True)

    @property
    def in_processes(self) -> bool:
        """Whether the next batch goes to the worker processes."""
        return self._processes is not None

    def submit(self, function, *args) -> Future:
        """Raises RuntimeError for a broken process pool (a worker was killed) when there are
        no threads to fall back on; with threads, the rest of the run decodes there."""
        pool = self._processes
        if pool is not None:
            try:
                return pool.submit(function, *args)
            except RuntimeError:
                if self._threads is None:
                    raise
                self._processes = None
                pool.shutdown(wait=False, cancel_futures=True)
        return self._threads.submit(function, *args)

    def shutdown(self) -> None:
        """Cancel what has not started; a process pool still starting is stopped when ready."""
        with self._lock:
            self._closed = True
        for pool in (self._threads, self._processes):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if self._starter is not None:
            # Ends within the pool's start-up; joined so that no worker outlives the run.
            self._starter.join()


def warm_up() -> int:
    """Run once in each new worker process: Pillow imported before the first batch arrives."""
    from client.preprocess import _pil

    _pil()
    return os.getpid()


def process_pool(processes: int):
    """Worker processes for decoding, started clean (never forked from a process with gRPC
    threads) and with Ctrl-C left to the parent, which cancels their work."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(["client.preprocess"])
    return ProcessPoolExecutor(
        processes, mp_context=context, initializer=_worker_init, initargs=(os.getpid(),)
    )


def _worker_init(parent: int) -> None:
    """Ctrl-C is the parent's to handle, and the worker ends when the parent is gone."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.name == "posix":
        threading.Thread(target=_exit_after, args=(parent,), name="parent", daemon=True).start()


def _exit_after(parent: int) -> None:
    """End this worker once process `parent` has exited. A worker waiting for its next batch
    would otherwise outlive a parent killed with SIGKILL (or by the OOM killer), and keep its
    forkserver alive with it: nothing else tells it the parent is gone."""
    try:
        descriptor = os.pidfd_open(parent)  # Linux 5.3+: readable once the process has exited
    except (AttributeError, OSError):
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                break
            except OSError:  # alive, and not ours to signal
                pass
    else:
        select.select([descriptor], [], [])
    os._exit(1)


def one_line(message: object) -> str:
    return " ".join(str(message).split()) or "unknown error"
