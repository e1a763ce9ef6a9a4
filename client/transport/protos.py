"""The gRPC transport's protobuf modules: our own, compiled from `client/transport/proto/*.proto`.

The client speaks TF Serving's gRPC API with messages declared in this project (TF Serving's
package names and field numbers, only the fields the client uses), compiled by grpcio-tools
when the project is installed. So gRPC needs grpcio and protobuf, not TensorFlow or
tensorflow-serving-api, and the modules keep to a descriptor pool of their own, so they live
beside TensorFlow's in one process in either import order.

`load()` imports them once and returns them as attributes. `tensorflow`, `tensorflow_error`,
`serving` and `serving_grpc` are the generated modules; the names of TF Serving's Python
modules (`predict_pb2`, `tensor_pb2`, `prediction_service_pb2_grpc`, ...) are aliases of them,
so code written against tensorflow-serving-api reads the same: `load().predict_pb2.PredictRequest`.
"""

from __future__ import annotations

import hashlib
import importlib
import threading
from pathlib import Path
from types import SimpleNamespace

_lock = threading.Lock()
_loaded: SimpleNamespace | None = None

PACKAGE = "client.transport.proto"
_MODULES = {
    "tensorflow": "tensorflow_pb2",
    "tensorflow_error": "tensorflow_error_pb2",
    "serving": "tensorflow_serving_pb2",
    "serving_grpc": "tensorflow_serving_pb2_grpc",
}
# TF Serving's module name -> the module here that declares its messages.
_ALIASES = {
    "predict_pb2": "serving",
    "get_model_metadata_pb2": "serving",
    "get_model_status_pb2": "serving",
    "prediction_service_pb2_grpc": "serving_grpc",
    "model_service_pb2_grpc": "serving_grpc",
    "tensor_pb2": "tensorflow",
    "types_pb2": "tensorflow",
    "tensor_shape_pb2": "tensorflow",
}

_NOT_COMPILED = (
    "the gRPC transport's protobuf modules are {what}: they are compiled from "
    "client/transport/proto/*.proto when the project is installed; run "
    "pip install -e '.[client]' (or make setup) again, or use an http:// server address"
)


def load() -> SimpleNamespace:
    """The proto modules as attributes: `load().predict_pb2.PredictRequest`, ..."""
    global _loaded
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is None:
            _loaded = _import_all()
    return _loaded


def _import_all() -> SimpleNamespace:
    try:
        modules = {
            key: importlib.import_module(f"{PACKAGE}.{module}") for key, module in _MODULES.items()
        }
    except ModuleNotFoundError as error:
        if (error.name or "").startswith(PACKAGE):
            raise ModuleNotFoundError(
                _NOT_COMPILED.format(what="not compiled"), name=error.name
            ) from error
        raise ModuleNotFoundError(
            f"the gRPC transport needs {error.name!r}: install the client extra "
            "(pip install 'digits-serving[client]') or use an http:// server address",
            name=error.name,
        ) from error
    stale = stale_sources()
    if stale:
        raise ImportError(_NOT_COMPILED.format(what=f"older than {', '.join(stale)}"), name=PACKAGE)
    modules.update({alias: modules[key] for alias, key in _ALIASES.items()})
    return SimpleNamespace(**modules)


def stale_sources() -> list[str]:
    """The .proto files that changed since the modules were compiled (the build records each
    file's sha256; a wheel's copies are the ones it was built from)."""
    compiled = importlib.import_module(f"{PACKAGE}._compiled").SOURCES
    folder = Path(importlib.import_module(PACKAGE).__file__).parent
    current = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.glob("*.proto")
    }
    return sorted(name for name, digest in current.items() if compiled.get(name) != digest)
