"""One loaded model version: its SignatureDefs (as TF Serving reports them) and callables.

Metadata comes from the `serve` MetaGraphDef in saved_model.pb, the same SignatureDef map TF
Serving returns; inference goes through `tf.saved_model.load(...).signatures`, which works for
TF2/Keras 3 exports and TF1 graph SavedModels alike.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.errors import Code, ServingError, internal, invalid_argument

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"
INIT_OP_SIGNATURE = "__saved_model_init_op"


@dataclass(frozen=True)
class TensorSpec:
    """One signature input or output: the numpy dtype and shape (None: unknown dim/rank)."""

    key: str
    dtype: np.dtype
    dtype_enum: int
    shape: tuple[int | None, ...] | None


def numpy_dtype(dtype_enum: int) -> np.dtype:
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(dtype_enum)
    return np.dtype(object) if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)


# TF's DataTypeString for the DataType enum (tensorflow/core/framework/types.proto).
DTYPE_NAMES = {
    1: "float", 2: "double", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128",
    19: "half", 22: "uint32", 23: "uint64",
}  # fmt: skip


def dtype_name(dtype_enum: int) -> str:
    return DTYPE_NAMES.get(dtype_enum, f"type {dtype_enum}")


def _spec(key: str, tensor_info) -> TensorSpec:
    shape = None
    if not tensor_info.tensor_shape.unknown_rank:
        shape = tuple(d.size if d.size >= 0 else None for d in tensor_info.tensor_shape.dim)
    return TensorSpec(key, numpy_dtype(tensor_info.dtype), tensor_info.dtype, shape)


class Signature:
    """A SignatureDef of a loaded version, run through the version's runtime by tensor name."""

    def __init__(self, name: str, signature_def, runtime) -> None:
        self.name = name
        self.signature_def = signature_def
        self.method_name = signature_def.method_name
        self.runtime = runtime
        self.inputs = {k: _spec(k, v) for k, v in signature_def.inputs.items()}
        self.outputs = {k: _spec(k, v) for k, v in signature_def.outputs.items()}

    def run(
        self, inputs: dict[str, np.ndarray], output_keys: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Feed `inputs` (by alias) and fetch `output_keys` (default: every output).

        As in TF Serving (predict_util.cc), the tensors go to the session as they are: their
        shapes are not compared with the signature's; whatever the graph's ops accept is
        answered, and what they refuse comes back with the op's own message.
        """
        keys = list(self.outputs) if output_keys is None else list(output_keys)
        feeds = [
            (self.signature_def.inputs[alias].name, _feedable(array, self.inputs[alias]))
            for alias, array in sorted(inputs.items())
        ]
        fetches = [self.signature_def.outputs[alias].name for alias in keys]
        values = self.runtime.run(feeds, fetches)
        return dict(zip(keys, values, strict=True))


def _feedable(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Strings as an object array of bytes, which is what a TF string tensor takes."""
    if spec.dtype == object and array.dtype.kind == "U":
        return np.vectorize(lambda text: text.encode("utf-8"), otypes=[object])(array)
    if spec.dtype == object and array.dtype.kind == "S":
        return array.astype(object)
    return array


# ConfigProto.inter_op_parallelism_threads: "Negative value means all operations are performed
# in caller's thread."
INLINE_OPS = -1


class SessionRuntime:
    """A SavedModel loaded the way TF Serving loads every SavedModel, TF1 or TF2: the `serve`
    MetaGraphDef imported into a session, variables restored and init ops run
    (saved_model/loader.cc); a request is one Session run from the signature's tensor names.

    Callables are prepared once per (feeds, fetches) combination and are safe to call from many
    threads at once, as DirectSession::RunCallable is.

    A request's ops run on the thread that asked (ConfigProto inter_op_parallelism_threads < 0)
    instead of being handed to TensorFlow's inter-op pool and waited for: for one image through
    the MNIST MLP that hop was more than half of the run (262 -> 121 us in-process, 623 -> 447
    us after a 2 ms idle gap). Each request already has its own thread (gRPC's pool, REST's,
    a batch thread); ops still split their own work over the intra-op pool.
    """

    def __init__(self, path: Path) -> None:
        import tensorflow as tf
        from tensorflow.python.util import deprecation

        self.graph = tf.Graph()
        config = tf.compat.v1.ConfigProto(
            allow_soft_placement=True, inter_op_parallelism_threads=INLINE_OPS
        )
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        with self.graph.as_default(), deprecation.silence():
            tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(path))
        self._callables: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def run(self, feeds: list[tuple[str, np.ndarray]], fetches: list[str]) -> list[np.ndarray]:
        import tensorflow as tf

        key = (tuple(name for name, _ in feeds), tuple(fetches))
        function = self._callables.get(key)
        if function is None:
            function = self._prepare(key)
        try:
            values = function(*(array for _, array in feeds))
        except tf.errors.OpError as error:
            raise ServingError(_code_of(error), _first_line(error)) from None
        except (ValueError, TypeError) as error:  # a value numpy cannot hand to TensorFlow
            raise invalid_argument(_first_line(error)) from None
        return [_to_numpy(value) for value in values]

    def _prepare(self, key: tuple):
        import tensorflow as tf
        from tensorflow.core.protobuf import config_pb2

        with self._lock:
            function = self._callables.get(key)
            if function is None:
                options = config_pb2.CallableOptions(feed=list(key[0]), fetch=list(key[1]))
                try:
                    # The public make_callable() checks shapes in Python before TensorFlow
                    # sees them; TF Serving's Session::Run does not, so neither may we.
                    function = self.session._make_callable_from_options(options)
                except tf.errors.OpError as error:
                    raise ServingError(_code_of(error), _first_line(error)) from None
                self._callables[key] = function
        return function


def _to_numpy(value) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else np.asarray(value)


# Lines that tf.function errors put before the failing op's own message.
_GRAPH_ERROR_PREAMBLE = ("Detected at node", "<stack traces unavailable>", "Node:")


def _first_line(error: Exception) -> str:
    """The error's message in one line: for a failed op, the op's own message (the text TF
    Serving answers), not tf.function's "Graph execution error:" preamble."""
    text = (getattr(error, "message", None) or str(error)).strip()
    lines = text.splitlines()
    if lines and lines[0].startswith("Graph execution error"):
        for line in lines[1:]:
            if (
                line.strip()
                and not line[0].isspace()
                and not line.startswith(_GRAPH_ERROR_PREAMBLE)
            ):
                return re.sub(r"\s*\[Op:[^\]]*\]$", "", line)
    return lines[0] if lines else type(error).__name__


def _code_of(error) -> Code:
    try:
        return Code(error.error_code)
    except (ValueError, AttributeError):
        return Code.UNKNOWN


def read_signature_defs(version_dir: Path):
    """The `serve` MetaGraphDef's SignatureDef map, as in saved_model.pb (or .pbtxt)."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    binary, text = version_dir / "saved_model.pb", version_dir / "saved_model.pbtxt"
    if binary.exists():
        from google.protobuf.message import DecodeError

        try:
            saved_model.ParseFromString(binary.read_bytes())
        except DecodeError:
            message = f"Can't parse {binary} as binary proto"
            raise ServingError(_code("DATA_LOSS"), message) from None
    elif text.exists():
        text_format.Parse(text.read_text(), saved_model)
    else:
        raise ServingError(
            _not_found_code(),
            "Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
            f"{version_dir}",
        )
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return meta_graph.signature_def
    raise ServingError(
        _not_found_code(),
        "Could not find meta graph def matching supplied tags: { serve }. "
        "To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
        "`saved_model_cli`",
    )


def _code(name: str) -> Code:
    return Code[name]


def _not_found_code():
    return _code("NOT_FOUND")


class LoadedVersion:
    """A loaded version of a model. Thread-safe for concurrent inference.

    With `prefer_tflite`, a version folder holding `model.tflite` is served by the TF Lite
    interpreter (TF Serving's --prefer_tflite_model); otherwise the SavedModel is loaded.
    """

    def __init__(self, name: str, version: int, path: Path, prefer_tflite: bool = False) -> None:
        self.name = name
        self.version = version
        self.path = path
        tflite = path / TFLITE_FILE
        try:
            if prefer_tflite and tflite.is_file():
                self.runtime = TfLiteRuntime(tflite)
                self.signature_defs = self.runtime.signature_defs
            else:
                self.signature_defs = read_signature_defs(path)
                self.runtime = SessionRuntime(path)
        except ServingError:
            raise
        except Exception as error:  # any loader failure is a failed version, not a crash
            raise internal(f"Failed to load SavedModel at {path}: {_first_line(error)}") from None
        self.signatures: dict[str, Signature] = {
            key: Signature(key, signature_def, self.runtime)
            for key, signature_def in self.signature_defs.items()
            if key != INIT_OP_SIGNATURE
        }

    def signature(self, name: str) -> Signature:
        key = name or DEFAULT_SIGNATURE
        signature = self.signatures.get(key)
        if signature is None:
            from serving.errors import failed_precondition

            raise failed_precondition(f'Serving signature key "{key}" not found.')
        return signature


TFLITE_FILE = "model.tflite"
# The TF Lite metadata entry in which TF Serving's converter keeps SignatureDefs: a flexbuffer
# map from signature key to a serialized SignatureDef (tflite tools/signature/signature_def_util).
TFLITE_SIGNATURES_METADATA = b"signature_defs_metadata"


class TfLiteRuntime:
    """model.tflite run by TensorFlow's TF Lite interpreter, as TF Serving's TfLiteSession does.

    Signatures come from the model's `signature_defs_metadata` when it has one; otherwise one
    `serving_default` predict signature is made from the interpreter's input and output tensors,
    keyed by tensor name (tflite_session.cc). Each run resizes the inputs to the fed shapes. One
    interpreter, one run at a time.
    """

    def __init__(self, path: Path) -> None:
        import tensorflow as tf

        with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": still TF's own
            warnings.simplefilter("ignore")
            self.interpreter = tf.lite.Interpreter(model_path=str(path))
        self._lock = threading.Lock()
        self._inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
        self._outputs = {d["name"]: d for d in self.interpreter.get_output_details()}
        self._shapes = {name: tuple(d["shape"]) for name, d in self._inputs.items()}
        self.signature_defs = self._read_signatures(path)

    def _read_signatures(self, path: Path) -> dict:
        from tensorflow.core.protobuf import meta_graph_pb2

        from serving.logs import log

        stored = _tflite_signature_metadata(path.read_bytes())
        signatures = {}
        if stored:
            for key, data in stored.items():
                signature_def = meta_graph_pb2.SignatureDef.FromString(data)
                for kind, known in (("input", self._inputs), ("output", self._outputs)):
                    for alias, info in getattr(signature_def, f"{kind}s").items():
                        name = self._tensor_name(info.name, known)
                        if name is None:
                            raise invalid_argument(
                                f"Signature {kind} {alias} references an unknown tensor"
                            )
                        info.name = name
                signatures[key] = signature_def
            return signatures
        log("tflite_no_signature_def", level="warning", path=path,
            note="No signature def found in TFLite model. Generating one.")  # fmt: skip
        signature_def = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
        for details, target in ((self._inputs, "inputs"), (self._outputs, "outputs")):
            for name, detail in details.items():
                info = getattr(signature_def, target)[_legacy_name(name)]
                info.name = name
                info.dtype = _dtype_enum(detail["dtype"])
                for size in detail["shape_signature"]:
                    info.tensor_shape.dim.add().size = int(size)
        return {DEFAULT_SIGNATURE: signature_def}

    @staticmethod
    def _tensor_name(name: str, known: dict) -> str | None:
        if name in known:
            return name
        legacy = _legacy_name(name)
        return legacy if legacy in known else None

    def run(self, feeds: list[tuple[str, np.ndarray]], fetches: list[str]) -> list[np.ndarray]:
        with self._lock:
            try:
                for name, array in feeds:
                    detail = self._inputs.get(name)
                    if detail is None:
                        raise invalid_argument(f"Missing input TFLite tensor: {name}")
                    if self._shapes[name] != array.shape:
                        self.interpreter.resize_tensor_input(detail["index"], list(array.shape))
                        self._shapes[name] = array.shape
                self.interpreter.allocate_tensors()
                for name, array in feeds:
                    self.interpreter.set_tensor(self._inputs[name]["index"], array)
                self.interpreter.invoke()
                values = []
                for name in fetches:
                    detail = self._outputs.get(name)
                    if detail is None:
                        raise internal(f"Missing output TFLite tensor: {name}")
                    values.append(np.array(self.interpreter.get_tensor(detail["index"])))
            except (ValueError, RuntimeError) as error:
                raise invalid_argument(_first_line(error)) from None
        return values


def _legacy_name(name: str) -> str:
    """A TF tensor name `x:0` as TF Lite names it, `x` (TfToTfLiteLegacyTensorName)."""
    return name[:-2] if name.endswith(":0") else name


def _dtype_enum(numpy_type) -> int:
    import tensorflow as tf

    return tf.dtypes.as_dtype(numpy_type).as_datatype_enum


def _tflite_signature_metadata(model: bytes) -> dict[str, bytes]:
    """The flexbuffer map in a .tflite file's `signature_defs_metadata` entry, if any."""
    from flatbuffers import flexbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(model, 0)
    for index in range(root.MetadataLength()):
        metadata = root.Metadata(index)
        if metadata.Name() != TFLITE_SIGNATURES_METADATA:
            continue
        data = root.Buffers(metadata.Buffer()).DataAsNumpy()
        if not isinstance(data, np.ndarray):
            return {}
        stored = flexbuffers.GetRoot(data.tobytes()).AsMap
        return {
            key.AsKey: bytes(value.AsStringBytes if value.IsString else value.AsBlob)
            for key, value in zip(stored.Keys, stored.Values, strict=True)
        }
    return {}
