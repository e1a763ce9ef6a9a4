"""A TF1 graph SavedModel (TF Serving's half_plus_two shape): predict, classify, regress,
metadata; concurrent batched requests answer as unbatched ones; oversized bodies get 413."""

from __future__ import annotations

import concurrent.futures

import grpc
import numpy as np
import pytest
import requests
from harness import local_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "half_plus_two"


@pytest.fixture(scope="module")
def tf1_server(half_plus_two, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("tf1-server")
    batching = log_dir / "batching.config"
    batching.write_text(
        "max_batch_size { value: 64 } batch_timeout_micros { value: 20000 }"
        " num_batch_threads { value: 2 }"
    )
    with local_server(
        f"--model_name={MODEL}",
        f"--model_base_path={half_plus_two}",
        "--enable_batching=true",
        f"--batching_parameters_file={batching}",
        log_dir=log_dir,
        model_name=MODEL,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def stub(tf1_server):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(tf1_server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def url(server, verb: str) -> str:
    return f"{server.rest_url}/v1/models/{MODEL}:{verb}"


def test_rest_predict_row_and_columnar(tf1_server):
    reply = requests.post(url(tf1_server, "predict"), json={"instances": [1.0, 2.0, 5.0]})
    assert reply.json() == {"predictions": [2.5, 3.0, 4.5]}
    reply = requests.post(url(tf1_server, "predict"), json={"inputs": {"x": [1.0, 2.0]}})
    assert reply.json() == {"outputs": [2.5, 3.0]}


def test_grpc_predict_with_typed_float_val(tf1_server, stub):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].dtype = tf.float32.as_datatype_enum
    request.inputs["x"].tensor_shape.dim.add(size=3)
    request.inputs["x"].float_val.extend([0.0, 4.0, -2.0])
    response = stub.Predict(request, timeout=30)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [2.0, 4.0, 1.0]
    assert response.model_spec.version.value == 1

    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1, 2], dtype=np.int32)))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "Expects arg[0] to be float but int32 is provided"


def test_classify_and_regress_over_rest(tf1_server):
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 4.0}]}
    assert requests.post(url(tf1_server, "classify"), json=body).json() == {
        "results": [[["", 2.5]], [["", 4.0]]]
    }
    body["signature_name"] = "regress_x_to_y"
    assert requests.post(url(tf1_server, "regress"), json=body).json() == {"results": [2.5, 4.0]}
    # The predict signature cannot classify: TF Serving's own error text.
    reply = requests.post(url(tf1_server, "classify"), json={"examples": [{"x": 1.0}]})
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("No classification inputs found in SignatureDef")


def test_classify_and_regress_over_grpc(stub):
    from tensorflow.core.example import example_pb2
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "regress_x_to_y"
    for value in (2.0, 6.0):
        example = request.input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(value)
    response = stub.Regress(request, timeout=30)
    assert [r.value for r in response.result.regressions] == [3.0, 5.0]

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = MODEL
    classify.model_spec.signature_name = "classify_x_to_y"
    context = classify.input.example_list_with_context
    context.context.features.feature["x"].float_list.value.append(10.0)
    context.examples.add()  # the feature comes from the context
    response = stub.Classify(classify, timeout=30)
    assert response.result.classifications[0].classes[0].score == 7.0

    missing = regression_pb2.RegressionRequest()
    missing.model_spec.name = MODEL
    missing.model_spec.signature_name = "nope"
    with pytest.raises(grpc.RpcError) as caught:
        stub.Regress(missing, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "No signature was found with the name: nope"
    example_pb2.Example()  # the proto module is what clients use to build examples


def test_metadata_of_a_tf1_graph(tf1_server, stub):
    reply = requests.get(f"{tf1_server.rest_url}/v1/models/{MODEL}/metadata", timeout=10)
    signatures = reply.json()["metadata"]["signature_def"]["signature_def"]
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert signatures["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"
    assert signatures["regress_x_to_y"]["inputs"]["inputs"]["dtype"] == "DT_STRING"
    assert signatures["serving_default"]["inputs"]["x"]["name"] == "x:0"

    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    response = stub.GetModelMetadata(request, timeout=30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    assert set(signature_map.signature_def) == set(signatures)


def test_concurrent_batched_requests_get_unbatched_answers(tf1_server, stub):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    def rest(index: int) -> list[float]:
        values = [float(index + k) for k in range(1 + index % 4)]
        reply = requests.post(url(tf1_server, "predict"), json={"instances": values}, timeout=30)
        assert reply.status_code == 200, reply.text
        return values, reply.json()["predictions"]

    def grpc_call(index: int):
        values = np.arange(index, index + 1 + index % 5, dtype=np.float32)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(values))
        response = stub.Predict(request, timeout=30)
        return values.tolist(), tf.make_ndarray(response.outputs["y"]).tolist()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(rest if i % 2 else grpc_call, i) for i in range(48)]
        answers = [future.result() for future in futures]
    for values, predictions in answers:
        assert predictions == [0.5 * v + 2 for v in values]


def test_oversized_body_is_refused_and_server_keeps_serving(tf1_server):
    body = b'{"instances": [' + b"1.0, " * (14 * 1024 * 1024) + b"1.0]}"
    reply = requests.post(url(tf1_server, "predict"), data=body, timeout=60)
    assert reply.status_code == 413
    assert "exceeds the local server's limit" in reply.json()["error"]
    reply = requests.post(url(tf1_server, "predict"), json={"instances": [2.0]}, timeout=30)
    assert reply.json() == {"predictions": [3.0]}


GRPC_ERRORS = [
    ("nope", None, "", {"x": [1.0]}, "NOT_FOUND",
     r"^Servable not found for request: Latest\(nope\)$"),
    (MODEL, 7, "", {"x": [1.0]}, "NOT_FOUND", r"Specific\(half_plus_two, 7\)$"),
    (MODEL, None, "nope", {"x": [1.0]}, "FAILED_PRECONDITION",
     r'^Serving signature key "nope" not found\.$'),
    (MODEL, None, "", {"z": [1.0]}, "INVALID_ARGUMENT",
     r"^input tensor alias not found in signature: z\."),
    (MODEL, None, "", {"x": [1.0], "z": [1.0]}, "INVALID_ARGUMENT",
     r"^input size does not match signature: 2!=1 "),
]  # fmt: skip


@pytest.mark.parametrize(("name", "version", "signature", "inputs", "code", "details"), GRPC_ERRORS)
def test_grpc_errors(stub, name, version, signature, inputs, code, details):
    import re

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, values in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(np.array(values, dtype=np.float32)))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=30)
    assert caught.value.code() == getattr(grpc.StatusCode, code)
    assert re.search(details, caught.value.details()), caught.value.details()
