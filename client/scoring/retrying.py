"""One retry loop per batch: the transport sends each attempt once, this decides on the next.

A batch is retried while the server is unavailable, slow or busy, for the transport's retry
count (--retries) and then for as long as the run's budget allows (--retry-seconds), so a
server restart costs no rows. The attempts of one batch are counted here only: the transport
is called with its own retries off, so they never multiply.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from client.errors import ClientError
from client.transport.base import RetryPolicy

T = TypeVar("T")

# Batch failures worth sending again: the server was busy, slow or briefly gone.
RETRYABLE_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"})
# What the transport is told for each attempt.
ONE_ATTEMPT = RetryPolicy(retries=0)


class BatchRetry:
    """`policy` (the transport's count and backoff) with `budget` seconds on top.

    Once one batch has spent the budget, the others give up after the count alone until one
    succeeds again: a server that stays down costs the budget once, not once per batch.
    """

    def __init__(self, policy: RetryPolicy, budget: float) -> None:
        self.policy = replace(policy, budget=budget)
        self._outage_since: float | None = None  # when a batch last ran out of retries
        self._lock = threading.Lock()

    def call(self, attempt: Callable[[], T]) -> T:
        started = time.monotonic()
        with self._lock:
            since = self._outage_since
        try:
            result = self.policy.call(attempt, retryable=RETRYABLE_CODES, since=since)
        except ClientError as error:
            if error.code in RETRYABLE_CODES:
                with self._lock:
                    if self._outage_since is None:
                        self._outage_since = started
            raise
        with self._lock:
            self._outage_since = None
        return result
