"""What the conformance tests share: target, expected outputs, tensor protos, error checks."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
STOCK_CONFIG_DIR = REPO_ROOT / "serving"
MODEL = "mnist"
# Probabilities cross JSON as shortest round-trip decimals and gRPC as float32: any difference
# beyond float32 rounding is a wrong answer, not noise.
TOLERANCE = 1e-6


ENV_REST = "TFS_CONFORMANCE_REST"
ENV_GRPC = "TFS_CONFORMANCE_GRPC"
ENV_REPOSITORY = "TFS_CONFORMANCE_REPOSITORY"


def external_target() -> bool:
    """Whether the environment points the suite at a server it did not start."""
    return bool(os.environ.get(ENV_REST) or os.environ.get(ENV_GRPC))


def server_flags(repository: Path, *extra: str) -> list[str]:
    """The tensorflow_model_server flags of serving/compose.yaml, pointed at `repository`."""
    return [
        f"--model_config_file={repository / 'models.config'}",
        # Labels are assigned before any version loads; without this flag TF Serving refuses
        # models.config at start-up (serving/models.config explains the rule).
        "--allow_version_labels_for_unavailable_models=true",
        "--enable_batching=true",
        f"--batching_parameters_file={STOCK_CONFIG_DIR / 'batching.config'}",
        f"--monitoring_config_file={STOCK_CONFIG_DIR / 'monitoring.config'}",
        "--enable_model_warmup=true",
        *extra,
    ]


def max_batch_size() -> int:
    """max_batch_size from serving/batching.config: the largest request the server accepts."""
    text = (STOCK_CONFIG_DIR / "batching.config").read_text()
    match = re.search(r"max_batch_size\s*\{\s*value:\s*(\d+)\s*\}", text)
    if match is None:
        raise ValueError("serving/batching.config has no max_batch_size")
    return int(match.group(1))


@dataclass(frozen=True)
class Expectations:
    """What make_repository computed in-process for its sample images."""

    images: np.ndarray  # uint8 [N, 28, 28, 1]
    pngs: list[bytes]
    outputs: dict[int, dict[str, np.ndarray]]  # version -> output name -> array
    labels: dict[str, int]

    @classmethod
    def load(cls, repository: Path) -> Expectations:
        path = repository / "expectations.json"
        if not path.exists():
            raise ValueError(f"{path} missing: write the repository with make_repository")
        data = json.loads(path.read_text())
        images = np.frombuffer(base64.b64decode(data["samples_uint8_b64"]), dtype=np.uint8)
        outputs = {
            int(version): {name: np.array(values) for name, values in named.items()}
            for version, named in data["outputs"].items()
        }
        return cls(
            images=images.reshape(data["sample_shape"]),
            pngs=[base64.b64decode(png) for png in data["samples_png_b64"]],
            outputs=outputs,
            labels=dict(data["labels"]),
        )


@dataclass
class Target:
    """A server to check: REST base URL, gRPC address, the repository it serves."""

    rest_url: str
    grpc_address: str
    repository: Path
    expectations: Expectations
    external: bool
    server: object | None = None  # tests/conftest.py ServerProcess for the local server

    def url(self, path: str) -> str:
        return self.rest_url + path


def wait_for_versions(rest_url: str, versions: set[int], timeout: float = 120) -> None:
    """Poll the status API until exactly `versions` of mnist are AVAILABLE."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            reply = requests.get(f"{rest_url}/v1/models/{MODEL}", timeout=5)
            statuses = reply.json().get("model_version_status", [])
            available = {int(s["version"]) for s in statuses if s["state"] == "AVAILABLE"}
            if available == versions:
                return
            last = reply.text
        except (requests.RequestException, ValueError) as error:
            last = repr(error)
        time.sleep(0.3)
    raise TimeoutError(f"versions {sorted(versions)} of {MODEL} not AVAILABLE: {last}")


# TensorProto dtype enum values (tensorflow/core/framework/types.proto).
DT_FLOAT, DT_INT32, DT_UINT8, DT_STRING, DT_INT64 = 1, 3, 4, 7, 9
NUMPY_OF_DTYPE = {
    DT_FLOAT: np.float32,
    DT_INT32: np.int32,
    DT_UINT8: np.uint8,
    DT_INT64: np.int64,
}
VALUE_FIELD_OF_DTYPE = {
    DT_FLOAT: "float_val",
    DT_INT32: "int_val",
    DT_UINT8: "int_val",
    DT_INT64: "int64_val",
    DT_STRING: "string_val",
}


def packed_tensor(array: np.ndarray, dtype: int):
    """A TensorProto with the values packed in tensor_content (what most clients send)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]
    )
    return tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=shape,
        tensor_content=np.ascontiguousarray(array, dtype=NUMPY_OF_DTYPE[dtype]).tobytes(),
    )


def typed_tensor(values, shape: tuple[int, ...], dtype: int):
    """A TensorProto with the values in the typed repeated field (int_val, string_val, ...)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    proto = tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]
        ),
    )
    getattr(proto, VALUE_FIELD_OF_DTYPE[dtype]).extend(values)
    return proto


def to_numpy(proto) -> np.ndarray:
    """Decode a TensorProto that uses either tensor_content or the typed fields.

    Stock TF Serving answers Predict with the typed fields (predict_util.cc, kAsProtoField);
    a client must accept both encodings, and so do these tests.
    """
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    if proto.dtype == DT_STRING:
        return np.array(list(proto.string_val), dtype=object).reshape(shape)
    numpy_dtype = NUMPY_OF_DTYPE[proto.dtype]
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=numpy_dtype).reshape(shape)
    values = np.array(getattr(proto, VALUE_FIELD_OF_DTYPE[proto.dtype]), dtype=numpy_dtype)
    if values.size == 1 and int(np.prod(shape)) > 1:
        # A single typed value stands for a tensor filled with it (tensor.proto).
        values = np.full(shape, values[0], dtype=numpy_dtype)
    return values.reshape(shape)


def assert_rest_error(reply: requests.Response, status: int, pattern: str) -> str:
    """The reply is TF Serving's error envelope {"error": "..."} with `status` and a message
    matching `pattern` (re.search). Returns the message."""
    assert reply.status_code == status, (
        f"expected HTTP {status}, got {reply.status_code}: {reply.text[:500]}"
    )
    assert reply.headers.get("Content-Type", "").startswith("application/json"), reply.headers
    body = reply.json()
    assert list(body) == ["error"], f"error body must be {{'error': ...}}, got {body}"
    message = body["error"]
    assert isinstance(message, str) and message, f"empty error message: {body}"
    assert re.search(pattern, message), f"error {message!r} does not match {pattern!r}"
    return message


def assert_rpc_error(call, code_name: str, pattern: str) -> str:
    """Run `call()`, expect a grpc.RpcError with that status code and a matching message."""
    import grpc

    try:
        call()
    except grpc.RpcError as error:
        assert error.code() == getattr(grpc.StatusCode, code_name), (
            f"expected {code_name}, got {error.code()}: {error.details()}"
        )
        details = error.details() or ""
        assert re.search(pattern, details), f"details {details!r} do not match {pattern!r}"
        return details
    raise AssertionError(f"expected {code_name}, but the call succeeded")
