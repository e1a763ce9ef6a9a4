"""TF Serving's REST API (g3doc/api_rest.md): status, metadata, predict, routing, metrics.

Each expectation names the TF Serving source that fixes it. Paths are relative to
tensorflow_serving/ in github.com/tensorflow/serving.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests
from conformance_support import (
    DT_UINT8,
    MODEL,
    TOLERANCE,
    Target,
    assert_rest_error,
    packed_tensor,
)

pytestmark = pytest.mark.e2e

OK_STATUS = {"error_code": "OK", "error_message": ""}


def post(target: Target, path: str, body) -> requests.Response:
    return requests.post(target.url(path), json=body, timeout=60)


def rows(images: np.ndarray) -> list:
    return images.tolist()


def check_row_predictions(reply: requests.Response, expected: dict[str, np.ndarray]) -> None:
    """Row format reply (json_tensor.cc MakeRowFormatJsonFromTensors): {"predictions": [one
    object per instance, keyed by output name]} when the signature has several outputs."""
    assert reply.status_code == 200, reply.text[:500]
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert list(body) == ["predictions"]
    predictions = body["predictions"]
    assert len(predictions) == len(expected["class_ids"])
    for index, prediction in enumerate(predictions):
        assert set(prediction) == {"probabilities", "class_ids", "classes"}
        np.testing.assert_allclose(
            prediction["probabilities"], expected["probabilities"][index], atol=TOLERANCE
        )
        assert prediction["class_ids"] == int(expected["class_ids"][index])
        assert prediction["classes"] == str(expected["classes"][index])


def check_columnar_outputs(reply: requests.Response, expected: dict[str, np.ndarray]) -> None:
    """Columnar reply (MakeColumnarFormatJsonFromTensors): {"outputs": {name: whole tensor}}."""
    assert reply.status_code == 200, reply.text[:500]
    body = reply.json()
    assert list(body) == ["outputs"]
    outputs = body["outputs"]
    assert set(outputs) == {"probabilities", "class_ids", "classes"}
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], atol=TOLERANCE)
    assert outputs["class_ids"] == [int(value) for value in expected["class_ids"]]
    assert outputs["classes"] == [str(value) for value in expected["classes"]]


# --- status: model_servers/get_model_status_impl.cc, http_rest_api_util.cc ToJsonString ------


def test_status_lists_every_loaded_version(target: Target):
    reply = requests.get(target.url(f"/v1/models/{MODEL}"), timeout=10)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert list(body) == ["model_version_status"]
    # Versions are int64, printed by protobuf's JSON printer as strings; always_print_primitive
    # _fields keeps the empty error_message (tensorflow_model_server_test.py testGetStatusREST).
    by_version = {entry["version"]: entry for entry in body["model_version_status"]}
    assert set(by_version) == {"1", "2"}
    for version, entry in by_version.items():
        assert entry == {"version": version, "state": "AVAILABLE", "status": OK_STATUS}


def test_status_of_one_version(target: Target):
    reply = requests.get(target.url(f"/v1/models/{MODEL}/versions/2"), timeout=10)
    assert reply.status_code == 200
    assert reply.json() == {
        "model_version_status": [{"version": "2", "state": "AVAILABLE", "status": OK_STATUS}]
    }


def test_status_ignores_the_label(target: Target):
    """GetModelStatusWithModelSpec looks only at model_spec.version: a label (known or not)
    answers the status of every version."""
    everything = requests.get(target.url(f"/v1/models/{MODEL}"), timeout=10).json()
    for label in ("stable", "canary", "no-such-label"):
        reply = requests.get(target.url(f"/v1/models/{MODEL}/labels/{label}"), timeout=10)
        assert reply.status_code == 200, reply.text
        assert sorted(reply.json()["model_version_status"], key=lambda e: e["version"]) == sorted(
            everything["model_version_status"], key=lambda e: e["version"]
        )


def test_status_of_unknown_model_and_version(target: Target):
    assert_rest_error(
        requests.get(target.url("/v1/models/no-such-model"), timeout=10),
        404,
        r"^Could not find any versions of model no-such-model$",
    )
    assert_rest_error(
        requests.get(target.url(f"/v1/models/{MODEL}/versions/99"), timeout=10),
        404,
        rf"^Could not find version 99 of model {MODEL}$",
    )


# --- metadata: servables/tensorflow/get_model_metadata_impl.cc, http_rest_api_util.cc -------


def dims(tensor_info: dict) -> list[str]:
    return [dim["size"] for dim in tensor_info["tensor_shape"]["dim"]]


def test_metadata_shape(target: Target):
    reply = requests.get(target.url(f"/v1/models/{MODEL}/metadata"), timeout=10)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"model_spec", "metadata"}
    # preserve_proto_field_names + always_print_primitive_fields; the Int64Value version is a
    # JSON string (testdata/half_plus_two_model_metadata.json).
    assert body["model_spec"] == {"name": MODEL, "signature_name": "", "version": "2"}
    assert list(body["metadata"]) == ["signature_def"]
    # SignatureDefMap is printed whole, so the map sits under a second "signature_def" key.
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "serving_bytes"} <= set(signatures)

    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert set(default["inputs"]) == {"images"}
    images = default["inputs"]["images"]
    assert images["dtype"] == "DT_UINT8"
    assert dims(images) == ["-1", "28", "28", "1"]
    assert images["tensor_shape"]["unknown_rank"] is False
    outputs = default["outputs"]
    assert set(outputs) == {"probabilities", "class_ids", "classes"}
    assert (outputs["probabilities"]["dtype"], dims(outputs["probabilities"])) == (
        "DT_FLOAT",
        ["-1", "10"],
    )
    assert (outputs["class_ids"]["dtype"], dims(outputs["class_ids"])) == ("DT_INT64", ["-1"])
    assert (outputs["classes"]["dtype"], dims(outputs["classes"])) == ("DT_STRING", ["-1"])

    encoded = signatures["serving_bytes"]
    assert set(encoded["inputs"]) == {"image_bytes"}
    assert encoded["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert dims(encoded["inputs"]["image_bytes"]) == ["-1"]
    assert set(encoded["outputs"]) == {"probabilities", "class_ids", "classes"}


@pytest.mark.parametrize(
    ("path", "version"),
    [("/versions/1", "1"), ("/versions/2", "2"), ("/labels/stable", "1"), ("/labels/canary", "2")],
)
def test_metadata_routes_by_version_and_label(target: Target, path: str, version: str):
    reply = requests.get(target.url(f"/v1/models/{MODEL}{path}/metadata"), timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json()["model_spec"] == {"name": MODEL, "signature_name": "", "version": version}


def test_metadata_errors(target: Target):
    # core/basic_manager.cc: NOT_FOUND "Servable not found for request: " + ServableRequest
    # DebugString, which is Latest(name) or Specific(name, version).
    assert_rest_error(
        requests.get(target.url("/v1/models/no-such-model/metadata"), timeout=10),
        404,
        r"^Servable not found for request: Latest\(no-such-model\)$",
    )
    assert_rest_error(
        requests.get(target.url(f"/v1/models/{MODEL}/versions/99/metadata"), timeout=10),
        404,
        rf"^Servable not found for request: Specific\({MODEL}, 99\)$",
    )
    # model_servers/server_core.cc GetModelVersionForLabel: INVALID_ARGUMENT, so 400, not 404.
    assert_rest_error(
        requests.get(target.url(f"/v1/models/{MODEL}/labels/no-such-label/metadata"), timeout=10),
        400,
        r"^Unrecognized servable version label: no-such-label$",
    )


# --- predict: util/json_tensor.cc, model_servers/http_rest_api_handler.cc ------------------


def test_predict_row_format(target: Target):
    expected = target.expectations
    reply = post(target, f"/v1/models/{MODEL}:predict", {"instances": rows(expected.images)})
    check_row_predictions(reply, expected.outputs[2])


def test_predict_row_format_with_named_inputs(target: Target):
    expected = target.expectations
    instances = [{"images": image} for image in rows(expected.images)]
    reply = post(target, f"/v1/models/{MODEL}:predict", {"instances": instances})
    check_row_predictions(reply, expected.outputs[2])


def test_predict_columnar_format(target: Target):
    expected = target.expectations
    reply = post(target, f"/v1/models/{MODEL}:predict", {"inputs": rows(expected.images)})
    check_columnar_outputs(reply, expected.outputs[2])


def test_predict_columnar_format_with_named_inputs(target: Target):
    expected = target.expectations
    body = {"signature_name": "serving_default", "inputs": {"images": rows(expected.images)}}
    reply = post(target, f"/v1/models/{MODEL}:predict", body)
    check_columnar_outputs(reply, expected.outputs[2])


def test_predict_one_instance(target: Target):
    expected = target.expectations
    reply = post(target, f"/v1/models/{MODEL}:predict", {"instances": rows(expected.images[:1])})
    check_row_predictions(reply, {name: value[:1] for name, value in expected.outputs[2].items()})


def test_predict_b64_strings(target: Target):
    """{"b64": ...} objects decode into DT_STRING inputs (json_tensor.cc JsonDecodeBase64Object)."""
    expected = target.expectations
    encoded = [{"b64": base64.b64encode(png).decode()} for png in expected.pngs]
    body = {"signature_name": "serving_bytes", "instances": encoded}
    check_row_predictions(post(target, f"/v1/models/{MODEL}:predict", body), expected.outputs[2])
    body = {"signature_name": "serving_bytes", "inputs": {"image_bytes": encoded}}
    check_columnar_outputs(post(target, f"/v1/models/{MODEL}:predict", body), expected.outputs[2])


@pytest.mark.parametrize(
    ("route", "version"),
    [("/versions/1", 1), ("/versions/2", 2), ("/labels/stable", 1), ("/labels/canary", 2)],
)
def test_predict_routes_by_version_and_label(target: Target, route: str, version: int):
    """http_rest_api_util.cc kPredictionApiGegex: /versions/N or /labels/L before :predict."""
    expected = target.expectations
    assert target.expectations.labels == {"stable": 1, "canary": 2}
    reply = post(target, f"/v1/models/{MODEL}{route}:predict", {"instances": rows(expected.images)})
    check_row_predictions(reply, expected.outputs[version])


def test_the_two_versions_answer_differently(target: Target):
    """Guards the routing tests above: they would pass vacuously if both versions agreed."""
    first, second = target.expectations.outputs[1], target.expectations.outputs[2]
    assert np.abs(first["probabilities"] - second["probabilities"]).max() > 1e-3


# --- monitoring: model_servers/http_server.cc, util/prometheus_exporter.cc -----------------


def test_prometheus_metrics(target: Target, prediction_stub):
    from tensorflow_serving.apis import predict_pb2

    # TF Serving counts requests per model in the gRPC PredictionService
    # (model_servers/prediction_service_impl.cc RecordModelRequestCount); REST does not count.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["images"].CopyFrom(packed_tensor(target.expectations.images[:1], DT_UINT8))
    prediction_stub.Predict(request, timeout=60)

    reply = requests.get(target.url("/monitoring/prometheus/metrics"), timeout=10)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    # Counter /tensorflow/serving/request_count{model_name, status} (servables/tensorflow/
    # util.cc), status = the canonical code name; the exporter turns "/" into ":".
    lines = [line for line in reply.text.splitlines() if not line.startswith("#")]
    counted = [
        line
        for line in lines
        if line.startswith(":tensorflow:serving:request_count{")
        and f'model_name="{MODEL}"' in line
        and 'status="OK"' in line
    ]
    assert counted, "no :tensorflow:serving:request_count sample for mnist:\n" + reply.text[:2000]
    assert float(counted[0].rsplit(" ", 1)[1]) >= 1
