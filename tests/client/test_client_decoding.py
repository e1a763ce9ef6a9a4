"""Where batches are decoded (client.scoring.decoding.Decoders): threads, worker processes, or
threads until the processes have started (`decode_processes=None`, auto)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pytest
from client_fixtures import fake, fake_server_instance, make_bad_files, make_uniform_folder

from client.preprocess import list_images
from client.scoring import decoding, score_files
from client.transport import connect
from client.types import ModelSpec

__all__ = ["fake", "fake_server_instance"]  # fixtures used by name


def test_auto_mode_starts_processes_only_for_large_runs_on_several_cpus():
    many = decoding.AUTO_PROCESS_FILES
    assert decoding.auto_processes(many, 2) == 2
    assert decoding.auto_processes(many, 8) == 4  # as many as the main thread can feed
    assert decoding.auto_processes(many - 1, 8) == 0  # start-up would cost more than it gains
    assert decoding.auto_processes(10 * many, 1) == 0  # nothing to run them on


class _RecordingPool(ThreadPoolExecutor):
    """A stand-in process pool: threads that say they are the pool, and its shutdown seen."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__(1)
        self.gate, self.shut = gate, False

    def submit(self, function, *args):
        if function is decoding.warm_up and self.gate is not None:
            self.gate.wait(10)
        return super().submit(lambda: ("pool", function(*args)))

    def shutdown(self, *args, **kwargs):
        self.shut = True
        super().shutdown(*args, **kwargs)


def _until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_threads_decode_until_the_pool_is_ready_then_the_pool_does(monkeypatch):
    gate = threading.Event()
    pool = _RecordingPool(gate)
    monkeypatch.setattr(decoding, "process_pool", lambda processes: pool)
    decoders = decoding.Decoders(1, 2)
    try:
        assert not decoders.in_processes
        assert decoders.submit(str, 1).result() == "1"  # a thread: the pool is still starting
        gate.set()
        assert _until(lambda: decoders.in_processes)
        assert decoders.submit(str, 2).result() == ("pool", "2")
    finally:
        decoders.shutdown()
    assert pool.shut


def test_a_pool_that_cannot_start_leaves_the_threads_to_do_everything(monkeypatch):
    def no_processes(processes):
        raise OSError("no /dev/shm here")

    monkeypatch.setattr(decoding, "process_pool", no_processes)
    decoders = decoding.Decoders(1, 2)
    decoders._starter.join(10)
    assert not decoders.in_processes
    assert [decoders.submit(str, n).result() for n in range(3)] == ["0", "1", "2"]
    decoders.shutdown()


def test_a_pool_still_starting_when_the_run_ends_is_shut_down_when_ready(monkeypatch):
    gate = threading.Event()
    pool = _RecordingPool(gate)
    monkeypatch.setattr(decoding, "process_pool", lambda processes: pool)
    decoders = decoding.Decoders(1, 2)
    threading.Timer(0.2, gate.set).start()
    decoders.shutdown()  # waits for the start to finish, then stops what it started
    assert pool.shut and not decoders.in_processes


def test_a_broken_pool_in_auto_mode_hands_the_rest_of_the_run_to_the_threads(monkeypatch):
    class Broken(_RecordingPool):
        def submit(self, function, *args):
            if function is decoding.warm_up:
                return super().submit(function, *args)
            raise BrokenProcessPool("a child process terminated abruptly")

    pool = Broken()
    monkeypatch.setattr(decoding, "process_pool", lambda processes: pool)
    decoders = decoding.Decoders(1, 2)
    assert _until(lambda: decoders.in_processes)
    assert decoders.submit(str, 7).result() == "7"  # the threads took it
    assert pool.shut and not decoders.in_processes
    decoders.shutdown()


def test_without_threads_a_broken_pool_is_the_batch_s_error(monkeypatch):
    class Broken(_RecordingPool):
        def submit(self, function, *args):
            raise BrokenProcessPool("a child process terminated abruptly")

    monkeypatch.setattr(decoding, "process_pool", lambda processes: Broken())
    decoders = decoding.Decoders(0, 2)
    with pytest.raises(BrokenProcessPool):
        decoders.submit(str, 1)
    decoders.shutdown()


@pytest.mark.parametrize("kind, started", [("grpc", True), ("rest", False)])
def test_auto_mode_starts_processes_over_grpc_only(fake, tmp_path, monkeypatch, kind, started):
    """Over REST the JSON body, not decoding, is the client's and the server's work."""
    calls: list[int] = []

    def no_pool(processes):
        calls.append(processes)
        raise OSError("not in this test")

    make_uniform_folder(tmp_path, [10, 20, 30])
    monkeypatch.setattr(decoding, "AUTO_PROCESS_FILES", 1)
    monkeypatch.setattr(decoding, "process_pool", no_pool)
    monkeypatch.setattr("client.scoring.pipeline._cpu_count", lambda: 2)
    with connect(fake.url(kind)) as transport:
        results = list(
            score_files(
                transport, ModelSpec(), list_images(tmp_path), root=tmp_path, batch_size=1,
                preprocess="none", progress=False,
            )
        )  # fmt: skip
    assert all(result.ok for result in results)  # threads scored them either way
    assert calls == ([2] if started else [])


@pytest.mark.slow
def test_auto_mode_scores_in_real_worker_processes_with_the_threads_results(
    fake, tmp_path, monkeypatch
):
    """Real processes (forkserver): the first batches are decoded in threads, those after the
    pool is up in worker processes, and every result is the one threads alone give."""
    make_uniform_folder(tmp_path, [int(v) for v in range(0, 250, 3)])
    make_bad_files(tmp_path)
    files = list_images(tmp_path)
    where: list[bool] = []
    real_submit = decoding.Decoders.submit

    def submit(self, function, *args):
        where.append(self.in_processes)
        if not self.in_processes:
            time.sleep(0.05)  # keep the run going until the pool is up
        return real_submit(self, function, *args)

    monkeypatch.setattr(decoding, "AUTO_PROCESS_FILES", 1)
    monkeypatch.setattr(decoding.Decoders, "submit", submit)
    monkeypatch.setattr("client.scoring.pipeline._cpu_count", lambda: 2)
    with connect(fake.grpc_url) as transport:
        by_auto, by_threads = (
            [
                (r.path, r.class_id, r.confidence, r.error)
                for r in score_files(
                    transport, ModelSpec(), files, root=tmp_path, batch_size=4,
                    preprocess="none", progress=False, decode_processes=processes,
                )
            ]
            for processes in (None, 0)
        )  # fmt: skip
    assert by_auto == by_threads
    assert sum(error is not None for *_, error in by_auto) == 4
    assert where[0] is False and True in where  # threads first, then the processes
