"""Hostile REST requests (issue 12): every answer is JSON, never a 5xx, and the server lives on.

A real `python -m serving` on a free port serves a tiny SavedModel with one signature per dtype
(each echoes its input), so that well-formed requests succeed and malformed ones reach every
decoder. The fuzz test is derandomized and bounded; the explicit tests each pin one bug of
issue 12. uvicorn's own 400s are tested in-process (each malformed request) and through
`python -m serving` (that server.py wires the JSON protocol class in).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import string
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from harness import free_port, local_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving import restjson
from serving.errors import ServingError
from serving.servable import TensorSpec

MODEL = "hostile"
# signature -> {input: (tf dtype name, shape)}; every signature returns its inputs as outputs.
SIGNATURES = {
    "serving_default": {"x": ("float32", [None])},
    "f64": {"x": ("float64", [None, 2])},
    "i64": {"n": ("int64", [None])},
    "u8": {"p": ("uint8", [None, 2, 2])},
    "strings": {"s": ("string", [None])},
    "flags": {"b": ("bool", [None])},
    "pair": {"a": ("float32", [None]), "k": ("int64", [None])},
}
SUCCESS_KEYS = {"predictions", "outputs", "results", "model_version_status", "model_spec"}

# A TensorFlow export, a server start and a few hundred requests: about a minute.
pytestmark = pytest.mark.slow


def export_echo_model(directory: Path) -> None:
    import tensorflow as tf

    def echo_function(inputs: dict):
        names = list(inputs)
        specs = [
            tf.TensorSpec(shape, getattr(tf, dtype), name=n) for n, (dtype, shape) in inputs.items()
        ]

        def outputs(tensors):
            result = {f"{name}_out": tf.identity(t) for name, t in zip(names, tensors, strict=True)}
            if tensors[0].dtype == tf.string:
                result["s_bytes"] = tf.identity(tensors[0])
            return result

        if len(specs) == 1:
            return tf.function(lambda t0: outputs([t0]), input_signature=specs)
        return tf.function(lambda t0, t1: outputs([t0, t1]), input_signature=specs)

    module = tf.Module()
    signatures = {}
    for signature, inputs in SIGNATURES.items():
        function = echo_function(inputs)
        setattr(module, f"fn_{signature}", function)
        signatures[signature] = function.get_concrete_function()
    tf.saved_model.save(module, str(directory), signatures=signatures)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    export_echo_model(root / MODEL / "1")
    with local_server(
        f"--model_name={MODEL}",
        f"--model_base_path={root / MODEL}",
        log_dir=root,
        model_name=MODEL,
    ) as served:
        yield served
        assert served.process.poll() is None, f"server died:\n{served.log()[-3000:]}"


def send(server, method: str, path: str, body: bytes = b"", timeout: float = 60):
    """One request on a fresh connection: (status, content type, body bytes)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        reply = connection.getresponse()
        return reply.status, reply.getheader("content-type", ""), reply.read()
    finally:
        connection.close()


def check_answer(status: int, content_type: str, body: bytes) -> dict:
    """The invariants of every answer; returns the parsed body."""
    assert status < 500, f"{status}: {body[:500]!r}"
    assert content_type.startswith("application/json"), (status, content_type, body[:200])
    document = json.loads(body)
    assert isinstance(document, dict), body[:200]
    if status == 200:
        assert SUCCESS_KEYS & set(document), body[:200]
    else:
        assert isinstance(document.get("error"), str), body[:200]
    return document


def predict(server, body: bytes, route: str = "") -> tuple[int, dict]:
    status, content_type, data = send(server, "POST", f"/v1/models/{MODEL}{route}:predict", body)
    return status, check_answer(status, content_type, data)


def nested(depth: int, leaf: str = "0") -> str:
    return "[" * depth + leaf + "]" * depth


def assert_still_serving(server) -> None:
    status, document = predict(server, b'{"instances": [1.5, 2]}')
    assert (status, document) == (200, {"predictions": [1.5, 2.0]})


# ---- explicit regressions, one per bug of issue 12 --------------------------------------------


@pytest.mark.parametrize("key", ["instances", "inputs"])
@pytest.mark.parametrize("depth", [65, 100, 1000])
def test_nesting_past_numpy_rank_is_invalid_argument(server, key, depth):
    status, document = predict(server, f'{{"{key}": {nested(depth)}}}'.encode())
    assert status == 400, document
    assert "64" in document["error"], document
    assert_still_serving(server)


def test_nesting_past_the_parser_limit_names_it(server):
    status, document = predict(server, f'{{"inputs": {nested(5000)}}}'.encode())
    assert status == 400
    assert "1024" in document["error"], document


@pytest.mark.parametrize(
    "body",
    [
        rb'{"signature_name": "\ud800", "instances": [1]}',
        rb'{"signature_name": "strings", "instances": ["\udc00"]}',
        rb'{"instances": [{"\ud800": 1}]}',
        rb'{"inputs": [NaN], "signature_name": "\ud800"}',  # NaN: the json-module path
    ],
)
def test_lone_surrogate_is_a_json_parse_error(server, body):
    status, document = predict(server, body)
    assert status == 400
    assert document["error"].startswith("JSON Parse error: The surrogate pair in string is")


@pytest.mark.parametrize(("method", "path"), [("GET", "/x"), ("POST", "/v2/models/m:predict")])
def test_paths_outside_v1_answer_json_404(server, method, path):
    status, content_type, body = send(server, method, path)
    assert status == 404
    assert check_answer(status, content_type, body) == {
        "error": f"Malformed request: {method} {path}"
    }


def test_error_bodies_quote_only_an_excerpt_of_the_request(server):
    body = f'{{"instances": 5, "padding": {nested(900, "")}}}'.encode()
    assert len(body) < 2000
    status, document = predict(server, body)
    assert status == 400
    assert len(document["error"]) < 1000, len(document["error"])
    assert "(cut at 400 characters)" in document["error"]
    assert document["error"].endswith("Excepting 'instances' to be an list/array")


def test_small_inputs_keep_tf_servings_wording(server):
    status, document = predict(server, b'{"instances": [1], "signature_name": 7}')
    assert status == 400
    assert document["error"] == (
        'JSON Value: {\n    "instances": [\n        1\n    ],\n    "signature_name": 7\n} not '
        "formatted correctly. 'signature_name' key must be a string value."
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": [' + b"9" * 5000 + b"]}", "Number too big to be stored in double"),
        (b'{"inputs": [1e400]}', "Number too big to be stored in double"),
        (b'{"inputs": [' + b"7" * 30 + b"]}", None),  # past 64 bits: a double, as in rapidjson
    ],
)
def test_numbers_past_the_limits(server, body, message):
    status, document = predict(server, body)
    if message is None:
        assert status == 200, document
    else:
        assert (status, document) == (400, {"error": f"JSON Parse error: {message}"})


def test_version_with_thousands_of_digits(server):
    status, content_type, body = send(server, "GET", f"/v1/models/{MODEL}/versions/{'9' * 5000}")
    document = check_answer(status, content_type, body)
    assert status == 400
    assert document["error"].startswith("Failed to convert version: 999")
    assert len(document["error"]) < 4200  # cut, not 5,000 digits


# ---- in-process: the element cap and uvicorn's own 400 ---------------------------------------

FLOATS = TensorSpec("x", np.dtype(np.float32), 1, (None,))


@pytest.mark.parametrize(
    "document",
    [
        {"inputs": [0.5] * 11},
        {"instances": [[0.5] * 4] * 3},
        {"instances": [[0.5] * 4, [0.5] * 4, [0.5] * 3]},  # irregular: counted element by element
        {"instances": [{"x": [0.5] * 6}, {"x": [0.5] * 6}]},
    ],
)
def test_element_cap_is_checked_before_decoding(document):
    with pytest.raises(ServingError, match=r"limit of 10 \(--max_request_elements\)") as caught:
        restjson.decode_predict(document, {"x": FLOATS}, max_elements=10)
    assert caught.value.http_status == 400
    inputs, _ = restjson.decode_predict({"inputs": [0.5] * 10}, {"x": FLOATS}, max_elements=10)
    assert inputs["x"].shape == (10,)


class _OneInputDataPlane:
    """Just enough of DataPlane for RestApi: one float32 input, predict echoes it."""

    def resolve_for_rest(self, spec):
        signature = type("Signature", (), {"inputs": {"x": FLOATS}})()
        return None, signature

    def predict(self, spec, inputs, resolved=None):
        from serving.dataplane import PredictResult

        return PredictResult(outputs={"y": inputs["x"]}, version=1)


@contextlib.contextmanager
def in_process_server(**options):
    import uvicorn

    from serving.metrics import Metrics
    from serving.rest import JsonErrorHttpToolsProtocol, RestApi

    app = RestApi(
        _OneInputDataPlane(), Metrics(), num_threads=2, timeout_ms=10000,
        prometheus_path=None, **options,
    )  # fmt: skip
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=JsonErrorHttpToolsProtocol, lifespan="off",
        log_level="critical",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_element_cap_over_http():
    with in_process_server(max_request_elements=10) as port:
        body = json.dumps({"inputs": [0.5] * 11}).encode()
        request = (
            b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        head, _, answer = raw_exchange(port, request).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert "more than the local server's limit of 10" in json.loads(answer)["error"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /v1/models/m\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
)
def test_uvicorns_own_400_is_json(request_bytes):
    with in_process_server() as port:
        head, _, body = raw_exchange(port, request_bytes).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert b"content-type: application/json" in head.lower(), head
    assert json.loads(body) == {"error": "Invalid HTTP request received."}


def test_python_m_serving_answers_its_own_400_as_json(server):
    # The same protocol class, as `python -m serving` wires it into uvicorn.
    reply = raw_exchange(server.rest_port, b"GET /v1/\x01 HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert b"content-type: application/json" in head.lower(), head
    assert "error" in json.loads(body)


# ---- the fuzz test ---------------------------------------------------------------------------

# Text with everything JSON can escape, lone surrogates included (json.dumps writes \ud800).
TEXT = st.text(st.characters(exclude_categories=()), max_size=12)
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(0, 255),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([2**24 + 1, 2**63, 2**64, -(2**63) - 1, 3.4e38, 3.5e38, 1e-45]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, st.builds(lambda t: {"b64": t}, TEXT))
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=3)
    ),
    max_leaves=20,
)
# Regular tensors of each signature's rank and dtype, so that many requests get decoded fully.
TENSORS = st.one_of(
    st.lists(NUMBERS, min_size=1, max_size=6),
    st.lists(st.lists(NUMBERS, min_size=2, max_size=2), min_size=1, max_size=3),
    st.lists(
        st.lists(st.lists(st.integers(-2, 260), min_size=2, max_size=2), min_size=2, max_size=2),
        min_size=1,
        max_size=3,
    ),
    st.lists(
        st.one_of(TEXT, st.builds(lambda t: {"b64": t}, st.sampled_from(["aGk=", "aGk", "%"]))),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.booleans(), min_size=1, max_size=4),
)
SIGNATURE_NAMES = st.one_of(st.sampled_from(sorted(SIGNATURES)), TEXT, VALUES)


@st.composite
def documents(draw) -> dict:
    document = {}
    if draw(st.booleans()):
        document["signature_name"] = draw(SIGNATURE_NAMES)
    key = draw(st.sampled_from(["instances", "inputs", "examples", "context", "other"]))
    value = draw(st.one_of(TENSORS, VALUES))
    if key == "instances" and draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(["x", "a", "k", "p", "s"]), min_size=1, max_size=2))
        value = [{n: draw(st.one_of(NUMBERS, TENSORS)) for n in names} for _ in range(2)]
    document[key] = value
    return document


def deep_body(depth: int, key: str) -> bytes:
    return f'{{"{key}": {nested(depth)}}}'.encode()


PATH_TEXT = st.text(string.ascii_letters + string.digits + "-_.:/%~", max_size=30)
PREDICT_PATHS = st.sampled_from(
    [
        f"/v1/models/{MODEL}:predict",
        f"/v1/models/{MODEL}/versions/1:predict",
        f"/v1/models/{MODEL}/labels/stable:predict",
        f"/v1/models/{MODEL}:classify",
        f"/v1/models/{MODEL}:regress",
    ]
)
PATHS = st.one_of(
    PREDICT_PATHS,
    PREDICT_PATHS,
    PREDICT_PATHS,
    st.builds(lambda p: f"/v1/models/{MODEL}/versions/{p}", st.text(string.digits, max_size=40)),
    st.builds(lambda p: "/v1/" + p, PATH_TEXT),
    st.builds(lambda p: "/" + p, PATH_TEXT),
)
DTYPE_VALUES = {
    "float32": st.floats(-1e6, 1e6, width=32),
    "float64": st.floats(allow_nan=False, allow_infinity=False),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "uint8": st.integers(0, 255),
    "string": st.text(max_size=8),
    "bool": st.booleans(),
}


@st.composite
def well_formed(draw) -> dict:
    """A predict body that one of the signatures must answer 200, row or columnar."""
    signature = draw(st.sampled_from(sorted(SIGNATURES)))
    batch = draw(st.integers(1, 3))

    def tensor(dtype: str, dims: list) -> list:
        if not dims:
            return draw(DTYPE_VALUES[dtype])
        return [tensor(dtype, dims[1:]) for _ in range(dims[0])]

    tensors = {n: tensor(d, [batch, *shape[1:]]) for n, (d, shape) in SIGNATURES[signature].items()}
    single = next(iter(tensors.values())) if len(tensors) == 1 else None
    if draw(st.booleans()):
        if single is not None and draw(st.booleans()):
            document = {"instances": single}
        else:
            document = {"instances": [{n: t[i] for n, t in tensors.items()} for i in range(batch)]}
    else:
        document = {"inputs": single if single is not None and draw(st.booleans()) else tensors}
    if signature != "serving_default" or draw(st.booleans()):
        document["signature_name"] = signature
    return document


def replace_somewhere(document, replacement, choice: int):
    """`document` with one of its values (picked by `choice`) swapped for `replacement`."""
    spots = []

    def walk(value):
        if isinstance(value, list | dict):
            for key in range(len(value)) if isinstance(value, list) else list(value):
                spots.append((value, key))
                walk(value[key])

    walk(document)
    if spots:
        container, key = spots[choice % len(spots)]
        container[key] = replacement
    return document


BODIES = st.one_of(
    st.builds(lambda d: json.dumps(d, allow_nan=True).encode(), well_formed()),
    # A well-formed body with one value replaced by anything at all.
    st.builds(
        lambda d, v, i: json.dumps(replace_somewhere(d, v, i), allow_nan=True).encode(),
        well_formed(),
        VALUES,
        st.integers(0, 1000),
    ),
    st.builds(lambda d: json.dumps(d, allow_nan=True).encode(), documents()),
    st.builds(deep_body, st.integers(1, 1500), st.sampled_from(["instances", "inputs"])),
    st.binary(max_size=64),
    # A valid body cut short or with bytes flipped.
    st.builds(
        lambda d, cut: json.dumps(d, allow_nan=True).encode()[:cut],
        documents(),
        st.integers(0, 40),
    ),
)


@settings(
    max_examples=100,
    deadline=timedelta(seconds=30),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(document=well_formed())
def test_fuzz_well_formed_requests_succeed(server, document):
    status, answer = predict(server, json.dumps(document).encode())
    assert status == 200, (document, answer)
    assert {"predictions", "outputs"} & set(answer)


@settings(
    max_examples=400,
    deadline=timedelta(seconds=30),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"]),
    path=PATHS,
    body=BODIES,
)
def test_fuzz_every_answer_is_json_and_never_5xx(server, method, path, body):
    status, content_type, data = send(server, method, path, body)
    check_answer(status, content_type, data)


def test_fuzz_left_the_server_serving(server):
    # Runs after the fuzz test (file order): the same process still answers correctly.
    assert server.process.poll() is None
    assert_still_serving(server)
