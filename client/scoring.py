"""Batch scoring: image files in, one `ScoredImage` per file out, in input order.

`score_files` is the engine behind `score`, `predict` and `evaluate`. It reads the model's input
name, shape and dtype from the metadata API, decodes images in one thread pool while another
sends batches, and never raises for a single bad file: that file's result carries `error`.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from client.errors import ClientError
from client.preprocess import PREPROCESS_MODES
from client.transport.base import RetryPolicy, Transport
from client.types import ModelMetadata, ModelSpec, PredictResult
from common.contract import CLASS_IDS, CLASSES, PROBABILITIES

# Batch failures worth sending again: the server was busy, slow or briefly gone. The transport
# already retried UNAVAILABLE; a second, slower round rides out a server restart.
BATCH_RETRYABLE_CODES = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}
)
BATCH_RETRY = RetryPolicy(retries=2, initial_backoff=0.5, max_backoff=5.0)
# score_files(retry_seconds=): how long a batch goes on retrying those (the CLI's --retry-seconds).
# Once one batch has spent it, the others give up after BATCH_RETRY.retries until one succeeds:
# a server that stays down costs the budget once, not once per batch.

# Out-of-distribution warnings (the `warning` column). input_check: "auto" checks that the model
# input looks like one light glyph on a dark background (client.preprocess.glyph_check) for
# digit models (one input channel, classes named 0-9), "glyph" for every one-channel model,
# "off" never. min_confidence: a prediction whose probability is below it is flagged too.
INPUT_CHECKS = ("auto", "glyph", "off")
DEFAULT_MIN_CONFIDENCE = 0.5
_DIGIT_NAMES = frozenset("0123456789")


@dataclass
class ScoredImage:
    """The outcome for one input file: a prediction, or `error` saying why there is none."""

    # POSIX path relative to the scoring root (as given when outside it), the real name as os
    # functions take it (undecodable bytes as surrogates); outputs write it escaped
    # (client.names.escape_name). A folder that could not be listed ends in "/".
    path: str
    class_id: int | None
    class_name: str | None  # from the model's `classes` output
    confidence: float | None  # probability of class_id
    top_k: list[tuple[int, str, float]]  # (class id, class name, probability), best first
    model_version: int | None
    error: str | None  # one line; None when scored
    probabilities: np.ndarray | None  # float32 [K]
    latency_ms: float | None  # round trip of the batch request this image travelled in
    # Why the input or the prediction looks out of distribution ("; "-joined), None when not.
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ImageInput:
    """What the model's signature takes, from its metadata."""

    name: str  # signature input key, e.g. "images"
    height: int
    width: int
    channels: int
    dtype: str  # numpy dtype name of the input, e.g. "uint8"


def image_input(metadata: ModelMetadata, signature: str) -> ImageInput:
    """The single image input [-1, H, W, C] of `signature`; ValueError when it has none."""
    if signature not in metadata.signatures:
        available = ", ".join(sorted(metadata.signatures)) or "none"
        raise ValueError(
            f"model {metadata.name!r} has no signature {signature!r} (it has: {available})"
        )
    inputs = metadata.signatures[signature].inputs
    if len(inputs) != 1:
        raise ValueError(
            f"signature {signature!r} takes {len(inputs)} inputs ({', '.join(inputs)}); "
            "scoring needs exactly one image input"
        )
    (info,) = inputs.values()
    shape = info.shape
    if info.dtype == "object":
        raise ValueError(
            f"signature {signature!r} takes encoded bytes ({info.name!r}); score with a "
            "signature that takes pixels, e.g. serving_default"
        )
    if shape is None or len(shape) != 4 or min(shape[1:]) <= 0:
        raise ValueError(
            f"input {info.name!r} of signature {signature!r} has shape {shape}; scoring needs "
            "[batch, height, width, channels] with known height, width and channels"
        )
    return ImageInput(info.name, shape[1], shape[2], shape[3], info.dtype)


def parse_shard(text: str) -> tuple[int, int]:
    """ "i/N" -> (i, N) with 0 <= i < N (i is 0-based, like JOB_COMPLETION_INDEX)."""
    index_text, slash, count_text = text.strip().partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        index, count = -1, 0
    if not slash or count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard must be i/N with 0 <= i < N, e.g. 0/4, not {text!r}")
    return index, count


def shard_of(relative_path: str, count: int) -> int:
    """The shard (0..count-1) a file belongs to: a stable hash of its relative POSIX path.

    A hash rather than a position keeps every file in its shard when others are added or removed.
    """
    digest = hashlib.blake2b(relative_path.encode("utf-8", "surrogateescape"), digest_size=8)
    return int.from_bytes(digest.digest(), "big") % count


def relative_name(path: Path, root: Path) -> str:
    """`path` relative to `root` as a POSIX string, or as given when it is outside `root`."""
    # String arithmetic: pathlib costs tens of microseconds per call, which adds up to seconds
    # over a folder of 100,000 images.
    text, base = os.fspath(path), os.fspath(root).rstrip(os.sep) + os.sep
    if text.startswith(base):
        text = text[len(base) :]
    elif os.path.isabs(text) != os.path.isabs(base):
        return Path(path).as_posix()
    return text.replace(os.sep, "/") if os.sep != "/" else text


def score_files(
    transport: Transport,
    model: ModelSpec,
    files: Sequence[Path],
    *,
    root: Path,
    batch_size: int = 64,
    concurrency: int = 4,
    preprocess: str = "auto",
    top_k: int = 3,
    progress: bool = True,
    decode_workers: int | None = None,
    decode_processes: int = 0,
    timeout: float | None = None,
    input_check: str = "auto",
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    retry_seconds: float = 0.0,
) -> Iterator[ScoredImage]:
    """Score `files` against `model`; yields one ScoredImage per file, in the order of `files`.

    root: paths in the results are relative to it.
    batch_size: images per predict request. concurrency: requests in flight.
    preprocess: "auto", "mnist" or "none" (see client.preprocess.load_image).
    top_k: how many classes each result lists. progress: a progress bar on stderr (TTY only).
    decode_workers: decoding threads (default: min(4, CPUs)). decode_processes: when > 0,
    decode in that many worker processes instead, which sidesteps Python's GIL: worth it when
    decoding and preprocessing, not the server, limit the rate and idle cores exist.
    timeout: seconds per request.
    input_check, min_confidence: when a result gets a `warning` (see INPUT_CHECKS).
    retry_seconds: how long a batch is retried while the server is unavailable or busy (a
    restart); 0: BATCH_RETRY's few retries only.

    The model's metadata is read before this returns, so a missing model or signature raises
    ClientError or ValueError here; afterwards, failures become results with `error` set: a file
    that cannot be decoded, or a batch the server rejected even after retries.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    if top_k < 0:
        raise ValueError(f"top-k must be >= 0, not {top_k}")
    if input_check not in INPUT_CHECKS:
        raise ValueError(
            f"input check must be one of {', '.join(INPUT_CHECKS)}, not {input_check!r}"
        )
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min confidence must lie in [0, 1], not {min_confidence}")
    if preprocess not in PREPROCESS_MODES:
        raise ValueError(
            f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, not {preprocess!r}"
        )
    metadata = transport.metadata(model)
    spec = image_input(metadata, model.signature)
    scorer = _Scorer(transport, model, spec, preprocess, top_k, timeout)
    scorer.retry = replace(BATCH_RETRY, budget=retry_seconds)
    scorer.input_check = "off" if spec.channels != 1 else input_check
    scorer.min_confidence = min_confidence
    if decode_processes < 0:
        raise ValueError(f"decode processes must be >= 0, not {decode_processes}")
    if decode_workers is None:
        decode_workers = max(1, min(4, _cpu_count()))
    # Plain strings, converted once here: pathlib work per file in the worker threads competes
    # for the interpreter lock with decoding.
    paths = [os.fspath(path) for path in files]
    names = [relative_name(path, root) for path in paths]
    batches = [
        (paths[start : start + batch_size], names[start : start + batch_size])
        for start in range(0, len(paths), batch_size)
    ]
    return scorer.run(batches, len(paths), concurrency, decode_workers, decode_processes, progress)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _Scorer:
    def __init__(
        self,
        transport: Transport,
        model: ModelSpec,
        spec: ImageInput,
        preprocess: str,
        top_k: int,
        timeout: float | None,
    ) -> None:
        self.transport = transport
        self.model = model
        self.spec = spec
        self.preprocess = preprocess
        self.top_k = top_k
        self.timeout = timeout
        self.input_check = "auto"
        self.min_confidence = DEFAULT_MIN_CONFIDENCE
        self.retry = BATCH_RETRY
        # time.monotonic() when a batch last ran out of retries, None once one succeeds again
        self._outage_since: float | None = None
        # Class id -> name, learnt from the `classes` output: the serving API has no call that
        # lists class names, so top-k entries never predicted as top-1 yet show the id.
        self.class_names: dict[int, str] = {}
        self._names_lock = threading.Lock()

    def run(
        self,
        batches: list[tuple[list[str], list[str]]],
        total: int,
        concurrency: int,
        decode_workers: int,
        decode_processes: int,
        progress: bool,
    ) -> Iterator[ScoredImage]:
        bar = _ProgressBar(total) if progress else None
        if decode_processes:
            decode_pool = _process_pool(decode_processes)
        else:
            decode_pool = ThreadPoolExecutor(decode_workers, thread_name_prefix="decode")
        send_pool = ThreadPoolExecutor(concurrency, thread_name_prefix="predict")
        # Enough batches in flight to keep every sender busy while the next ones decode, and no
        # more: memory stays bounded however many files there are.
        window = 2 * concurrency
        pending: deque[Future] = deque()
        submitted = 0

        def submit() -> None:
            nonlocal submitted
            paths, names = batches[submitted]
            submitted += 1
            try:
                decoded = decode_pool.submit(
                    decode_files,
                    paths,
                    self.spec.height,
                    self.spec.width,
                    self.spec.channels,
                    self.preprocess,
                    self.input_check != "off",
                )
            except RuntimeError as error:  # a broken process pool: a worker was killed (OOM)
                decoded = Future()
                decoded.set_exception(error)
            pending.append(send_pool.submit(self.send, names, decoded))

        try:
            while submitted < min(window, len(batches)):
                submit()
            while pending:
                future = pending.popleft()
                results = future.result()
                if submitted < len(batches):
                    submit()
                for result in results:
                    if bar is not None:
                        bar.advance(result.ok)
                    yield result
        finally:
            for future in pending:
                future.cancel()
            decode_pool.shutdown(wait=False, cancel_futures=True)
            send_pool.shutdown(wait=False, cancel_futures=True)
            if bar is not None:
                bar.close()

    def send(self, names: list[str], decoded: Future) -> list[ScoredImage]:
        """Predict one decoded batch; `names` are its files' relative paths."""
        try:
            order, stacked, errors, notes = decoded.result()
        except CancelledError:
            raise
        except Exception as error:  # a decoding process died (killed, out of memory)
            message = _one_line(f"decoding failed: {type(error).__name__}: {error}")
            return [failed_result(name, message) for name in names]
        results: list[ScoredImage | None] = [None] * len(names)
        for index, message in errors.items():
            results[index] = failed_result(names[index], message)
        if order:
            try:
                inputs = {self.spec.name: stacked.astype(self.spec.dtype, copy=False)}
                reply = self.predict(inputs)
                scored = self.interpret(
                    reply, [names[index] for index in order], [notes.get(i) for i in order]
                )
            except (ClientError, ValueError) as error:  # ValueError: a malformed reply
                scored = [failed_result(names[index], _one_line(error)) for index in order]
            except Exception as error:  # anything else costs this batch, never the whole run
                message = _one_line(f"{type(error).__name__}: {error}")
                scored = [failed_result(names[index], message) for index in order]
            for index, result in zip(order, scored, strict=True):
                results[index] = result
        return results  # type: ignore[return-value]

    def predict(self, inputs: dict[str, np.ndarray]) -> PredictResult:
        started = time.monotonic()
        try:
            reply = self.retry.call(
                lambda: self.transport.predict(self.model, inputs, timeout=self.timeout),
                retryable=BATCH_RETRYABLE_CODES,
                since=self._outage_since,
            )
        except ClientError as error:
            if error.code in BATCH_RETRYABLE_CODES and self._outage_since is None:
                self._outage_since = started
            raise
        self._outage_since = None
        return reply

    def interpret(
        self, reply: PredictResult, names: list[str], notes: Sequence[str | None] = ()
    ) -> list[ScoredImage]:
        """Turn a predict reply into one ScoredImage per row.

        notes: per row, what client.preprocess.glyph_check said about its input (or None).
        """
        outputs = reply.outputs
        probabilities = outputs.get(PROBABILITIES)
        class_ids = outputs.get(CLASS_IDS)
        if probabilities is None and class_ids is None:
            raise ClientError(
                f"the reply has neither 'probabilities' nor 'class_ids' (it has: "
                f"{', '.join(outputs) or 'nothing'})",
                "FAILED_PRECONDITION",
            )
        if probabilities is not None:
            probabilities = np.asarray(probabilities, dtype=np.float32).reshape(len(names), -1)
        if class_ids is None:
            class_ids = np.argmax(probabilities, axis=1)
        class_ids = np.asarray(class_ids).reshape(-1)
        classes = outputs.get(CLASSES)
        if classes is not None:
            classes = np.asarray(classes, dtype=object).reshape(-1)
        if len(class_ids) != len(names) or (classes is not None and len(classes) != len(names)):
            raise ClientError(
                f"the reply has {len(class_ids)} predictions for {len(names)} images", "INTERNAL"
            )
        ids = [int(class_id) for class_id in class_ids.tolist()]
        class_texts = [_text(name) for name in classes.tolist()] if classes is not None else None
        with self._names_lock:
            if class_texts is not None:
                for class_id, text in zip(ids, class_texts, strict=True):
                    self.class_names.setdefault(class_id, text)
            names_now = dict(self.class_names)
        # Whole-batch numpy, then plain Python per row: per-row numpy calls cost more than the
        # rest of the row's work.
        confidences: list[float | None] = [None] * len(names)
        ranked_rows: list[list[tuple[int, str, float]]] = [[] for _ in names]
        if probabilities is not None and probabilities.shape[1] > 0:
            width = probabilities.shape[1]
            valid = [0 <= class_id < width for class_id in ids]
            picked = probabilities[np.arange(len(ids)), np.clip(ids, 0, width - 1)]
            confidences = [
                float(value) if ok else None
                for value, ok in zip(picked.tolist(), valid, strict=True)
            ]
            if self.top_k:
                best = np.argsort(-probabilities, axis=1, kind="stable")[:, : self.top_k]
                best_values = np.take_along_axis(probabilities, best, axis=1).tolist()
                ranked_rows = [
                    [
                        (k, names_now.get(k, str(k)), value)
                        for k, value in zip(row_ids, row_values, strict=True)
                    ]
                    for row_ids, row_values in zip(best.tolist(), best_values, strict=True)
                ]
        version = reply.model_version or None
        row_names = [
            class_texts[row] if class_texts is not None else names_now.get(ids[row], str(ids[row]))
            for row in range(len(names))
        ]
        warnings = [
            self.warning(notes[row] if row < len(notes) else None, row_names[row], confidences[row])
            for row in range(len(names))
        ]
        return [
            ScoredImage(
                path=name,
                class_id=ids[row],
                class_name=row_names[row],
                confidence=confidences[row],
                top_k=ranked_rows[row],
                model_version=version,
                error=None,
                probabilities=None if probabilities is None else probabilities[row],
                latency_ms=reply.latency_ms,
                warning=warnings[row],
            )
            for row, name in enumerate(names)
        ]

    def warning(self, note: str | None, class_name: str, confidence: float | None) -> str | None:
        """The `warning` of one prediction: its input's glyph note, when this model is one the
        check applies to, and a confidence below min_confidence."""
        reasons = []
        if note and (self.input_check == "glyph" or class_name in _DIGIT_NAMES):
            reasons.append(f"input does not look like a digit: {note}")
        if confidence is not None and confidence < self.min_confidence:
            reasons.append(f"low confidence {confidence:.2f} < {self.min_confidence:g}")
        return "; ".join(reasons) or None


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
    from client.preprocess import glyph_check, load_image

    expected = (height, width, channels)
    order: list[int] = []
    images: list[np.ndarray] = []
    errors: dict[int, str] = {}
    notes: dict[int, str] = {}
    check = check and channels == 1
    for index, path in enumerate(paths):
        try:
            image = load_image(path, height=height, width=width, channels=channels, mode=mode)
        except ValueError as error:  # ImageError is a ValueError with a one-line reason
            errors[index] = _one_line(error)
        except Exception as error:  # one file must never stop the run
            errors[index] = _one_line(f"{type(error).__name__}: {error}")
        else:
            if image.shape == expected:
                order.append(index)
                images.append(image)
                note = glyph_check(image) if check else None
                if note:
                    notes[index] = note
            else:
                errors[index] = f"decoded to shape {image.shape}, the model takes {expected}"
    return order, (np.stack(images) if images else None), errors, notes


def _process_pool(processes: int):
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


def failed_result(path: str, message: str) -> ScoredImage:
    """The result of a file (or a folder) that could not be scored, and why."""
    return ScoredImage(path, None, None, None, [], None, message, None, None)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _one_line(message: object) -> str:
    return " ".join(str(message).split()) or "unknown error"


def _maybe_terminal(stream) -> bool:
    """False when rich would certainly not draw on `stream`: not a TTY, and none of the
    variables that make rich treat a pipe as a terminal is set."""
    if any(name in os.environ for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "FORCE_TERMINAL")):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


class _ProgressBar:
    """A rich progress bar on stderr, or nothing when stderr is not a terminal (logs, CI, pipes)."""

    def __init__(self, total: int) -> None:
        self._progress = None
        if total == 0 or not _maybe_terminal(sys.stderr):
            return  # without importing rich, which costs a noticeable part of a short run
        from rich.console import Console

        console = Console(stderr=True)
        if not console.is_terminal or total == 0:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._failed = 0
        self._progress = Progress(
            TextColumn("scoring"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("scoring", total=total, failed=0)
        self._progress.start()

    def advance(self, ok: bool) -> None:
        if self._progress is None:
            return
        if not ok:
            self._failed += 1
        self._progress.update(self._task, advance=1, failed=self._failed)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
