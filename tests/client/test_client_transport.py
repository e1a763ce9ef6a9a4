"""Transports: address parsing, tensor encoding, error codes and retries, both over the wire."""

from __future__ import annotations

import numpy as np
import pytest
from client_fixtures import FakeServer, fake, fake_server_instance, free_port, transport_kind

from client.errors import ClientError
from client.transport import RetryPolicy, connect, parse_server
from client.transport.grpc_transport import to_numpy, to_tensor_proto
from client.transport.rest_transport import status_code_name
from client.types import ModelSpec

__all__ = ["fake", "fake_server_instance", "transport_kind"]  # fixtures used by name


@pytest.mark.parametrize(
    ("text", "scheme", "host", "port", "path"),
    [
        ("grpc://localhost:8500", "grpc", "localhost", 8500, ""),
        ("grpc://serving", "grpc", "serving", 8500, ""),
        ("http://10.0.0.7", "http", "10.0.0.7", 8501, ""),
        ("HTTPS://models.example.com/tfs/", "https", "models.example.com", 8501, "/tfs"),
        ("grpcs://[::1]:9000", "grpcs", "::1", 9000, ""),
    ],
)
def test_parse_server_accepts_each_scheme(text, scheme, host, port, path):
    address = parse_server(text)
    assert (address.scheme, address.host, address.port, address.path) == (scheme, host, port, path)


def test_parse_server_formats_ipv6_targets_for_grpc():
    assert parse_server("grpc://[::1]:9000").target == "[::1]:9000"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("localhost:8500", "has no scheme: write grpc://localhost:8500 or http://localhost:8500"),
        ("tcp://localhost:8500", "unknown scheme 'tcp://'"),
        ("grpc://:8500", "has no host"),
        ("http://host:99999", "invalid port"),
        ("grpc://host:8500/v1", "cannot have a path"),
        ("http://host:8501/?x=1", "may only have"),
    ],
)
def test_parse_server_rejects_bad_addresses_saying_why(text, message):
    with pytest.raises(ValueError, match=r"scheme|host|port|path|only") as caught:
        parse_server(text)
    assert message in str(caught.value)


def test_bare_host_port_error_lists_the_schemes():
    with pytest.raises(ValueError) as caught:
        connect("localhost:8500")
    for scheme in ("grpc://", "grpcs://", "http://", "https://"):
        assert scheme in str(caught.value)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
        np.array([1, -(2**40)], dtype=np.int64),
        np.array([True, False]),
        np.array([0.5, -2.0], dtype=np.float16),
        np.array([b"a", b"\x00\xff", b""], dtype=object),
        np.zeros((0, 28, 28, 1), dtype=np.uint8),
    ],
)
def test_tensor_proto_round_trip(array):
    proto = to_tensor_proto(array)
    if array.dtype != object:
        assert proto.tensor_content == array.tobytes()  # packed, never repeated fields
    decoded = to_numpy(proto)
    assert decoded.shape == array.shape
    assert decoded.dtype == array.dtype
    assert decoded.tolist() == array.tolist()


@pytest.mark.parametrize(
    ("array", "field"),
    [
        (np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32), "float_val"),
        (np.array([1.5, -2.25], dtype=np.float64), "double_val"),
        (np.array([7, 0, 255], dtype=np.uint8), "int_val"),
        (np.array([-3, 2**31 - 1], dtype=np.int32), "int_val"),
        (np.array([[3], [-(2**40)]], dtype=np.int64), "int64_val"),
        (np.array([2**32 - 1], dtype=np.uint32), "uint32_val"),
        (np.array([2**64 - 1], dtype=np.uint64), "uint64_val"),
        (np.array([True, False, True]), "bool_val"),
        (np.array([b"seven", b"\xff"], dtype=object), "string_val"),
    ],
)
def test_tensor_decoding_reads_the_typed_fields_tf_serving_answers_with(array, field):
    # Stock TF Serving (and the local server) reply with the typed *_val fields, not
    # tensor_content.
    proto = to_tensor_proto(array)
    proto.ClearField("tensor_content")
    proto.ClearField("string_val")
    getattr(proto, field).extend(array.reshape(-1).tolist())
    decoded = to_numpy(proto)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    assert decoded.tolist() == array.tolist()


def test_tensor_decoding_of_half_floats_from_their_bit_patterns():
    array = np.array([0.5, -2.0, 65504.0], dtype=np.float16)
    proto = to_tensor_proto(array)
    proto.ClearField("tensor_content")
    proto.half_val.extend(array.view(np.uint16).tolist())
    assert to_numpy(proto).tolist() == array.tolist()


def test_tensor_decoding_repeats_the_last_value_like_tensorflow():
    proto = to_tensor_proto(np.zeros(5, dtype=np.int64))
    proto.ClearField("tensor_content")
    proto.int64_val.extend([4, 9])
    assert to_numpy(proto).tolist() == [4, 9, 9, 9, 9]
    proto.int64_val.extend([1, 2, 3, 4])
    with pytest.raises(ClientError, match="6 values"):
        to_numpy(proto)


def test_tensor_decoding_reads_repeated_fields_and_broadcasts_a_single_value():
    proto = to_tensor_proto(np.zeros((2, 2), dtype=np.float32))
    proto.ClearField("tensor_content")
    proto.float_val.append(1.5)  # TensorFlow's make_tensor_proto writes constants this way
    assert to_numpy(proto).tolist() == [[1.5, 1.5], [1.5, 1.5]]
    strings = to_tensor_proto(np.array(["x", "y"], dtype=object))
    assert to_numpy(strings).tolist() == [b"x", b"y"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "INVALID_ARGUMENT"),
        (404, "NOT_FOUND"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
        (418, "UNKNOWN"),
        (507, "INTERNAL"),
    ],
)
def test_http_status_maps_to_grpc_code(status, code):
    assert status_code_name(status) == code


def test_retry_policy_backs_off_exponentially_with_jitter_and_only_on_unavailable():
    policy = RetryPolicy(retries=4, initial_backoff=0.1, max_backoff=0.5)
    for attempt, ceiling in enumerate([0.1, 0.2, 0.4, 0.5, 0.5]):
        delays = [policy.backoff(attempt) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not a constant

    sleeps: list[float] = []
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ClientError("down", "UNAVAILABLE")
        return "ok"

    assert policy.call(flaky, sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2

    calls.clear()

    def rejected():
        calls.append(1)
        raise ClientError("bad", "INVALID_ARGUMENT")

    with pytest.raises(ClientError, match="bad"):
        policy.call(rejected, sleep=sleeps.append)
    assert len(calls) == 1

    calls.clear()

    def down():
        calls.append(1)
        raise ClientError("down", "UNAVAILABLE")

    with pytest.raises(ClientError, match="UNAVAILABLE"):
        policy.call(down, sleep=lambda seconds: None)
    assert len(calls) == 5


def test_status_and_metadata_are_identical_over_both_transports(fake: FakeServer):
    with connect(fake.grpc_url) as grpc_transport, connect(fake.rest_url) as rest_transport:
        assert grpc_transport.status(ModelSpec()) == rest_transport.status(ModelSpec())
        grpc_metadata = grpc_transport.metadata(ModelSpec())
        assert grpc_metadata == rest_transport.metadata(ModelSpec())
    images = grpc_metadata.signatures["serving_default"].inputs["images"]
    assert (images.dtype, images.shape) == ("uint8", (-1, 28, 28, 1))
    assert grpc_metadata.version == 3


def test_predict_returns_the_same_arrays_over_both_transports(fake: FakeServer):
    images = np.random.default_rng(1).integers(0, 256, size=(7, 28, 28, 1), dtype=np.uint8)
    with connect(fake.grpc_url) as grpc_transport, connect(fake.rest_url) as rest_transport:
        by_grpc = grpc_transport.predict(ModelSpec(version=3), {"images": images})
        by_rest = rest_transport.predict(ModelSpec(version=3), {"images": images})
    assert (
        by_grpc.outputs.keys()
        == by_rest.outputs.keys()
        == {"probabilities", "class_ids", "classes"}
    )
    for name in by_grpc.outputs:
        assert by_grpc.outputs[name].dtype == by_rest.outputs[name].dtype, name
        np.testing.assert_array_equal(by_grpc.outputs[name], by_rest.outputs[name])
    assert by_grpc.outputs["classes"][0].startswith(b"digit-")
    assert by_grpc.model_version == by_rest.model_version == 3
    assert by_grpc.latency_ms > 0 and by_rest.latency_ms > 0


@pytest.mark.parametrize(
    ("spec", "inputs", "code"),
    [
        (ModelSpec(name="nosuchmodel"), None, "NOT_FOUND"),
        (ModelSpec(version=99), None, "NOT_FOUND"),
        (ModelSpec(), {"images": np.zeros((1, 28, 28, 3), dtype=np.uint8)}, "INVALID_ARGUMENT"),
    ],
)
def test_errors_have_the_same_code_over_both_transports(fake, transport_kind, spec, inputs, code):
    inputs = inputs or {"images": np.zeros((1, 28, 28, 1), dtype=np.uint8)}
    with connect(fake.url(transport_kind)) as transport:
        with pytest.raises(ClientError) as caught:
            transport.predict(spec, inputs)
        assert caught.value.code == code
        if spec.name == "nosuchmodel":
            with pytest.raises(ClientError) as caught:
                transport.status(spec)
            assert caught.value.code == "NOT_FOUND"
    assert fake.behaviour.batch_sizes == []


def test_unavailable_is_retried_then_succeeds(fake, transport_kind):
    images = np.zeros((2, 28, 28, 1), dtype=np.uint8)
    with connect(fake.url(transport_kind), retries=3) as transport:
        transport.metadata(ModelSpec())  # REST caches output types; keep it out of the count
        fake.behaviour.unavailable_next = 2
        result = transport.predict(ModelSpec(), {"images": images})
    assert result.outputs["class_ids"].tolist() == [0, 0]
    assert fake.behaviour.predict_calls == 3


def test_unavailable_after_all_retries_is_raised(fake, transport_kind):
    with connect(fake.url(transport_kind), retries=1) as transport:
        transport.metadata(ModelSpec())
        fake.behaviour.unavailable_next = 5
        with pytest.raises(ClientError) as caught:
            transport.predict(ModelSpec(), {"images": np.zeros((1, 28, 28, 1), dtype=np.uint8)})
    assert caught.value.code == "UNAVAILABLE"
    assert fake.behaviour.predict_calls == 2


def test_a_reply_cut_off_mid_body_is_unavailable_and_retried(fake):
    """A server killed while it writes a REST reply leaves the client a short body (requests'
    ChunkedEncodingError): like gRPC's broken stream, that is UNAVAILABLE, so it is retried, and
    not an UNKNOWN error row. Found by SIGKILLing the real server mid-score
    (tests/reliability/test_kills.py)."""
    images = np.zeros((2, 28, 28, 1), dtype=np.uint8)
    with connect(fake.url("rest"), retries=1) as transport:
        transport.metadata(ModelSpec())
        fake.behaviour.cut_next = 1
        result = transport.predict(ModelSpec(), {"images": images})
        assert result.outputs["class_ids"].tolist() == [0, 0]
        assert fake.behaviour.predict_calls == 2
        fake.behaviour.cut_next = 2
        with pytest.raises(ClientError) as caught:
            transport.predict(ModelSpec(), {"images": images})
    assert caught.value.code == "UNAVAILABLE", caught.value.message
    assert "broke" in caught.value.message


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_closed_port_is_unavailable_after_retries(scheme):
    transport = connect(f"{scheme}://127.0.0.1:{free_port()}", retries=2, timeout=5)
    with transport, pytest.raises(ClientError) as caught:
        transport.status(ModelSpec())
    assert caught.value.code == "UNAVAILABLE"
    assert "cannot reach" in caught.value.message
    assert "refused" in caught.value.message.lower()


def test_version_labels_are_sent_over_both_transports(fake, transport_kind):
    images = np.zeros((1, 28, 28, 1), dtype=np.uint8)
    with connect(fake.url(transport_kind)) as transport:
        assert transport.status(ModelSpec(label="stable"))[0].version == 3
        assert transport.predict(ModelSpec(label="stable"), {"images": images}).model_version == 3
        with pytest.raises(ClientError) as caught:
            transport.predict(ModelSpec(label="canary"), {"images": images})
    assert caught.value.code == "NOT_FOUND" and "canary" in caught.value.message


def test_rest_reads_the_environment_once_not_per_request(fake, monkeypatch, tmp_path):
    # requests looks for ~/.netrc on every request of a session that trusts the environment;
    # the transport reads proxies, CA bundle and .netrc once, when it is made.
    import requests.sessions

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    with connect("https://models.invalid:8501") as remote:
        assert remote._session.proxies["https"] == "http://proxy.invalid:3128"

    def no_lookup(url, raise_errors=False):
        raise AssertionError(f"~/.netrc looked up for {url}")

    monkeypatch.setattr(requests.sessions, "get_netrc_auth", no_lookup)
    with connect(fake.rest_url) as transport:
        for _ in range(3):
            reply = transport.predict(ModelSpec(), {"images": np.zeros((2, 28, 28, 1), np.uint8)})
            assert reply.outputs["class_ids"].tolist() == [0, 0]


def test_a_call_can_bring_its_own_retry_policy(fake, transport_kind):
    with connect(fake.url(transport_kind), retries=3) as transport:
        transport.retry = RetryPolicy(retries=3, initial_backoff=0.001)
        fake.behaviour.unavailable_next = 1
        with pytest.raises(ClientError, match="try again"):
            transport.predict(
                ModelSpec(), {"images": np.zeros((1, 28, 28, 1), np.uint8)},
                retry=RetryPolicy(retries=0),
            )  # fmt: skip
        assert fake.behaviour.predict_calls == 1


@pytest.mark.parametrize("shape", [(256, 28, 28, 1), (3,), (1, 1), (2, 3, 4, 3), (5, 1, 7)])
def test_rest_writes_uint8_pixels_as_the_nested_lists_they_are(shape):
    import orjson

    from client.transport.rest_transport import _uint8_json

    pixels = np.random.default_rng(2).integers(0, 256, size=shape, dtype=np.uint8)
    pixels.flat[0], pixels.flat[-1] = 0, 255
    assert orjson.loads(_uint8_json(pixels)) == pixels.tolist()
    # A non-contiguous view (one channel of RGB) reads the same.
    colour = np.random.default_rng(3).integers(0, 256, size=(4, 5, 6, 3), dtype=np.uint8)
    assert orjson.loads(_uint8_json(colour[..., 1])) == colour[..., 1].tolist()
