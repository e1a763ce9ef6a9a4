"""Sustained load: 16 clients (8 gRPC, 8 REST) for RELIABILITY_LOAD_SECONDS (default 12; the
hand-run figure was 60 s) against the session's server. No request fails; once the server is
warm (the first quarter: its thread pools fill up to their bounds) its memory and threads stay
flat, and the clients' connections are all released at the end."""

from __future__ import annotations

import time

import numpy as np
import pytest
from reliability_support import (
    MODEL,
    Ports,
    Traffic,
    env_seconds,
    fd_count,
    rss_mb,
    thread_count,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = 16
BATCH = 8
SECONDS = env_seconds("RELIABILITY_LOAD_SECONDS", 12)
# Growth allowed between the end of the warm-up (first quarter) and the end of the run.
RSS_GROWTH_MB = 64


def test_sixteen_clients_sustained_without_errors_or_leaks(served_model, digits, figures):
    from client.transport import connect
    from client.types import ModelSpec

    pid = served_model.process.pid
    ports = Ports(served_model.grpc_port, served_model.rest_port)
    images = digits[0][:BATCH, ..., None]
    with connect(ports.grpc_url, retries=0) as transport:
        expected = np.asarray(transport.predict(ModelSpec(name=MODEL), {"images": images})
                              .outputs["class_ids"])  # fmt: skip
    fds_before, threads_before, rss_before = fd_count(pid), thread_count(pid), rss_mb(pid)
    samples = []  # (seconds, RSS MB, threads)
    with Traffic(ports, images, expected, CLIENTS) as traffic:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < SECONDS:
            samples.append((elapsed, rss_mb(pid), thread_count(pid)))
            time.sleep(0.5)
        requests_sent = traffic.requests
    seconds = time.monotonic() - started
    time.sleep(1)  # closed connections leave the server
    fds_after, threads_after = fd_count(pid), thread_count(pid)
    warm = [(rss, threads) for elapsed, rss, threads in samples if elapsed >= SECONDS / 4]
    growth = warm[-1][0] - warm[0][0]
    warm_threads = max(threads for _, threads in warm)
    assert served_model.process.poll() is None, "the server died"
    assert not traffic.failures, traffic.summary()
    assert min(traffic.sent) > 0, traffic.sent
    assert growth < RSS_GROWTH_MB, f"server memory grew {growth:.0f} MB once warm: {samples}"
    assert fds_after <= fds_before + 2, f"file descriptors {fds_before} -> {fds_after}"
    assert warm[-1][1] <= warm[0][1] + 2, f"threads grew once warm: {samples}"
    assert threads_after <= warm_threads, f"threads {warm_threads} -> {threads_after}"
    figures(
        clients=CLIENTS, seconds=f"{seconds:.0f}", requests=requests_sent,
        per_second=f"{requests_sent / seconds:.0f}", failed=len(traffic.failures),
        rss_mb=f"{rss_before:.0f}->{warm[0][0]:.0f}(warm)->{warm[-1][0]:.0f}",
        threads=f"{threads_before}->{warm[0][1]}(warm)->{warm[-1][1]}->{threads_after}(idle)",
        fds=f"{fds_before}->{fds_after}",
    )  # fmt: skip
