"""Hostile gRPC tensors: TensorFlow's parsing rules, no UNKNOWN, memory bounded before allocation.

Issue 12 measured 58 bad answers in 692 hostile TensorProtos: resource/variant/_REF dtypes and
uint8 values past 255 answered UNKNOWN (KeyError, OverflowError), shape [2**31, 2**31] a
MemoryError, [-1, 28, 28, 1] with 784 bytes was accepted, and a 46-byte request filled a 206 MB
tensor. The rules here are TensorFlow's Tensor::FromProto (tensorflow/core/framework/tensor.cc),
which TF Serving applies to every request tensor, plus the local --max_request_bytes cap.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.errors import Code, ServingError
from serving.tensorproto import Budget, decode, encode

MB = 1024 * 1024


def proto(dtype: int, dims, **fields) -> tensor_pb2.TensorProto:
    tensor = tensor_pb2.TensorProto(dtype=dtype)
    tensor.tensor_shape.SetInParent()
    for size in dims:
        tensor.tensor_shape.dim.add().size = size
    for name, value in fields.items():
        if name == "tensor_content":
            tensor.tensor_content = value
        else:
            getattr(tensor, name).extend(value)
    return tensor


def refused(tensor, limit: int = 256 * MB) -> Code:
    with pytest.raises(ServingError) as caught:
        decode("x", tensor, Budget(limit))
    return caught.value.code


@pytest.mark.parametrize(
    "dtype",
    [types_pb2.DT_INVALID, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT, types_pb2.DT_UINT8_REF,
     types_pb2.DT_FLOAT_REF, 99, 12345],
)  # fmt: skip
def test_dtypes_that_cannot_be_request_tensors_are_invalid_argument(dtype):
    assert refused(proto(dtype, [1], int_val=[1])) == Code.INVALID_ARGUMENT


def test_unknown_or_negative_dimensions_are_refused():
    # A request tensor's shape is fully defined; -1 only means "unknown" in a signature.
    assert refused(proto(4, [-1, 28, 28, 1], tensor_content=bytes(784))) == Code.INVALID_ARGUMENT
    unknown = proto(1, [], float_val=[1.0])
    unknown.tensor_shape.unknown_rank = True
    assert refused(unknown) == Code.INVALID_ARGUMENT


def test_empty_tensors_with_huge_other_dimensions_are_a_parse_error():
    """Found by test_fuzz_decode_answers_an_array_or_a_clean_refusal: [0, 335407109, 6874758905]
    float made numpy's reshape raise ValueError (an UNKNOWN answer); small ones still decode."""
    for dtype in (1, 7, 18):  # float, string, complex128
        assert refused(proto(dtype, [0, 335407109, 6874758905])) == Code.INVALID_ARGUMENT
    assert decode("x", proto(1, [0, 5, 2**20]), Budget(MB)).shape == (0, 5, 2**20)


def test_bfloat16_bit_patterns_numpy_cannot_hold_are_a_parse_error():
    """Found by the same fuzzer: DT_BFLOAT16 with half_val -1 was an OverflowError (UNKNOWN)."""
    assert refused(proto(types_pb2.DT_BFLOAT16, [], half_val=[-1])) == Code.INVALID_ARGUMENT


def test_tensor_content_must_hold_exactly_the_shapes_bytes():
    assert refused(proto(4, [1, 28, 28, 1], tensor_content=bytes(783))) == Code.INVALID_ARGUMENT
    assert refused(proto(1, [2], tensor_content=bytes(9))) == Code.INVALID_ARGUMENT
    exact = decode("x", proto(1, [2], tensor_content=np.float32([1, 2]).tobytes()), Budget(0))
    assert exact.tolist() == [1.0, 2.0]


def test_typed_values_fill_as_tensorflow_does():
    # None: zeros; fewer than the shape: the last value repeats; more: the first ones count.
    assert decode("x", proto(1, [3]), Budget(0)).tolist() == [0.0, 0.0, 0.0]
    assert decode("x", proto(3, [4], int_val=[7, 8]), Budget(0)).tolist() == [7, 8, 8, 8]
    assert decode("x", proto(1, [2], float_val=[1, 2, 3]), Budget(0)).tolist() == [1.0, 2.0]
    strings = decode("x", proto(7, [3], string_val=[b"a", b"b"]), Budget(0))
    assert strings.tolist() == [b"a", b"b", b"b"]


def test_small_integers_wrap_like_the_cast_in_tensorflow():
    # uint8 travels in int_val (int32); 300 becomes 44, -1 becomes 255 (C++ narrowing cast).
    values = decode("x", proto(4, [3], int_val=[300, -1, 7]), Budget(0))
    assert values.dtype == np.uint8 and values.tolist() == [44, 255, 7]
    assert decode("x", proto(6, [1], int_val=[200]), Budget(0)).tolist() == [-56]


def test_half_floats_are_bit_patterns():
    halves = decode("x", proto(19, [2], half_val=[15360, 16384]), Budget(0))
    assert halves.dtype == np.float16 and halves.tolist() == [1.0, 2.0]


def test_memory_is_bounded_before_allocation():
    # The 46-byte request of issue 12: 262144 MNIST images from one int_val (205 MB).
    bomb = proto(4, [262144, 28, 28, 1], int_val=[0])
    assert len(bomb.SerializeToString()) < 64
    assert refused(bomb, limit=128 * MB) == Code.RESOURCE_EXHAUSTED
    assert refused(proto(1, [2**31, 2**31], float_val=[1])) == Code.RESOURCE_EXHAUSTED
    # 2**26 empty strings cost ~2 GB of Python objects: refused by their count.
    assert refused(proto(7, [2**26])) == Code.RESOURCE_EXHAUSTED
    with pytest.raises(ServingError, match=r"--max_request_bytes"):
        decode("x", bomb, Budget(128 * MB))


def test_the_budget_is_shared_by_a_requests_tensors():
    budget = Budget(1000)
    decode("a", proto(4, [600]), budget)
    with pytest.raises(ServingError) as caught:
        decode("b", proto(4, [600]), budget)
    assert caught.value.code == Code.RESOURCE_EXHAUSTED


ALL_DTYPES = sorted(types_pb2.DataType.values())


def test_string_outputs_encode_as_tensorflow_does() -> None:
    """The bytes fast path in encode() (make_tensor_proto costs ~45 us a reply) gives
    TensorFlow's own proto, and text, mixed or empty arrays still go through TensorFlow."""
    import tensorflow as tf

    cases = [
        np.array(b"7", dtype=object), np.array([], dtype=object),
        np.array([b"3", b"", b"\xff\x00"], dtype=object),
        np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object),
        np.array(["sept", "\u00e9t\u00e9"]), np.array([b"x", "y"], dtype=object),
    ]  # fmt: skip
    for array in cases:
        assert encode(array) == tf.make_tensor_proto(array), array


@st.composite
def tensor_protos(draw) -> tensor_pb2.TensorProto:
    dtype = draw(st.one_of(st.sampled_from(ALL_DTYPES), st.integers(-5, 300)))
    dims = draw(
        st.lists(
            st.one_of(st.integers(0, 6), st.integers(-3, -1), st.integers(2**20, 2**40)),
            max_size=5,
        )
    )
    tensor = tensor_pb2.TensorProto(dtype=dtype)
    tensor.tensor_shape.SetInParent()
    for size in dims:
        tensor.tensor_shape.dim.add().size = size
    if draw(st.booleans()):
        tensor.tensor_shape.unknown_rank = True
    kind = draw(st.sampled_from(["content", "int", "float", "string", "int64", "half", "none"]))
    if kind == "content":
        tensor.tensor_content = draw(st.binary(max_size=64))
    elif kind == "int":
        tensor.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8)))
    elif kind == "float":
        tensor.float_val.extend(draw(st.lists(st.floats(width=32), max_size=8)))
    elif kind == "string":
        tensor.string_val.extend(draw(st.lists(st.binary(max_size=8), max_size=8)))
    elif kind == "int64":
        tensor.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8)))
    elif kind == "half":
        tensor.half_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8)))
    return tensor


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensor=tensor_protos())
def test_fuzz_decode_answers_an_array_or_a_clean_refusal(tensor):
    try:
        array = decode("x", tensor, Budget(16 * MB))
    except ServingError as error:
        assert error.code in (Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED), error
        return
    shape = tuple(dim.size for dim in tensor.tensor_shape.dim)
    assert array.shape == shape
    assert array.nbytes <= 16 * MB


# ---- over the wire: a real server ------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def grpc_server(tmp_path_factory, contract_versions):
    import shutil

    from harness import local_server

    root = tmp_path_factory.mktemp("grpc-hostile")
    shutil.copytree(contract_versions[1][0], root / "mnist" / "1")
    with local_server(
        "--model_name=mnist",
        f"--model_base_path={root / 'mnist'}",
        f"--max_request_bytes={64 * MB}",
        log_dir=root,
        model_name="mnist",
    ) as served:
        yield served
        assert served.process.poll() is None, f"server died:\n{served.log()[-3000:]}"


def call_predict(server, inputs: dict, signature: str = ""):
    from harness import grpc_predict

    return grpc_predict(server.grpc_target, "mnist", inputs, signature)


ALLOWED = {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION"}


@pytest.mark.e2e
@pytest.mark.slow
def test_memory_bombs_are_refused_before_the_server_allocates(grpc_server):
    before = rss_bytes(grpc_server.process.pid)
    bombs = [
        {"images": proto(4, [262144, 28, 28, 1], int_val=[0])},  # 205 MB from 46 bytes
        {"images": proto(4, [2**31, 2**31], int_val=[1])},
        {"image_bytes": proto(7, [2**26])},  # 2**26 strings
    ]
    for inputs in bombs * 3:
        signature = "serving_bytes" if "image_bytes" in inputs else ""
        code, details = call_predict(grpc_server, inputs, signature)
        assert code == "RESOURCE_EXHAUSTED", (code, details)
        assert "--max_request_bytes" in details
    grown = rss_bytes(grpc_server.process.pid) - before
    assert grown < 48 * MB, f"server grew {grown / MB:.0f} MB on refused requests"
    code, _ = call_predict(grpc_server, {"images": proto(4, [1, 28, 28, 1], int_val=[0])})
    assert code == "OK"


@st.composite
def hostile_inputs(draw) -> dict:
    names = draw(st.lists(st.sampled_from(["images", "image_bytes", "x", ""]), max_size=2))
    return {name: draw(tensor_protos()) for name in names} or {"images": draw(tensor_protos())}


@pytest.mark.e2e
@pytest.mark.slow
@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(inputs=hostile_inputs(), signature=st.sampled_from(["", "serving_bytes", "nope"]))
def test_fuzz_every_grpc_answer_is_a_clean_status(grpc_server, inputs, signature):
    code, details = call_predict(grpc_server, inputs, signature)
    assert code in ALLOWED, (code, details)
