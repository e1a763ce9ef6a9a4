"""Fixtures shared by every test folder: real data, free ports, a published model, servers."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def _find_mnist_dir() -> Path | None:
    candidates = [os.environ.get("MNIST_DIR"), REPO_ROOT.parent / "shared" / "data" / "mnist"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "t10k-labels-idx1-ubyte.gz").exists():
            return Path(candidate)
    return None


def require_dir(path: Path | None, what: str, how: str) -> Path:
    """Return `path`, or skip (outside CI) / fail (in CI) with a message saying how to fix it."""
    if path is not None and path.exists():
        return path
    message = f"{what} not found ({how})"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The four original MNIST IDX files (CI: ../shared/data/mnist)."""
    return require_dir(
        _find_mnist_dir(), "MNIST IDX files", "set MNIST_DIR or put them in ../shared/data/mnist"
    )


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """Fashion-MNIST IDX files from Debian's dataset-fashion-mnist package."""
    return require_dir(
        FASHION_MNIST_DIR if FASHION_MNIST_DIR.exists() else None,
        "Fashion-MNIST",
        "apt-get install -y dataset-fashion-mnist",
    )


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_python(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m ...` with this interpreter, capturing output."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=kwargs.pop("cwd", REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


@dataclass(frozen=True)
class PublishedModel:
    """A small MLP trained on a real MNIST subset and published by the trainer."""

    repo: Path  # the model repository (base of <name>/<version>)
    name: str
    run_dir: Path

    @property
    def base_path(self) -> Path:
        return self.repo / self.name

    def version_dir(self, version: int = 1) -> Path:
        return self.base_path / str(version)


@pytest.fixture(scope="session")
def published_model(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> PublishedModel:
    """Train for one epoch on 6,000 real MNIST digits and publish version 1 (about 20 s)."""
    root = tmp_path_factory.mktemp("published")
    model = PublishedModel(repo=root / "models", name="mnist", run_dir=root / "run")
    result = run_python(
        "-m", "trainer", "train",
        "--dataset", "mnist", "--data-dir", str(mnist_dir),
        "--model", "mlp", "--epochs", "2", "--limit", "6000", "--seed", "7",
        "--model-repo", str(model.repo), "--model-name", model.name,
        "--run-dir", str(model.run_dir),
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"trainer failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    if not (model.version_dir(1) / "saved_model.pb").exists():
        pytest.fail(f"trainer did not publish {model.version_dir(1)}")
    return model


@dataclass
class ServerProcess:
    process: subprocess.Popen
    grpc_port: int
    rest_port: int
    log_path: Path

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_until_available(
    server: ServerProcess, model_name: str, timeout: float = 120, version: int | None = None
) -> None:
    """Poll the REST status API until `model_name` (or that version) is AVAILABLE."""
    path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version else "")
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.rest_url + path, timeout=2) as reply:
                body = json.loads(reply.read())
            states = [v["state"] for v in body.get("model_version_status", [])]
            if "AVAILABLE" in states:
                return
            last = str(body)
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError) as error:
            last = repr(error)
        time.sleep(0.3)
    raise TimeoutError(
        f"{model_name} not AVAILABLE after {timeout}s (last: {last}):\n{server.log()}"
    )


@contextlib.contextmanager
def local_server(
    *flags: str, log_dir: Path, model_name: str | None = None
) -> Iterator[ServerProcess]:
    """Start `python -m serving` on free ports with tensorflow_model_server-style flags.

    With `model_name`, waits until that model is AVAILABLE before yielding.
    """
    grpc_port, rest_port = free_port(), free_port()
    log_path = log_dir / f"server-{rest_port}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving", f"--port={grpc_port}",
             f"--rest_api_port={rest_port}", *flags],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = ServerProcess(process, grpc_port, rest_port, log_path)
    try:
        if model_name:
            wait_until_available(server, model_name)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def served_model(
    published_model: PublishedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The local server, serving `published_model` as `mnist` (gRPC and REST on free ports)."""
    log_dir = tmp_path_factory.mktemp("server-logs")
    with local_server(
        f"--model_name={published_model.name}",
        f"--model_base_path={published_model.base_path}",
        log_dir=log_dir,
        model_name=published_model.name,
    ) as server:
        yield server
