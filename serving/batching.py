"""Server-side batching (`--enable_batching`), after TF Serving's BatchingSession.

Concurrent predict calls to the same model version and signature wait in one queue; a batch
thread takes the queue's head, gathers more tasks until the rows reach `max_batch_size` or
`batch_timeout_micros` passes, runs them as one call (inputs concatenated on the 0th
dimension, padded up to the next `allowed_batch_sizes` entry), and splits the outputs back
by each task's row count. Tasks whose inputs cannot be concatenated with the head (other
input names, dtypes or inner shapes) wait for a later batch. When a merged batch fails, its
tasks run again one by one, so that one bad request (an undecodable image, say) fails alone
instead of failing every request it was merged with (TF Serving fails the whole batch).
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from collections.abc import Callable

import numpy as np

from serving.config import BatchingConfig
from serving.errors import internal, invalid_argument, unavailable

Arrays = dict[str, np.ndarray]


def batch_size_of(inputs: Arrays) -> int:
    """The shared 0th-dimension size of a request's inputs (TF Serving's wording on error)."""
    sizes = {array.shape[0] if array.ndim else -1 for array in inputs.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()


def compatible(first: Arrays, second: Arrays) -> bool:
    """Whether two requests' inputs can be concatenated along the 0th dimension."""
    if first.keys() != second.keys():
        return False
    return all(
        first[k].dtype == second[k].dtype and first[k].shape[1:] == second[k].shape[1:]
        for k in first
    )


def merge_inputs(tasks: list[Arrays], padded_size: int | None = None) -> Arrays:
    """Concatenate the tasks' inputs row-wise; pad by repeating the first row if asked."""
    merged = {}
    for key in tasks[0]:
        merged[key] = np.concatenate([task[key] for task in tasks], axis=0)
        rows = merged[key].shape[0]
        if padded_size is not None and padded_size > rows:
            padding = np.repeat(merged[key][:1], padded_size - rows, axis=0)
            merged[key] = np.concatenate([merged[key], padding], axis=0)
    return merged


def split_outputs(outputs: Arrays, sizes: list[int], padded_size: int) -> list[Arrays]:
    """Cut batched outputs back into one dict per task, dropping padding rows."""
    for key, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != padded_size:
            raise internal(
                f"Batched output tensor {key} has 0th dimension "
                f"{array.shape[0] if array.ndim else 'none'}, expected {padded_size}",
            )
    results, offset = [], 0
    for size in sizes:
        results.append({key: array[offset : offset + size] for key, array in outputs.items()})
        offset += size
    return results


def padded_batch_size(rows: int, allowed: tuple[int, ...]) -> int:
    for size in allowed:
        if size >= rows:
            return size
    return rows


class _Task:
    __slots__ = ("enqueued", "future", "inputs", "run", "size")

    def __init__(self, run: Callable[[Arrays], Arrays], inputs: Arrays, size: int) -> None:
        # The task, not the batcher, holds `run`: it references the model version, which must
        # be freed once the version is unloaded and its last request has finished.
        self.run, self.inputs, self.size = run, inputs, size
        self.enqueued = time.monotonic()
        self.future: concurrent.futures.Future = concurrent.futures.Future()


class _Queue:
    def __init__(self) -> None:
        self.tasks: collections.deque[_Task] = collections.deque()
        self.rows = 0


class Batcher:
    """Batches calls of `run(key, inputs)` per key; one instance per server."""

    def __init__(self, config: BatchingConfig) -> None:
        self.config = config
        self._condition = threading.Condition()
        self._queues: dict[object, _Queue] = {}
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(max(1, config.num_batch_threads))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: object, run: Callable[[Arrays], Arrays], inputs: Arrays) -> Arrays:
        """Run `inputs` as part of a batch of same-key requests; blocks until done."""
        size = batch_size_of(inputs)
        if size > self.config.max_batch_size and not self.config.enable_large_batch_splitting:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size "
                f"{self.config.max_batch_size}"
            )
        if size == 0:  # nothing to merge, and no row to pad with
            return run(inputs)
        if size > self.config.max_batch_size:
            parts = [
                {k: v[start : start + self.config.max_batch_size] for k, v in inputs.items()}
                for start in range(0, size, self.config.max_batch_size)
            ]
            results = [self.submit(key, run, part) for part in parts]
            return {k: np.concatenate([r[k] for r in results]) for k in results[0]}
        task = _Task(run, inputs, size)
        with self._condition:
            if self._closed:
                raise unavailable("Batch scheduler is shutting down")
            queue = self._queues.setdefault(key, _Queue())
            limit = self.config.max_enqueued_batches * self.config.max_batch_size
            if queue.rows + size > limit:
                raise unavailable(
                    "The batch scheduling queue to which this task was submitted is full"
                )
            queue.tasks.append(task)
            queue.rows += size
            self._condition.notify()
        return task.future.result()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def _take_batch(self) -> list[_Task] | None:
        timeout = self.config.batch_timeout_micros / 1e6
        with self._condition:
            while True:
                ready = [(k, q) for k, q in self._queues.items() if q.tasks]
                if not ready:
                    if self._closed:
                        return None
                    self._condition.wait()
                    continue
                # The queue whose head has waited longest goes first; the timeout counts from
                # the head's arrival, not from when a batch thread became free.
                key, queue = ready[0]
                deadline = queue.tasks[0].enqueued + timeout
                while queue.rows < self.config.max_batch_size and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._condition.wait(remaining)
                if not queue.tasks:  # another batch thread took them meanwhile
                    continue
                head = queue.tasks.popleft()
                batch, rows, skipped = [head], head.size, []
                while queue.tasks:
                    task = queue.tasks.popleft()
                    if rows + task.size <= self.config.max_batch_size and compatible(
                        head.inputs, task.inputs
                    ):
                        batch.append(task)
                        rows += task.size
                    else:
                        skipped.append(task)
                queue.tasks.extend(skipped)
                queue.rows -= rows
                # Move a still-busy queue to the back so that other keys get their turn.
                if self._queues.get(key) is queue:
                    del self._queues[key]
                    if queue.tasks:
                        self._queues[key] = queue
                return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._answer(batch)
            del batch  # no reference to the tasks (and their model) while waiting for the next

    def _answer(self, batch: list[_Task]) -> None:
        try:
            parts = self._run_batch(batch)
        except BaseException as error:  # every waiting caller must hear about it
            if len(batch) == 1:
                batch[0].future.set_exception(error)
                return
            for task in batch:  # find the culprit: each task alone gets its own answer
                self._run_alone(task)
            return
        for task, part in zip(batch, parts, strict=True):
            task.future.set_result(part)

    def _run_batch(self, batch: list[_Task]) -> list[Arrays]:
        sizes = [task.size for task in batch]
        padded = padded_batch_size(sum(sizes), self.config.allowed_batch_sizes)
        outputs = batch[0].run(merge_inputs([task.inputs for task in batch], padded))
        return split_outputs(outputs, sizes, padded)

    def _run_alone(self, task: _Task) -> None:
        try:
            (part,) = self._run_batch([task])
        except BaseException as error:
            task.future.set_exception(error)
        else:
            task.future.set_result(part)
