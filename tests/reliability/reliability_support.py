"""Helpers of the reliability tests: real digits as PNGs, a server on fixed ports that can be
SIGKILLed and started again, the client as a subprocess, a process's memory and descriptors.

Every process is started here by PID and stopped by that PID; all traffic is on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from harness import REPO_ROOT, ServerProcess, free_port, wait_until_available

MODEL = "mnist"
N_DIGITS = 600  # real MNIST test digits scored by the kill tests


def env_seconds(name: str, default: float) -> float:
    """A duration from the environment (longer runs: RELIABILITY_LOAD_SECONDS=60 ...)."""
    value = os.environ.get(name, "")
    return float(value) if value.strip() else default


def load_mnist_test(mnist_dir: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` MNIST test digits uint8 [N, 28, 28] and their labels."""
    with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz") as stream:
        _magic, _count, rows, cols = struct.unpack(">IIII", stream.read(16))
        images = np.frombuffer(stream.read(count * rows * cols), dtype=np.uint8)
    with gzip.open(mnist_dir / "t10k-labels-idx1-ubyte.gz") as stream:
        stream.read(8)
        labels = np.frombuffer(stream.read(count), dtype=np.uint8)
    return images.reshape(count, rows, cols).copy(), labels.copy()


def write_pngs(images: np.ndarray, labels: np.ndarray, root: Path) -> list[str]:
    """Save digits as root/<label>/<index>.png; returns the relative paths, sorted."""
    from PIL import Image

    names = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        relative = f"{label}/{index:05d}.png"
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / relative)
        names.append(relative)
    return sorted(names)


def publish_copy(source: Path, base: Path, version: int) -> Path:
    """Publish like the trainer: copy under a hidden staging name, then rename into place."""
    staging = base / f".staging-{version}"
    shutil.copytree(source, staging)
    return staging.rename(base / str(version))


class Ports:
    """A gRPC and a REST port chosen once, so a restarted server comes back on the same ones."""

    def __init__(self, grpc: int | None = None, rest: int | None = None) -> None:
        self.grpc, self.rest = grpc or free_port(), rest or free_port()

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest}"


def start_server(ports: Ports, *flags: str, log_path: Path) -> ServerProcess:
    """`python -m serving` on `ports`, bound to 127.0.0.1; does not wait for models."""
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving", "--host=127.0.0.1", f"--port={ports.grpc}",
             f"--rest_api_port={ports.rest}", *flags],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return ServerProcess(process, ports.grpc, ports.rest, log_path)


def start_available(ports: Ports, *flags: str, log_path: Path, timeout: float = 120):
    server = start_server(ports, *flags, log_path=log_path)
    try:
        wait_until_available(server, MODEL, timeout=timeout)
    except BaseException:
        stop(server.process)
        raise
    return server


def sigkill(process: subprocess.Popen) -> None:
    """SIGKILL this process (by its PID) and reap it."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM by PID, SIGKILL after 30 s; a process already gone is fine."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sigkill(process)
    process.wait(timeout=30)


@contextlib.contextmanager
def stopped_at_exit(*processes: subprocess.Popen) -> Iterator[list[subprocess.Popen]]:
    """Stop every process in the (growing) list on the way out, whatever happened."""
    started = list(processes)
    try:
        yield started
    finally:
        for process in started:
            stop(process)


def client_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "client", *map(str, args)]


def run_client(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        client_command(*args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def complete_lines(path: Path) -> tuple[list[bytes], bytes]:
    """The newline-terminated lines of a file, and what follows the last newline."""
    data = path.read_bytes() if path.exists() else b""
    cut = data.rfind(b"\n") + 1
    return data[:cut].splitlines(keepends=True), data[cut:]


def wait_for_lines(path: Path, count: int, process: subprocess.Popen, timeout: float) -> None:
    """Wait until `path` holds `count` complete lines while `process` runs."""
    deadline = time.monotonic() + timeout
    while len(complete_lines(path)[0]) < count:
        if process.poll() is not None:
            said = process.stderr.read()[-2000:] if process.stderr else ""
            raise AssertionError(
                f"the client exited ({process.returncode}) before {count} lines in {path} "
                f"(it has {len(complete_lines(path)[0])}): {said}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} lines in {path} after {timeout} s")
        time.sleep(0.02)


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def rss_mb(pid: int) -> float:
    return int(proc_status(pid)["VmRSS"].split()[0]) / 1024


def thread_count(pid: int) -> int:
    return int(proc_status(pid)["Threads"])


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def compare_predictions(out: Path, reference: Path) -> dict[str, object]:
    """Rows lost, duplicated or different in `out` compared with `reference`.

    Probabilities may differ in their last float32 bits with the batch an image travelled in, so
    they are compared to 1e-6; `identical` says whether the files are byte for byte the same.
    """
    from client.outputs import read_rows

    rows, expected = read_rows(out), read_rows(reference)
    paths = [row["path"] for row in rows]
    wanted = {row["path"]: row for row in expected}
    by_path = {row["path"]: row for row in rows}
    differing = 0
    for path, row in by_path.items():
        other = wanted.get(path)
        if other is None:
            continue
        same = all(row[key] == other[key] for key in ("class_id", "class", "model_version"))
        same = same and row["error"] is None and other["error"] is None
        same = same and abs(row["confidence"] - other["confidence"]) <= 1e-6
        same = same and [e["class_id"] for e in row["top_k"]] == [
            e["class_id"] for e in other["top_k"]
        ]
        differing += not same
    return {
        "rows": len(rows),
        "lost": len(set(wanted) - set(by_path)),
        "extra": len(set(by_path) - set(wanted)),
        "duplicated": len(paths) - len(set(paths)),
        "differing": differing,
        "in_order": paths == [row["path"] for row in expected],
        "identical": out.read_bytes() == reference.read_bytes(),
    }


class Traffic:
    """`clients` threads, alternately gRPC and REST, each with its own connection of the real
    client library (no retries: every failure counts), sending predicts until stopped.

    Each answer must carry the expected class ids. gRPC answers name the version that answered:
    `versions` holds each gRPC client's sequence of them (consecutive repeats collapsed). TF
    Serving's REST predict reply names none, so REST clients only count failures."""

    def __init__(self, ports: Ports, images: np.ndarray, expected: np.ndarray, clients: int):
        import threading

        self.ports, self.images, self.expected = ports, images, expected
        self.sent = [0] * clients
        self.failures: list[str] = []
        self.grpc_clients = list(range(0, clients, 2))
        self.versions: list[list[int]] = [[] for _ in self.grpc_clients]
        self.latest = [0 for _ in self.grpc_clients]  # each gRPC client's last answer
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(index,), daemon=True)
            for index in range(clients)
        ]

    @property
    def requests(self) -> int:
        return sum(self.sent)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self._threads), "a client hangs"

    def wait(self, condition, timeout: float = 60, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what} ({self.summary()})")
            time.sleep(0.1)

    def all_on(self, version: int) -> bool:
        return all(latest == version for latest in self.latest)

    def summary(self) -> str:
        return f"{self.requests} requests, {len(self.failures)} failed: {self.failures[:3]}"

    def _run(self, index: int) -> None:
        from client.errors import ClientError
        from client.transport import connect
        from client.types import ModelSpec

        url = self.ports.grpc_url if index % 2 == 0 else self.ports.rest_url
        model = ModelSpec(name=MODEL)
        with connect(url, retries=0, timeout=30) as transport:
            while not self._stop.is_set():
                self.sent[index] += 1
                try:
                    reply = transport.predict(model, {"images": self.images})
                except ClientError as error:
                    self.failures.append(f"{url}: {error.code}: {error.message[:200]}")
                    continue
                class_ids = np.asarray(reply.outputs["class_ids"])
                if not np.array_equal(class_ids, self.expected):
                    self.failures.append(f"{url}: version {reply.model_version}: {class_ids}")
                if index % 2 == 0:
                    versions = self.versions[index // 2]
                    if not versions or versions[-1] != reply.model_version:
                        versions.append(reply.model_version)
                    self.latest[index // 2] = reply.model_version
