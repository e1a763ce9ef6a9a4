"""The client's retry budget (RetryPolicy.budget, `--retry-seconds`) on a fake clock: a retryable
failure is retried until the budget is spent, however many retries that takes; `since` lets an
outage that began earlier count against it. test_kills.py proves it against a real restart."""

from __future__ import annotations

import itertools

import pytest

from client.errors import ClientError
from client.transport import base
from client.transport.base import RetryPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(base, "time", fake)
    return fake


def always(code: str, calls: list[float], clock: FakeClock):
    def function():
        calls.append(clock.now)
        raise ClientError("server gone", code)

    return function


def test_a_budget_keeps_retrying_past_the_count_until_it_is_spent(clock):
    calls: list[float] = []
    policy = RetryPolicy(retries=2, initial_backoff=0.5, max_backoff=2.0, budget=15.0)
    with pytest.raises(ClientError):
        policy.call(always("UNAVAILABLE", calls, clock))
    assert len(calls) > 3  # more than retries + 1
    assert calls[-1] - calls[0] >= 15.0
    assert calls[-1] - calls[0] < 15.0 + 2.0 + 1e-9  # at most one backoff past the budget
    assert max(b - a for a, b in itertools.pairwise(calls)) <= 2.0


def test_the_server_coming_back_within_the_budget_is_an_answer(clock):
    policy = RetryPolicy(retries=1, initial_backoff=0.5, max_backoff=2.0, budget=20.0)
    back_at = clock.now + 16.0

    def function():
        if clock.now < back_at:
            raise ClientError("connection refused", "UNAVAILABLE")
        return "answer"

    assert policy.call(function) == "answer"


def test_no_budget_means_the_retry_count_alone(clock):
    calls: list[float] = []
    with pytest.raises(ClientError):
        RetryPolicy(retries=3).call(always("UNAVAILABLE", calls, clock))
    assert len(calls) == 4


def test_other_errors_are_never_retried(clock):
    calls: list[float] = []
    with pytest.raises(ClientError):
        RetryPolicy(retries=3, budget=60).call(always("INVALID_ARGUMENT", calls, clock))
    assert len(calls) == 1


def test_an_outage_that_began_earlier_spends_the_budget(clock):
    calls: list[float] = []
    policy = RetryPolicy(retries=2, initial_backoff=0.5, max_backoff=2.0, budget=15.0)
    with pytest.raises(ClientError):
        policy.call(always("UNAVAILABLE", calls, clock), since=clock.now - 30.0)
    assert len(calls) == 3  # only the retry count: the budget was spent before this call


def test_a_negative_budget_is_refused():
    with pytest.raises(ValueError, match="budget"):
        RetryPolicy(budget=-1)
