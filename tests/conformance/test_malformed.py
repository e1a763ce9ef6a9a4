"""Malformed REST requests get TF Serving's status and error text, and the server keeps serving.

HTTP status follows model_servers/http_server.cc ToHTTPStatusCode: INVALID_ARGUMENT and
FAILED_PRECONDITION -> 400, NOT_FOUND -> 404. The body is {"error": "<message>"}
(util/json_tensor.cc MakeJsonFromStatus). Patterns are anchored where TF Serving's text is fixed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
from conformance_support import (
    MODEL,
    Target,
    assert_rest_error,
    max_batch_size,
)

pytestmark = pytest.mark.e2e

PREDICT = f"/v1/models/{MODEL}:predict"
IMAGE = np.zeros((28, 28, 1), dtype=np.uint8).tolist()


def short_image(height: int, width: int) -> list:
    return np.zeros((height, width, 1), dtype=np.uint8).tolist()


def ragged_image() -> list:
    """28 rows of 28 pixels, except row 5, which has 27."""
    image = np.zeros((28, 28, 1), dtype=np.uint8).tolist()
    image[5] = image[5][:27]
    return image


# (id, method, path, raw body, HTTP status, error pattern); the comments cite the source.
CASES = [
    # util/json_tensor.cc ParseJson: rapidjson's message and the byte offset.
    ("bad-json", "POST", PREDICT, b'{"instances": [1,', 400, r"^JSON Parse error: .+ at offset: "),
    ("empty-body", "POST", PREDICT, b"", 400, r"^JSON Parse error: The document is empty$"),
    ("not-an-object", "POST", PREDICT, b"[1, 2]", 400, r"Is not object$"),
    (
        "no-inputs-key",
        "POST",
        PREDICT,
        b'{"foo": 1}',
        400,
        r"^Missing 'inputs' or 'instances' key$",
    ),
    (
        "both-keys",
        "POST",
        PREDICT,
        b'{"inputs": [1], "instances": [1]}',
        400,
        r"expecting only one of 'inputs' or 'instances' keys to exist",
    ),
    (
        "instances-not-a-list",
        "POST",
        PREDICT,
        b'{"instances": 5}',
        400,
        r"Excepting 'instances' to be an list/array",  # sic: TF Serving's typo
    ),
    ("instances-empty", "POST", PREDICT, b'{"instances": []}', 400, r"No values in 'instances'"),
    (
        "signature-name-not-a-string",
        "POST",
        PREDICT,
        b'{"signature_name": 1, "instances": [1]}',
        400,
        r"'signature_name' key must be a string value\.$",
    ),
    # http_rest_api_handler.cc GetInfoMap: the signature is looked up while parsing JSON.
    (
        "unknown-signature",
        "POST",
        PREDICT,
        b'{"signature_name": "nope", "instances": [1]}',
        400,
        r'^Serving signature name: "nope" not found in signature def$',
    ),
    # json_tensor.cc TypeError: uint8 takes JSON integers only.
    (
        "string-for-uint8",
        "POST",
        PREDICT,
        b'{"inputs": [[[["a"]]]]}',
        400,
        r'JSON Value: "a" Type: String is not of expected type: uint8',
    ),
    (
        "float-for-uint8",
        "POST",
        PREDICT,
        b'{"inputs": [[[[0.5]]]]}',
        400,
        r"JSON Value: 0\.5 Type: Number is not of expected type: uint8",
    ),
    (
        "named-input-unknown",
        "POST",
        PREDICT,
        b'{"instances": [{"pixels": [1]}]}',
        400,
        r"does not have named input: pixels",
    ),
    (
        "columnar-named-input-missing",
        "POST",
        PREDICT,
        b'{"inputs": {"pixels": [1]}}',
        400,
        r"^Missing named input: images in 'inputs' object\.$",
    ),
    # util/json_tensor.cc FillTensorMapFromInstancesList / AddInstanceItem.
    (
        "instances-of-different-sizes",
        "POST",
        PREDICT,
        f'{{"instances": [{IMAGE}, {short_image(27, 28)}]}}'.encode(),
        400,
        r"Failed to process element: 1 of 'instances' list\. "
        r"Error: .*Expecting tensor size: 784 but got: 756",
    ),
    # util/json_tensor.cc FillTensorProto: every list at one level has the same length.
    (
        "ragged-tensor",
        "POST",
        PREDICT,
        json.dumps({"inputs": [ragged_image()]}).encode(),
        400,
        r"^Encountered list at unexpected size: 27 at level: 2 expected size: 28$",
    ),
    # http_rest_api_util.cc: unknown model / version (NOT_FOUND, 404), unknown label
    # (server_core.cc GetModelVersionForLabel: INVALID_ARGUMENT, 400).
    (
        "unknown-model",
        "POST",
        "/v1/models/no-such-model:predict",
        b'{"instances": [1]}',
        404,
        r"^Servable not found for request: Latest\(no-such-model\)$",
    ),
    (
        "unknown-version",
        "POST",
        f"/v1/models/{MODEL}/versions/99:predict",
        b'{"instances": [1]}',
        404,
        rf"^Servable not found for request: Specific\({MODEL}, 99\)$",
    ),
    (
        "unknown-label",
        "POST",
        f"/v1/models/{MODEL}/labels/no-such-label:predict",
        b'{"instances": [1]}',
        400,
        r"^Unrecognized servable version label: no-such-label$",
    ),
    # http_rest_api_handler.cc ProcessRequest: anything under /v1/ that the path regexes do not
    # match keeps the initial status "Malformed request: <method> <path>".
    (
        "non-numeric-version",
        "POST",
        f"/v1/models/{MODEL}/versions/latest:predict",
        b'{"instances": [1]}',
        400,
        rf"^Malformed request: POST /v1/models/{MODEL}/versions/latest:predict$",
    ),
    (
        "unknown-verb",
        "POST",
        f"/v1/models/{MODEL}:explain",
        b'{"instances": [1]}',
        400,
        rf"^Malformed request: POST /v1/models/{MODEL}:explain$",
    ),
    (
        "get-on-predict",
        "GET",
        PREDICT,
        b"",
        400,
        rf"^Malformed request: GET /v1/models/{MODEL}:predict$",
    ),
    (
        "post-on-status",
        "POST",
        f"/v1/models/{MODEL}",
        b"{}",
        400,
        rf"^Malformed request: POST /v1/models/{MODEL}$",
    ),
    ("no-model-name", "GET", "/v1/models", b"", 400, r"^Missing model name in request\.$"),
    # :classify / :regress take tf.Examples (json_tensor.cc FillClassifyRegressRequestFromJson)
    # and need a classify / regress signature (servables/tensorflow/classifier.cc,
    # regressor.cc). Which of the two texts depends on --enable_signature_method_name_check.
    (
        "classify-without-examples",
        "POST",
        f"/v1/models/{MODEL}:classify",
        b'{"instances": [1]}',
        400,
        r"key 'examples' is expected and was not found",
    ),
    (
        "classify-on-predict-signature",
        "POST",
        f"/v1/models/{MODEL}:classify",
        b'{"examples": [{"x": 1.0}]}',
        400,
        r"^(Expected classification signature method_name to be tensorflow/serving/classify\. "
        r"Was: tensorflow/serving/predict|Expected one or two output Tensors, found 3)$",
    ),
    (
        "regress-on-predict-signature",
        "POST",
        f"/v1/models/{MODEL}:regress",
        b'{"examples": [{"x": 1.0}]}',
        400,
        r"^(Expected regression signature method_name to be tensorflow/serving/regress\. "
        r"Was: tensorflow/serving/predict|Expected one output Tensor\.)$",
    ),
]


@pytest.fixture(scope="module")
def good_request(target: Target) -> dict:
    return {"instances": target.expectations.images[:2].tolist()}


def assert_still_serving(target: Target, good_request: dict) -> None:
    reply = requests.post(target.url(PREDICT), json=good_request, timeout=60)
    assert reply.status_code == 200, f"good request failed after a bad one: {reply.text[:500]}"
    assert len(reply.json()["predictions"]) == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "pattern"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_malformed_request(
    target: Target, good_request: dict, method: str, path: str, body: bytes, status, pattern
):
    reply = requests.request(
        method,
        target.url(path),
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert_rest_error(reply, status, pattern)
    assert_still_serving(target, good_request)


def test_wrong_image_shape(target: Target, good_request: dict):
    """A well-formed tensor of the wrong shape reaches TensorFlow, which rejects it.

    TF Serving does not check shapes against the signature itself; the first op that cannot
    take the shape (here the model's Flatten/Reshape) fails with INVALID_ARGUMENT (400). The text
    comes from the TensorFlow runtime, so only the status and a non-empty message are fixed.
    """
    body = {"instances": [short_image(27, 27)]}
    assert_rest_error(requests.post(target.url(PREDICT), json=body, timeout=60), 400, r".")
    assert_still_serving(target, good_request)


def test_oversized_batch(target: Target, good_request: dict):
    """More rows than batching.config's max_batch_size: the batch scheduler refuses the task
    (tensorflow/core/kernels/batching_util/shared_batch_scheduler.h
    ValidateBatchTaskQueueCapacity, INVALID_ARGUMENT)."""
    limit = max_batch_size()
    body = {"instances": [IMAGE] * (limit + 1)}
    assert_rest_error(
        requests.post(target.url(PREDICT), json=body, timeout=60),
        400,
        rf"^Task size {limit + 1} is larger than maximum input batch size {limit}$",
    )
    assert_still_serving(target, good_request)
    # Exactly max_batch_size rows is allowed.
    reply = requests.post(target.url(PREDICT), json={"instances": [IMAGE] * limit}, timeout=60)
    assert reply.status_code == 200, reply.text[:500]
    assert len(reply.json()["predictions"]) == limit
