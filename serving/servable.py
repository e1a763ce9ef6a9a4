"""One loaded model version: its SignatureDefs (as TF Serving reports them) and callables.

Metadata comes from the `serve` MetaGraphDef in saved_model.pb, the same SignatureDef map TF
Serving returns; inference goes through `tf.saved_model.load(...).signatures`, which works for
TF2/Keras 3 exports and TF1 graph SavedModels alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.errors import ServingError, internal, invalid_argument

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

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape, strict=True)
        )

    def describe_shape(self) -> str:
        if self.shape is None:
            return "[?]"
        return "[" + ",".join("-1" if d is None else str(d) for d in self.shape) + "]"


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
    """A SignatureDef plus the function that runs it."""

    def __init__(self, name: str, signature_def, function) -> None:
        self.name = name
        self.signature_def = signature_def
        self.method_name = signature_def.method_name
        self.function = function
        self.inputs = {k: _spec(k, v) for k, v in signature_def.inputs.items()}
        self.outputs = {k: _spec(k, v) for k, v in signature_def.outputs.items()}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call the signature on host arrays; TF errors become INVALID_ARGUMENT (bad input)."""
        import tensorflow as tf

        feeds = {}
        for key, array in inputs.items():
            spec = self.inputs[key]
            feeds[key] = tf.constant(array, dtype=tf.dtypes.as_dtype(spec.dtype_enum))
        try:
            results = self.function(**feeds)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            raise invalid_argument(_first_line(error)) from None
        except tf.errors.OpError as error:
            raise ServingError(_code_of(error), _first_line(error)) from None
        return {key: _to_numpy(value) for key, value in results.items()}


def _to_numpy(value) -> np.ndarray:
    array = value.numpy()
    return array if isinstance(array, np.ndarray) else np.asarray(array)


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


def _code_of(error):
    from serving.errors import Code

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


def _code(name: str):
    from serving.errors import Code

    return Code[name]


def _not_found_code():
    return _code("NOT_FOUND")


class LoadedVersion:
    """A loaded version of a model. Thread-safe for concurrent inference."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = read_signature_defs(path)
        import tensorflow as tf

        try:
            self._loaded = tf.saved_model.load(str(path), tags=["serve"])
        except Exception as error:  # any loader failure is a failed version, not a crash
            raise internal(f"Failed to load SavedModel at {path}: {_first_line(error)}") from None
        functions = dict(self._loaded.signatures)
        self.signatures: dict[str, Signature] = {}
        for key, signature_def in self.signature_defs.items():
            if key in functions:
                self.signatures[key] = Signature(key, signature_def, functions[key])

    def signature(self, name: str) -> Signature:
        key = name or DEFAULT_SIGNATURE
        signature = self.signatures.get(key)
        if signature is None:
            from serving.errors import failed_precondition

            raise failed_precondition(f'Serving signature key "{key}" not found.')
        return signature
