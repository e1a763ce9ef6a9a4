"""Batch merge/split, and the Batcher merging concurrent calls with unchanged answers."""

from __future__ import annotations

import threading

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
from serving.errors import ServingError


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
