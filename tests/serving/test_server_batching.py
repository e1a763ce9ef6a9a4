"""Batch merge/split, and the Batcher merging concurrent calls with unchanged answers."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import numpy as np
import pytest

from serving.batching import (
    Batcher,
    batch_size_of,
    compatible,
    merge_inputs,
    padded_batch_size,
    split_outputs,
)
from serving.config import BatchingConfig
from serving.errors import Code, ServingError


def test_merge_and_split_round_trip():
    first = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    second = {"x": np.arange(6, 9, dtype=np.float32).reshape(1, 3)}
    merged = merge_inputs([first, second], padded_size=4)
    assert merged["x"].shape == (4, 3)
    np.testing.assert_array_equal(merged["x"][3], merged["x"][0])  # padding repeats row 0
    outputs = {"y": merged["x"] * 2, "z": merged["x"].sum(axis=1)}
    one, two = split_outputs(outputs, [2, 1], padded_size=4)
    np.testing.assert_array_equal(one["y"], first["x"] * 2)
    np.testing.assert_array_equal(two["z"], second["x"].sum(axis=1))


def test_split_rejects_outputs_without_the_batch_dimension():
    with pytest.raises(ServingError, match="0th dimension"):
        split_outputs({"y": np.zeros(3)}, [2, 2], padded_size=4)


def test_batch_size_and_compatibility():
    assert batch_size_of({"a": np.zeros((3, 2)), "b": np.zeros(3)}) == 3
    with pytest.raises(ServingError, match="equal 0th-dimension size"):
        batch_size_of({"a": np.zeros((3, 2)), "b": np.zeros(2)})
    assert compatible({"a": np.zeros((1, 2))}, {"a": np.zeros((5, 2))})
    assert not compatible({"a": np.zeros((1, 2))}, {"a": np.zeros((1, 3))})
    assert not compatible({"a": np.zeros((1, 2))}, {"a": np.zeros((1, 2), dtype=np.int32)})
    assert padded_batch_size(3, (2, 4, 8)) == 4
    assert padded_batch_size(3, ()) == 3


def test_concurrent_calls_are_merged_and_answered_correctly():
    calls: list[int] = []

    def run(inputs):
        calls.append(inputs["x"].shape[0])
        return {"y": inputs["x"] * 10 + 1}

    batcher = Batcher(BatchingConfig(max_batch_size=64, batch_timeout_micros=200_000,
                                     num_batch_threads=1))  # fmt: skip
    requests = [np.arange(i, i + 1 + i % 3, dtype=np.int64) for i in range(12)]
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(requests))

    def call(index: int) -> None:
        barrier.wait()
        results[index] = batcher.submit("m", run, {"x": requests[index]})["y"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    batcher.close()
    for index, request in enumerate(requests):
        np.testing.assert_array_equal(results[index], request * 10 + 1)
    assert sum(calls) == sum(len(r) for r in requests)
    assert len(calls) < len(requests), f"no merging happened: {calls}"


def test_oversized_task_and_errors_reach_every_caller():
    batcher = Batcher(BatchingConfig(max_batch_size=4, batch_timeout_micros=0))
    with pytest.raises(ServingError, match=r"^Task size 5 is larger than maximum input batch size"):
        batcher.submit("m", lambda inputs: inputs, {"x": np.zeros(5)})

    def broken(inputs):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        batcher.submit("m", broken, {"x": np.zeros(2)})
    batcher.close()


def test_large_batch_splitting():
    config = BatchingConfig(max_batch_size=4, enable_large_batch_splitting=True)
    batcher = Batcher(config)
    out = batcher.submit("m", lambda inputs: {"y": inputs["x"] + 1}, {"x": np.arange(10)})
    np.testing.assert_array_equal(out["y"], np.arange(10) + 1)
    batcher.close()


def _submit_together(batcher: Batcher, run, requests: list[np.ndarray]) -> dict[int, object]:
    """Submit all requests at once from separate threads; index -> output or the exception."""
    results: dict[int, object] = {}
    barrier = threading.Barrier(len(requests))

    def call(index: int) -> None:
        barrier.wait()
        try:
            results[index] = batcher.submit("m", run, {"x": requests[index]})["y"]
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_one_bad_request_in_a_merged_batch_fails_alone():
    calls: list[int] = []

    def run(inputs):  # like decoding images: one bad row fails the whole call
        calls.append(inputs["x"].shape[0])
        if np.any(inputs["x"] < 0):
            raise ServingError(Code.INVALID_ARGUMENT, "Unknown image file format.")
        return {"y": inputs["x"] * 2}

    batcher = Batcher(BatchingConfig(max_batch_size=64, batch_timeout_micros=300_000,
                                     num_batch_threads=1))  # fmt: skip
    requests = [np.array([i, i + 1]) for i in range(5)] + [np.array([-1])]
    results = _submit_together(batcher, run, requests)
    batcher.close()
    assert max(calls) > 2, f"the requests were never merged: {calls}"
    for index, request in enumerate(requests[:-1]):
        np.testing.assert_array_equal(results[index], request * 2)
    assert isinstance(results[5], ServingError)
    assert results[5].code == Code.INVALID_ARGUMENT


def test_the_batcher_does_not_keep_a_finished_model_alive():
    class Version:  # stands in for an unloaded model version whose last request has finished
        def run(self, inputs):
            return {"y": inputs["x"] + 1}

    batcher = Batcher(BatchingConfig(max_batch_size=8))
    version = Version()
    batcher.submit("m", version.run, {"x": np.arange(3)})
    reference = weakref.ref(version)
    del version
    gc.collect()
    batcher.close()
    assert reference() is None, "the batcher still references the version's run function"


def test_batch_timeout_counts_from_the_first_request_not_from_a_free_thread():
    started = threading.Event()

    def slow(inputs):
        started.set()
        time.sleep(1.0)
        return {"y": inputs["x"]}

    batcher = Batcher(BatchingConfig(max_batch_size=64, batch_timeout_micros=1_000_000,
                                     num_batch_threads=1))  # fmt: skip
    first = threading.Thread(target=batcher.submit, args=("a", slow, {"x": np.zeros(1)}))
    first.start()
    started.wait(5)  # the only batch thread is busy for 1 s; "b" arrives now
    begin = time.monotonic()
    batcher.submit("b", lambda inputs: {"y": inputs["x"]}, {"x": np.zeros(1)})
    waited = time.monotonic() - begin
    first.join(5)
    batcher.close()
    # "b" arrived 1 s before the thread was free: its timeout has passed and it runs at once
    # (about 1 s), not after another full timeout (about 2 s).
    assert waited < 1.6, f"waited {waited:.2f} s"


def test_an_empty_request_is_answered_even_with_padding():
    batcher = Batcher(BatchingConfig(max_batch_size=8, allowed_batch_sizes=(4, 8)))
    out = batcher.submit("m", lambda inputs: {"y": inputs["x"] * 2}, {"x": np.zeros((0, 3))})
    assert out["y"].shape == (0, 3)
    batcher.close()
