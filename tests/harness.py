"""The test harness every folder shares: real data, free ports, subprocesses, the local server.

A plain module rather than conftest.py, so that any test or sub-folder conftest imports it by
name (pytest puts tests/ on sys.path when it loads tests/conftest.py); conftest files cannot
import one another.
"""

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

REPO_ROOT = Path(__file__).resolve().parent.parent


def find_mnist_dir() -> Path | None:
    candidates = [os.environ.get("MNIST_DIR"), REPO_ROOT.parent / "shared" / "data" / "mnist"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "t10k-labels-idx1-ubyte.gz").exists():
            return Path(candidate)
    return None


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
        time.sleep(0.1)  # cheap: until the server listens, each try is one refused connection
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


def grpc_predict(target: str, model: str, inputs: dict, signature: str = "") -> tuple[str, str]:
    """One PredictionService/Predict call of TensorProto `inputs`: (status code name, details),
    ("OK", "") when it succeeds."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for name, tensor in inputs.items():
        request.inputs[name].CopyFrom(tensor)
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            stub.Predict(request, timeout=60)
        except grpc.RpcError as error:
            return error.code().name, error.details()
    return "OK", ""
