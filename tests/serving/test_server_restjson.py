"""REST JSON <-> tensors, with TF Serving's json_tensor.cc rules and messages."""

from __future__ import annotations

import base64
import contextlib

import numpy as np
import orjson
import pytest

from serving import restjson
from serving.errors import ServingError
from serving.servable import TensorSpec

IMAGES = TensorSpec("images", np.dtype(np.uint8), 4, (None, 2, 2))
BYTES = TensorSpec("image_bytes", np.dtype(object), 7, (None,))
FLOATS = TensorSpec("x", np.dtype(np.float32), 1, (None,))
INT64 = TensorSpec("n", np.dtype(np.int64), 9, (None,))


def decode(body: dict, specs: dict) -> tuple[dict, str]:
    """As the server decodes: with the raw body, so numeric lists take the one-call path."""
    raw = orjson.dumps(body)
    return restjson.decode_predict(restjson.parse_body(raw), specs, body=raw)


def outcome(raw: bytes, specs: dict, with_body: bool):
    try:
        inputs, form = restjson.decode_predict(
            restjson.parse_body(raw), specs, body=raw if with_body else None
        )
    except ServingError as error:
        return "error", error.code, error.message
    return form, {name: (a.dtype, a.shape, a.tobytes()) for name, a in inputs.items()}


UINT8 = TensorSpec("p", np.dtype(np.uint8), 4, (None, 2))
FLOAT64 = TensorSpec("d", np.dtype(np.float64), 2, (None,))


@pytest.mark.parametrize(
    "raw, specs",
    [
        (b'{"inputs": [[0, 255], [7, 8]]}', {"p": UINT8}),
        (b'{"inputs": [[-1, 256], [7, 8]]}', {"p": UINT8}),  # wraps, as TF Serving does
        (b'{"inputs": [[2147483648, 1], [7, 8]]}', {"p": UINT8}),  # past int32: an error
        (b'{"inputs": [[1.5, 2], [7, 8]]}', {"p": UINT8}),
        (b'{"inputs": [[1.0, 2], [7, 8]]}', {"p": UINT8}),
        (b'{"inputs": [[1, 2], [7]]}', {"p": UINT8}),
        (b'{"inputs": [[1, "2"], [7, 8]]}', {"p": UINT8}),
        (b'{"inputs": [[1, {"b64": "AA=="}], [7, 8]]}', {"p": UINT8}),
        (b'{"inputs": [[1, null], [7, 8]]}', {"p": UINT8}),
        (b'{"inputs": [[1, true], [7, 8]]}', {"p": UINT8}),
        (b'{"inputs": [[], []]}', {"p": UINT8}),
        (b'{"instances": [[1, 2], [3, 4]]}', {"p": UINT8}),
        (b'{"instances": [[1, 2], [3]]}', {"p": UINT8}),
        (b'{"inputs": [16777215, 0.5, -3]}', {"x": FLOATS}),
        (b'{"inputs": [16777216, 1]}', {"x": FLOATS}),
        (b'{"inputs": [16777216, 0.5]}', {"x": FLOATS}),  # an integer beside floats
        (b'{"inputs": [-9223372036854775808, 1]}', {"x": FLOATS}),  # abs() wraps here
        (b'{"inputs": [16777216.0, 0.5]}', {"x": FLOATS}),
        (b'{"inputs": [3.5e38, 1.0]}', {"x": FLOATS}),
        (b'{"inputs": [NaN, Infinity, -Infinity, 1.0]}', {"x": FLOATS}),
        (b'{"inputs": [1e300, 2, 0.1]}', {"d": FLOAT64}),
        (b'{"inputs": [9223372036854775807, -9223372036854775808]}', {"n": INT64}),
        (b'{"inputs": [9223372036854775808]}', {"n": INT64}),
        (b'{"inputs": [1, 2.0]}', {"n": INT64}),
        (b'{"inputs": 7}', {"n": INT64}),
        (b'{"signature_name": "true", "inputs": [1, 2]}', {"n": INT64}),
    ],
)
def test_the_one_call_numeric_path_decides_as_the_per_value_path(raw, specs):
    assert outcome(raw, specs, with_body=True) == outcome(raw, specs, with_body=False)


def predict_outcome(raw: bytes, specs: dict, parse):
    """As the REST predict handler decodes `raw`, with the given parser."""
    try:
        document = parse(raw)
        name = restjson.signature_name(document)
        inputs, form = restjson.decode_predict(document, specs, body=raw)
    except ServingError as error:
        return "error", error.code, error.message
    return name, form, {key: (a.dtype, a.shape, a.tobytes()) for key, a in inputs.items()}


def integer_bodies() -> list[bytes]:
    """Integer nests, written as clients write them and with one character spoiled."""
    bodies = [
        b"[01, 2]", b"[1 2]", b"[1 2,]", b"[-, 2]", b"[1-2]", b"[--1]", b"[-0, 0]", b"[[1,2],[3]]",
        b"[[1,2],3]", b"[[]]", b"[]", b"[1234567890123456789]", b"[123456789012345678]",
        b"[2147483648]", b"[16777216]", b"[16777215, -3]", b"[[[1]],[[2],[3]]]",
        b"[[[1],[2]],[[3]]]",
        b"[\n1,\t2\r]", b"[1,]", b"[,1]", b"[[1],,[2]]", b"[1]]", b"[[1]", b"[1]\x0b", b"[1e5]",
        b"[9223372036854775807]", b"[-9223372036854775808]", b"[[-1, 256], [7, 8]]",
        b"[[5, -42, 123456789012345678], [0, -7, -99]]", b"[-123456789012345678, 1]",
    ]  # fmt: skip
    bodies = [
        b'{"' + key + b'": ' + text + b"}" for text in bodies for key in (b"instances", b"inputs")
    ]
    bodies += [
        b' {"signature_name": "x", "inputs": [1]} ', b'{"inputs": [1], "signature_name": "y"}',
        b'{"signature_name": "a", "inputs": [1], "signature_name": "b"}',
        b'{"instances": [1], "inputs": [2]}', b'{"instances": [[1, 2]], "extra": 1}',
    ]  # fmt: skip
    generator = np.random.default_rng(9)
    for _ in range(150):
        shape = generator.integers(1, 4, size=generator.integers(1, 5))
        values = generator.integers(-300, 300, size=shape).tolist()
        key = "instances" if generator.random() < 0.5 else "inputs"
        text = orjson.dumps({key: values}).decode()
        if generator.random() < 0.6:
            at = int(generator.integers(len(text)))
            text = (
                text[:at]
                + str(generator.choice(["", "[", "]", ",", "-", "0", " "]))
                + text[at + 1 :]
            )
        bodies.append(text.encode())
    # Numbers of every length side by side (the reader adds one decimal place at a time).
    for _ in range(60):
        shape = generator.integers(1, 5, size=generator.integers(1, 4))
        digits = generator.integers(0, 19, size=shape)
        signs = generator.choice([-1, 1], size=shape)
        values = (signs * generator.integers(0, 10 ** np.maximum(digits, 1))).tolist()
        bodies.append(orjson.dumps({"inputs": values}).replace(b",", b", ").replace(b"[", b"[ "))
    return bodies


@pytest.mark.parametrize(
    "spec", [UINT8, FLOATS, INT64, BYTES, TensorSpec("u", np.dtype(np.uint64), 23, (None,))]
)
def test_integer_bodies_read_from_the_bytes_decide_as_the_general_path(spec):
    read_from_bytes = 0
    for raw in integer_bodies():
        fast = predict_outcome(raw, {spec.key: spec}, restjson.parse_predict_body)
        assert fast == predict_outcome(raw, {spec.key: spec}, restjson.parse_body), raw
        with contextlib.suppress(ServingError):
            document = restjson.parse_predict_body(raw)
            read_from_bytes += any(isinstance(v, restjson.DenseIntegers) for v in document.values())
    assert read_from_bytes > 50  # the comparison covered the fast path, not only the fallback


@pytest.mark.parametrize(
    "spec", [UINT8, FLOATS, INT64, TensorSpec("u", np.dtype(np.uint64), 23, (None,))]
)
def test_integer_bodies_take_the_one_call_path_as_the_per_value_path(spec):
    # The same bodies, whole and spoiled, through orjson: numpy's one-call conversion must
    # answer (tensor or error) exactly what the per-value checks answer. This found int64's
    # minimum accepted for a float32 input (np.abs wraps it around to itself).
    decoded = 0
    for raw in integer_bodies():
        first = outcome(raw, {spec.key: spec}, with_body=True)
        assert first == outcome(raw, {spec.key: spec}, with_body=False), raw
        decoded += first[0] != "error"
    assert decoded > 30  # not only errors compared


def test_the_byte_reader_takes_one_list_per_pixel_and_orjson_takes_rows():
    # What `client score` sends ([N, 28, 28, 1]) is read from the bytes; rows of numbers
    # ([N, 28, 28], where orjson is faster) are parsed into lists. Both decode the same pixels.
    pixels = np.random.default_rng(3).integers(0, 256, size=(4, 28, 28, 1))
    for array, reader in ((pixels, restjson.DenseIntegers), (pixels[..., 0], list)):
        raw = orjson.dumps({"instances": array.tolist()})
        document = restjson.parse_predict_body(raw)
        assert isinstance(document["instances"], reader)
        spec = TensorSpec("p", np.dtype(np.uint8), 4, (None, *array.shape[1:]))
        inputs, _ = restjson.decode_predict(document, {"p": spec}, body=raw)
        np.testing.assert_array_equal(inputs["p"], array.astype(np.uint8))


def test_row_and_columnar_decode_the_same_tensor():
    images = [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
    row, row_format = decode({"instances": images}, {"images": IMAGES})
    columnar, columnar_format = decode({"inputs": images}, {"images": IMAGES})
    named, _ = decode({"instances": [{"images": i} for i in images]}, {"images": IMAGES})
    assert (row_format, columnar_format) == (restjson.ROW, restjson.COLUMNAR)
    for inputs in (row, columnar, named):
        assert inputs["images"].dtype == np.uint8
        np.testing.assert_array_equal(inputs["images"], np.array(images, dtype=np.uint8))


def test_multiple_named_inputs():
    specs = {"x": FLOATS, "n": INT64}
    rows, _ = decode({"instances": [{"x": 1.5, "n": 2}, {"x": 2, "n": 3}]}, specs)
    np.testing.assert_array_equal(rows["x"], np.array([1.5, 2], dtype=np.float32))
    np.testing.assert_array_equal(rows["n"], np.array([2, 3]))
    with pytest.raises(ServingError, match="instances is a plain list"):
        decode({"instances": [1, 2]}, specs)
    with pytest.raises(ServingError, match="must only have keys: n,x"):
        decode({"instances": [{"x": 1.5}]}, specs)
    with pytest.raises(ServingError, match="inputs is a plain value/list"):
        decode({"inputs": [1]}, specs)


def test_b64_strings():
    encoded = [{"b64": base64.b64encode(b"\x89PNG").decode()}, {"b64": "aGk="}]
    inputs, _ = decode({"instances": encoded}, {"image_bytes": BYTES})
    assert inputs["image_bytes"].tolist() == [b"\x89PNG", b"hi"]
    plain, _ = decode({"inputs": ["a", "b"]}, {"image_bytes": BYTES})
    assert plain["image_bytes"].tolist() == [b"a", b"b"]
    with pytest.raises(ServingError, match="Unable to base64 decode"):
        decode({"inputs": [{"b64": "%%%"}]}, {"image_bytes": BYTES})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": [[[1, 2], [3, "x"]]]}, 'JSON Value: "x" Type: String is not of expected type'),
        ({"inputs": [[[1, 2], [3, 4.5]]]}, "JSON Value: 4.5 Type: Number is not of expected"),
        ({"inputs": [[[1, 2], [3, True]]]}, "Type: True is not of expected type: uint8"),
        ({"inputs": [[[1, 2], [3]]]}, "Encountered list at unexpected size: 1 at level: 2"),
        ({"inputs": [[[1, 2], [3, [4]]]]}, "Encountered list at unexpected level: 3 expected < 3"),
        ({"inputs": [[[1, 2], [3, 4]], 5]}, "JSON Value: 5 found at incorrect level: 2 in the"),
        ({"inputs": [[[1, 2], [3, 2**40]]]}, "is not of expected type: uint8"),
        ({"instances": [[[1, 2]], [[1, 2], [3, 4]]]}, "Expecting tensor size: 2 but got: 4"),
        ({"instances": [[[1, 2], [3, 4]], [[1, 2, 3, 4]]]}, r"Expecting shape \[2,2\] but got"),
    ],
)
def test_decode_errors(body, message):
    with pytest.raises(ServingError, match=message) as caught:
        decode(body, {"images": IMAGES})
    assert caught.value.http_status == 400


def test_float_precision_rules():
    inputs, _ = decode({"inputs": [1, 2.5, 16777215]}, {"x": FLOATS})
    assert inputs["x"].dtype == np.float32
    with pytest.raises(ServingError, match="without loss of precision"):
        decode({"inputs": [16777217]}, {"x": FLOATS})
    with pytest.raises(ServingError, match="without loss of precision"):
        decode({"inputs": [1e300]}, {"x": FLOATS})


def test_parse_errors():
    with pytest.raises(ServingError, match=r"^JSON Parse error: The document is empty$"):
        restjson.parse_body(b"  ")
    with pytest.raises(ServingError, match="at offset: "):
        restjson.parse_body(b'{"instances": [1,')
    with pytest.raises(ServingError, match=r"Is not object$"):
        restjson.parse_body(b"[1]")
    # NaN and Infinity parse, as with TF Serving's rapidjson flags.
    assert restjson.parse_body(b'{"inputs": [NaN, Infinity]}')["inputs"][1] == float("inf")


def test_encode_row_and_columnar():
    outputs = {
        "probabilities": np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32),
        "class_ids": np.array([1, 0], dtype=np.int64),
        "classes": np.array([b"one", b"zero"], dtype=object),
    }
    rows = orjson.loads(restjson.encode_predict(outputs, restjson.ROW))
    assert rows == {
        "predictions": [
            {"class_ids": 1, "classes": "one", "probabilities": [0.25, 0.75]},
            {"class_ids": 0, "classes": "zero", "probabilities": [0.5, 0.5]},
        ]
    }
    columns = orjson.loads(restjson.encode_predict(outputs, restjson.COLUMNAR))
    assert columns["outputs"]["classes"] == ["one", "zero"]
    single = orjson.loads(restjson.encode_predict({"y": np.array([2.5, 3.0])}, restjson.ROW))
    assert single == {"predictions": [2.5, 3.0]}


def test_float32_is_written_with_round_trip_digits():
    value = np.array([0.1, 1 / 3], dtype=np.float32)
    text = restjson.encode_predict({"y": value}, restjson.COLUMNAR)
    assert text == b'{"outputs":[0.1,0.33333334]}'
    np.testing.assert_array_equal(np.array(orjson.loads(text)["outputs"], np.float32), value)


def test_bytes_outputs_are_b64():
    text = restjson.encode_predict({"png_bytes": np.array([b"\x00\xff"], dtype=object)}, "row")
    assert orjson.loads(text) == {"predictions": [{"b64": "AP8="}]}


def test_examples_for_classify_and_regress():
    from tensorflow.core.example import example_pb2

    body = {"context": {"c": "shared"}, "examples": [{"x": 1.5, "n": [1, 2], "s": {"b64": "aGk="}}]}
    (serialized,) = restjson.decode_examples(body)
    example = example_pb2.Example.FromString(serialized)
    features = example.features.feature
    assert list(features["x"].float_list.value) == [1.5]
    assert list(features["n"].int64_list.value) == [1, 2]
    assert list(features["s"].bytes_list.value) == [b"hi"]
    assert list(features["c"].bytes_list.value) == [b"shared"]
    with pytest.raises(ServingError, match="key 'examples' is expected"):
        restjson.decode_examples({"instances": []})
    with pytest.raises(ServingError, match="'examples' value is an empty array"):
        restjson.decode_examples({"examples": []})
    with pytest.raises(ServingError, match="Unexpected element type in feature: x"):
        restjson.decode_examples({"examples": [{"x": [1.5, "a"]}]})


def test_narrow_integers_wrap_like_tf_serving_instead_of_crashing():
    # uint8 is read as a JSON int32 and stored through int_val: -1 becomes 255, 300 becomes 44.
    inputs, _ = decode({"inputs": [[[-1, 300], [0, 255]]]}, {"images": IMAGES})
    assert inputs["images"].dtype == np.uint8
    assert inputs["images"].tolist() == [[[255, 44], [0, 255]]]
    named, _ = decode({"instances": [{"images": [[-1, 0], [0, 0]]}]}, {"images": IMAGES})
    assert named["images"][0, 0, 0] == 255
    spec = TensorSpec("x", np.dtype(np.uint8), 4, None)
    with pytest.raises(ServingError, match="is not of expected type: uint8"):
        restjson.decode_tensor([-1, 1.5], spec)


def test_deeply_nested_json_is_a_parse_error():
    with pytest.raises(ServingError, match="JSON Parse error") as caught:
        restjson.parse_body(b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert caught.value.http_status == 400
