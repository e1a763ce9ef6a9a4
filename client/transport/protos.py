"""Import TF Serving's generated protobuf modules without importing TensorFlow.

`tensorflow-serving-api` ships its `*_pb2` modules, but they import TensorFlow's own protos as
`tensorflow.core.framework.tensor_pb2` and friends. Importing any `tensorflow.*` submodule runs
`tensorflow/__init__.py` first, which loads the whole runtime (seconds, hundreds of MB) even
though the protos are plain generated code whose own packages (`tensorflow/core/__init__.py`,
...) are empty.

So, when TensorFlow is not imported yet, `load()` puts a bare placeholder package named
`tensorflow` (with the real package's search path) in `sys.modules`, imports the proto modules
through it, and removes the placeholder again. The proto modules stay registered under their
real names, so a later `import tensorflow` runs the real `__init__` and reuses them: same files,
same descriptors. While the placeholder is in place a lock is held, and it is never left behind
(`finally`). Another thread importing TensorFlow during those ~0.1 s could see the placeholder;
the client itself never imports TensorFlow, and a process that does can import it first.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from types import SimpleNamespace

_lock = threading.Lock()
_loaded: SimpleNamespace | None = None

_MODULES = {
    "predict_pb2": "tensorflow_serving.apis.predict_pb2",
    "get_model_metadata_pb2": "tensorflow_serving.apis.get_model_metadata_pb2",
    "get_model_status_pb2": "tensorflow_serving.apis.get_model_status_pb2",
    "prediction_service_pb2_grpc": "tensorflow_serving.apis.prediction_service_pb2_grpc",
    "model_service_pb2_grpc": "tensorflow_serving.apis.model_service_pb2_grpc",
    "tensor_pb2": "tensorflow.core.framework.tensor_pb2",
    "types_pb2": "tensorflow.core.framework.types_pb2",
    "tensor_shape_pb2": "tensorflow.core.framework.tensor_shape_pb2",
}


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
        placeholder = None
        if "tensorflow" not in sys.modules:
            spec = importlib.util.find_spec("tensorflow")
            if spec is None or not spec.submodule_search_locations:
                raise ModuleNotFoundError("tensorflow", name="tensorflow")
            placeholder = types.ModuleType("tensorflow")
            placeholder.__path__ = list(spec.submodule_search_locations)
            placeholder.__spec__ = spec
            sys.modules["tensorflow"] = placeholder
        try:
            modules = {key: importlib.import_module(name) for key, name in _MODULES.items()}
        finally:
            if placeholder is not None and sys.modules.get("tensorflow") is placeholder:
                del sys.modules["tensorflow"]
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"the gRPC transport needs {error.name!r}: install the client extra "
            "(pip install 'digits-serving[client]') or use an http:// server address",
            name=error.name,
        ) from error
    return SimpleNamespace(**modules)
