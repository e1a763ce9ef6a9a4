"""The transport interface, and the retry policy both implementations share."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from client.errors import ClientError
from client.types import ModelMetadata, ModelSpec, PredictResult, VersionStatus

T = TypeVar("T")

# Only a server that could not be reached (or said so) is worth asking again: anything else,
# such as a malformed request or an unknown model, would fail the same way every time.
RETRYABLE_CODES = frozenset({"UNAVAILABLE"})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n sleeps uniform(0, min(cap, initial * 2**n)).

    Full jitter keeps many clients that lost the same server from coming back in lockstep.
    """

    retries: int = 3  # extra attempts after the first one
    initial_backoff: float = 0.1  # seconds
    max_backoff: float = 5.0  # seconds
    multiplier: float = 2.0
    # Seconds: go on retrying past `retries` until this long since the first attempt (0: never),
    # so that a server restart (down, then loading its models) is ridden out.
    budget: float = 0.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, not {self.retries}")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.budget < 0:
            raise ValueError("backoff times and the retry budget must be >= 0")

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep before retry number `attempt` (0-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** min(attempt, 64))
        return random.uniform(0, ceiling)

    def call(
        self,
        function: Callable[[], T],
        *,
        retryable: frozenset[str] = RETRYABLE_CODES,
        sleep: Callable[[float], None] | None = None,
        since: float | None = None,
    ) -> T:
        """Run `function`, retrying ClientErrors whose code is in `retryable`.

        Gives up once `retries` retries are spent and `budget` seconds have passed since `since`
        (a time.monotonic() value; default: this call's start).
        """
        started = time.monotonic() if since is None else since
        attempt = 0
        while True:
            try:
                return function()
            except ClientError as error:
                if error.code not in retryable:
                    raise
                if attempt >= self.retries and time.monotonic() - started >= self.budget:
                    raise
            (sleep or time.sleep)(self.backoff(attempt))
            attempt += 1


class Transport:
    """A connection to a TF Serving compatible server (see `client.transport.connect`).

    Both implementations take and return the transport-neutral types of `client.types` and raise
    `client.errors.ClientError` with the same codes for the same situations. They are safe to use
    from several threads at once; `close()` releases the connection (also via `with`).
    """

    #: the address this transport talks to, as given to `connect`
    server: str = ""
    #: how requests to an unavailable server are retried
    retry: RetryPolicy = RetryPolicy()
    #: whether scoring's auto mode (score_files(decode_processes=None)) decodes large runs in
    #: worker processes: where decoding is most of the client's work per image (gRPC), not
    #: where the JSON body is (REST: 10,000 MNIST PNGs to the local server took 1.99 s in
    #: threads and 2.07 s with 2 processes, which took CPU from the server's JSON parsing)
    auto_decode_processes: bool = False

    def predict(
        self,
        model: ModelSpec,
        inputs: dict[str, np.ndarray],
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> PredictResult:
        """Run the model's signature `model.signature` on a batch.

        inputs: signature input name -> array whose first dimension is the batch; numeric arrays
            are sent as they are, object arrays of bytes (or str) as string tensors.
        timeout: seconds for this request (default: the transport's timeout).
        retry: how this request is retried (default: the transport's `retry`); a caller with a
            retry loop of its own passes RetryPolicy(retries=0), so attempts never multiply.
        Returns the outputs as numpy arrays; string outputs are object arrays of bytes.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement predict")

    def status(self, model: ModelSpec) -> list[VersionStatus]:
        """The state of the model's versions (only the addressed one with a version or label)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement status")

    def metadata(self, model: ModelSpec) -> ModelMetadata:
        """The model's version and signatures (input/output names, dtypes and shapes)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement metadata")

    def close(self) -> None:
        """Release the connection; the transport cannot be used afterwards."""
        raise NotImplementedError(f"{type(self).__name__} does not implement close")

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.server!r})"
