"""`score_files`: decode batches in one pool while another sends them; results in input order.

It reads the model's input name, shape and dtype from the metadata API (or takes the metadata
the caller already fetched), and never raises for a single bad file: that file's result
carries `error`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from client.errors import ClientError
from client.preprocess import PREPROCESS_MODES
from client.scoring import decoding
from client.scoring.decoding import decode_files, one_line, read_files
from client.scoring.progress import ProgressBar
from client.scoring.results import (
    DEFAULT_MIN_CONFIDENCE,
    INPUT_CHECKS,
    ImageInput,
    Interpreter,
    ScoredImage,
    failed_result,
    image_input,
)
from client.scoring.retrying import ONE_ATTEMPT, RETRYABLE_CODES, BatchRetry
from client.scoring.sharding import relative_name
from client.transport.base import Transport
from client.types import ModelMetadata, ModelSpec, PredictResult

BATCH_RETRYABLE_CODES = RETRYABLE_CODES


def score_files(
    transport: Transport,
    model: ModelSpec,
    files: Sequence[Path | str],
    *,
    root: Path,
    names: Sequence[str] | None = None,
    metadata: ModelMetadata | None = None,
    batch_size: int = 64,
    concurrency: int = 4,
    preprocess: str = "auto",
    top_k: int = 3,
    progress: bool = True,
    decode_workers: int | None = None,
    decode_processes: int | None = None,
    timeout: float | None = None,
    input_check: str = "auto",
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    retry_seconds: float = 0.0,
) -> Iterator[ScoredImage]:
    """Score `files` against `model`; yields one ScoredImage per file, in the order of `files`.

    root: paths in the results are relative to it. names: the files' relative names, when the
    caller has computed them already (client.scoring.relative_name).
    metadata: the model's metadata, when the caller has fetched it already (else one call).
    batch_size: images per predict request. concurrency: requests in flight.
    preprocess: "auto", "mnist" or "none" (see client.preprocess.load_image).
    top_k: how many classes each result lists. progress: a progress bar on stderr (TTY only).
    decode_workers: decoding threads (default: min(4, CPUs)). decode_processes: when > 0,
    decode in that many worker processes instead, which sidesteps Python's GIL; 0: threads
    only; None (auto): threads at first and, over a transport whose auto_decode_processes is
    set (gRPC), for runs of at least decoding.AUTO_PROCESS_FILES files on 2+ CPUs, min(4, CPUs)
    processes once they have started (decoding.Decoders).
    timeout: seconds per request.
    input_check, min_confidence: when a result gets a `warning` (see INPUT_CHECKS).
    retry_seconds: how long a batch goes on being retried while the server is unavailable or
    busy (a restart), after the transport's retry count; 0: that count only. A batch is sent
    at most 1 + the count times within that, never the count times a second count.

    A signature that takes encoded images (string [-1], like serving_bytes) gets the files as
    they are: no decoding, preprocessing or input check here; a batch the server refuses as
    INVALID_ARGUMENT (one file it cannot decode) is halved until that file is alone.

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
    if decode_processes is not None and decode_processes < 0:
        raise ValueError(f"decode processes must be >= 0, not {decode_processes}")
    if metadata is None:
        metadata = transport.metadata(model)
    spec = image_input(metadata, model.signature)
    if spec.encoded and preprocess == "mnist":
        raise ValueError(
            f"signature {model.signature!r} takes encoded images, which the model decodes and "
            "resizes itself: --preprocess mnist needs a signature that takes pixels"
        )
    if spec.encoded:
        input_check = "off"  # no pixels on this side to check
    if decode_workers is None:
        decode_workers = max(1, min(4, _cpu_count()))
    # Plain strings, converted once here: pathlib work per file in the worker threads competes
    # for the interpreter lock with decoding.
    paths = [os.fspath(path) for path in files]
    if names is None:
        names = [relative_name(path, root) for path in paths]
    elif len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} files")
    names = list(names)
    batches = [
        (paths[start : start + batch_size], names[start : start + batch_size])
        for start in range(0, len(paths), batch_size)
    ]
    scorer = _Scorer(
        transport,
        model,
        spec,
        preprocess,
        Interpreter(top_k, "off" if spec.channels != 1 else input_check, min_confidence),
        BatchRetry(transport.retry, retry_seconds),
        timeout,
    )
    if decode_processes is None:
        processes = decoding.auto_processes(len(paths), _cpu_count())
        decoders = decoding.Decoders(
            decode_workers, processes if transport.auto_decode_processes else 0
        )
    elif decode_processes:
        decoders = decoding.Decoders(0, decode_processes)
    else:
        decoders = decoding.Decoders(decode_workers, 0)
    return scorer.run(batches, len(paths), concurrency, decoders, progress)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _Scorer:
    def __init__(
        self,
        transport: Transport,
        model: ModelSpec,
        spec: ImageInput,
        preprocess: str,
        interpreter: Interpreter,
        retry: BatchRetry,
        timeout: float | None,
    ) -> None:
        self.transport = transport
        self.model = model
        self.spec = spec
        self.preprocess = preprocess
        self.interpreter = interpreter
        self.retry = retry
        self.timeout = timeout

    def run(
        self,
        batches: list[tuple[list[str], list[str]]],
        total: int,
        concurrency: int,
        decoders: decoding.Decoders,
        progress: bool,
    ) -> Iterator[ScoredImage]:
        bar = ProgressBar(total) if progress else None
        send_pool = ThreadPoolExecutor(concurrency, thread_name_prefix="predict")
        # Enough batches in flight to keep every sender busy while the next ones decode, and no
        # more: memory stays bounded however many files there are.
        window = 2 * concurrency
        pending: deque[Future] = deque()
        submitted = 0
        check = self.interpreter.input_check != "off"

        def submit() -> None:
            nonlocal submitted
            paths, names = batches[submitted]
            submitted += 1
            try:
                if self.spec.encoded:
                    decoded = decoders.submit(read_files, paths)
                else:
                    decoded = decoders.submit(
                        decode_files,
                        paths,
                        self.spec.height,
                        self.spec.width,
                        self.spec.channels,
                        self.preprocess,
                        check,
                    )
            except RuntimeError as error:  # a broken process pool: a worker was killed (OOM)
                decoded = Future()
                decoded.set_exception(error)
            pending.append(send_pool.submit(self.send, names, decoded))

        try:
            while submitted < min(window, len(batches)):
                submit()
            while pending:
                results = pending.popleft().result()
                if submitted < len(batches):
                    submit()
                if bar is not None:
                    bar.advance(len(results), sum(result.error is not None for result in results))
                yield from results
        finally:
            for future in pending:
                future.cancel()
            decoders.shutdown()
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
            message = one_line(f"decoding failed: {type(error).__name__}: {error}")
            return [failed_result(name, message) for name in names]
        results: list[ScoredImage | None] = [None] * len(names)
        for index, message in errors.items():
            results[index] = failed_result(names[index], message)
        if order:
            scored = self.score(
                [names[index] for index in order],
                stacked.astype(self.spec.dtype, copy=False),
                [notes.get(index) for index in order],
            )
            for index, result in zip(order, scored, strict=True):
                results[index] = result
        return results  # type: ignore[return-value]

    def score(
        self, names: list[str], inputs: np.ndarray, notes: list[str | None]
    ) -> list[ScoredImage]:
        """Predict `inputs` (one row per name); a failure becomes every row's error.

        Encoded images are decoded by the server, which refuses the whole batch for one file it
        cannot decode: such a batch is halved until the file that fails is alone."""
        try:
            reply = self.predict({self.spec.name: inputs})
            return self.interpreter.results(reply, names, notes)
        except ClientError as error:
            if self.spec.encoded and error.code == "INVALID_ARGUMENT" and len(names) > 1:
                half = len(names) // 2
                return self.score(names[:half], inputs[:half], notes[:half]) + self.score(
                    names[half:], inputs[half:], notes[half:]
                )
            return [failed_result(name, one_line(error)) for name in names]
        except ValueError as error:  # a malformed reply
            return [failed_result(name, one_line(error)) for name in names]
        except Exception as error:  # anything else costs this batch, never the whole run
            message = one_line(f"{type(error).__name__}: {error}")
            return [failed_result(name, message) for name in names]

    def predict(self, inputs: dict[str, np.ndarray]) -> PredictResult:
        return self.retry.call(
            lambda: self.transport.predict(
                self.model, inputs, timeout=self.timeout, retry=ONE_ATTEMPT
            )
        )
