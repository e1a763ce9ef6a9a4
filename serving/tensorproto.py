"""TensorProto <-> numpy for the gRPC adapter, with TensorFlow's rules and the local limits.

Decoding follows TensorFlow's Tensor::FromProto (tensorflow/core/framework/tensor.cc), which is
what TF Serving runs on every request tensor: the shape must be fully defined (no -1, no unknown
rank), `tensor_content` must hold exactly elements x dtype-size bytes, and typed fields
(`float_val`, `int_val`, ...) may hold fewer values than elements: none means zeros, fewer
means the last value repeats (more: the first ones are used). 8- and 16-bit integers travel in
`int_val` and wrap as C++'s cast does (300 as uint8 is 44). Reference, resource and variant
dtypes cannot be request tensors. Anything else is TF Serving's INVALID_ARGUMENT "tensor
parsing error: <name>".

Memory is bounded before anything is allocated: the tensors of one request may take at most
`--max_request_bytes` once decoded (strings count their bytes plus a per-element overhead), or
the request gets RESOURCE_EXHAUSTED naming the limit and the flag. A 46-byte request can
otherwise ask for gigabytes (one int_val filling a huge shape).
"""

from __future__ import annotations

import math

import numpy as np

from serving.errors import Code, ServingError, invalid_argument

DEFAULT_MAX_REQUEST_BYTES = 256 * 1024 * 1024
MAX_RANK = 254  # TensorShape's limit
STRING_OVERHEAD_BYTES = 32  # a numpy object slot plus a small bytes object, roughly

# DataType -> (numpy dtype, typed field); the dtypes decoded here without TensorFlow.
_TYPED = {
    1: (np.float32, "float_val"),
    2: (np.float64, "double_val"),
    3: (np.int32, "int_val"),
    4: (np.uint8, "int_val"),
    5: (np.int16, "int_val"),
    6: (np.int8, "int_val"),
    9: (np.int64, "int64_val"),
    10: (np.bool_, "bool_val"),
    17: (np.uint16, "int_val"),
    19: (np.float16, "half_val"),  # IEEE half bit patterns in an int32 field
    22: (np.uint32, "uint32_val"),
    23: (np.uint64, "uint64_val"),
}
DT_STRING = 7
# Valid request dtypes that tf.make_ndarray decodes once the checks here have passed:
# complex64/128, the quantized types, bfloat16, the float8 family, int4/uint4.
_VIA_TENSORFLOW = {8, 11, 12, 13, 14, 15, 16, 18, 24, 25, 26, 27, 28, 29, 30}
# What the field widens 8/16-bit values through before the wrapping cast.
_WIDE = {np.uint8: np.int32, np.int8: np.int32, np.int16: np.int32, np.uint16: np.int32}


class RequestTooLarge(ServingError):
    def __init__(self, needed: int, limit: int) -> None:
        super().__init__(
            Code.RESOURCE_EXHAUSTED,
            f"Request tensors would take {needed} bytes once decoded, over the local server's "
            f"limit of {limit} bytes (--max_request_bytes)",
        )


class Budget:
    """Bytes left for the decoded tensors of one request."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def spend(self, size: int) -> None:
        self.used += size
        if self.limit > 0 and self.used > self.limit:
            raise RequestTooLarge(self.used, self.limit)


# The largest product of an empty tensor's non-zero dimensions that numpy can shape at any
# item size (16 bytes: complex128).
_MAX_EMPTY_EXTENT = np.iinfo(np.intp).max // 16


def _parse_error(name: str) -> ServingError:
    return invalid_argument(f"tensor parsing error: {name}")


def _shape(name: str, proto) -> tuple[int, ...]:
    shape = proto.tensor_shape
    if shape.unknown_rank or len(shape.dim) > MAX_RANK:
        raise _parse_error(name)
    dims = tuple(dim.size for dim in shape.dim)
    if any(size < 0 for size in dims):
        raise _parse_error(name)
    # An empty tensor may have huge other dimensions ([0, 3e8, 7e9] is valid to TensorFlow);
    # numpy cannot shape one whose other dimensions overflow its byte count. Refused as a parse
    # error rather than let reshape() raise (that was an UNKNOWN answer, found by the fuzzer).
    if 0 in dims and math.prod(size for size in dims if size) > _MAX_EMPTY_EXTENT:
        raise _parse_error(name)
    return dims


def decode(name: str, proto, budget: Budget) -> np.ndarray:
    """The numpy array of a request TensorProto, or INVALID_ARGUMENT / RESOURCE_EXHAUSTED."""
    dtype_enum = proto.dtype
    shape = _shape(name, proto)
    count = math.prod(shape)
    if dtype_enum == DT_STRING:
        return _decode_strings(name, proto, shape, count, budget)
    if dtype_enum in _TYPED:
        numpy_type, field = _TYPED[dtype_enum]
        itemsize = np.dtype(numpy_type).itemsize
    elif dtype_enum in _VIA_TENSORFLOW:
        import tensorflow as tf

        numpy_type, field = tf.dtypes.as_dtype(dtype_enum).as_numpy_dtype, None
        itemsize = max(np.dtype(numpy_type).itemsize, 1)
    else:  # DT_INVALID, _REF (100+), DT_RESOURCE, DT_VARIANT, unknown numbers
        raise _parse_error(name)
    budget.spend(count * itemsize)
    if proto.tensor_content:
        if field is None and dtype_enum in (29, 30):  # 4-bit types pack two per byte
            return _via_tensorflow(name, proto)
        if len(proto.tensor_content) != count * itemsize:
            raise _parse_error(name)
        return np.frombuffer(proto.tensor_content, dtype=numpy_type).reshape(shape).copy()
    if field is None:
        return _via_tensorflow(name, proto)
    values = getattr(proto, field)
    return _fill(values, numpy_type, shape, count, half=dtype_enum == 19)


def _fill(values, numpy_type, shape: tuple[int, ...], count: int, half: bool) -> np.ndarray:
    """Tensor::FromProtoField: zeros for no values, the last value repeated for too few."""
    array = np.zeros(count, dtype=numpy_type)
    given = min(len(values), count)
    if given:
        if half:
            head = np.array(values[:given], dtype=np.int64).astype(np.uint16).view(np.float16)
        elif numpy_type in _WIDE:
            head = np.array(values[:given], dtype=np.int64).astype(numpy_type)  # wraps
        else:
            head = np.array(values[:given], dtype=numpy_type)
        array[:given] = head
        array[given:] = head[-1]
    return array.reshape(shape)


def _decode_strings(name: str, proto, shape, count: int, budget: Budget) -> np.ndarray:
    if proto.tensor_content:  # TF's own string encoding; no TF Serving client sends it
        raise _parse_error(name)
    values = proto.string_val
    given = min(len(values), count)
    budget.spend(count * STRING_OVERHEAD_BYTES + sum(len(v) for v in values[:given]))
    array = np.empty(count, dtype=object)
    if given:
        array[:given] = list(values[:given])
        array[given:] = values[given - 1]
    else:
        array[:] = b""
    return array.reshape(shape)


def _via_tensorflow(name: str, proto) -> np.ndarray:
    import tensorflow as tf

    try:
        return tf.make_ndarray(proto)
    except (TypeError, ValueError, OverflowError, tf.errors.OpError):
        # OverflowError: e.g. bfloat16 half_val -1, which numpy will not put in a uint16 (found
        # by the fuzzer; TensorFlow would keep the low 16 bits).
        raise _parse_error(name) from None


# numpy dtype -> the TensorProto field TensorFlow's Tensor::AsProtoField fills for it.
_TYPED_FIELD = {
    np.dtype(np.float32): "float_val",
    np.dtype(np.float64): "double_val",
    np.dtype(np.int8): "int_val",
    np.dtype(np.int16): "int_val",
    np.dtype(np.int32): "int_val",
    np.dtype(np.uint8): "int_val",
    np.dtype(np.uint16): "int_val",
    np.dtype(np.int64): "int64_val",
    np.dtype(np.uint32): "uint32_val",
    np.dtype(np.uint64): "uint64_val",
    np.dtype(np.bool_): "bool_val",
}


def encode(array: np.ndarray):
    """A TensorProto with the values in their typed field, as TF Serving answers."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    array = np.asarray(array)
    field = _TYPED_FIELD.get(array.dtype)
    if field is None and array.dtype.kind in "OSU":
        values = array.ravel().tolist()
        if all(isinstance(value, bytes) for value in values):  # what sessions return
            proto = _shaped(tensor_pb2.TensorProto(dtype=DT_STRING), array.shape)
            proto.string_val.extend(values)
            return proto
    if field is None:
        # Half floats go to half_val (as bit patterns), text to UTF-8: make_tensor_proto knows
        # how. It costs ~45 us a call, so the bytes that sessions return are filled above.
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=tf.dtypes.as_dtype(array.dtype).as_datatype_enum)
    _shaped(proto, array.shape)
    getattr(proto, field).extend(array.ravel().tolist())
    return proto


def _shaped(proto, shape: tuple[int, ...]):
    proto.tensor_shape.SetInParent()  # a scalar has a shape too: no dims
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    return proto
