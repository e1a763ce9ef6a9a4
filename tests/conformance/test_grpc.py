"""TF Serving's gRPC API: PredictionService (Predict, GetModelMetadata, Classify, Regress) and
ModelService (GetModelStatus, HandleReloadConfigRequest), with TF Serving's status codes.

Error codes are TF Serving's own (model_servers/grpc_status_util.cc passes them through).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from conformance_support import (
    DT_FLOAT,
    DT_STRING,
    DT_UINT8,
    MODEL,
    TOLERANCE,
    Target,
    assert_rpc_error,
    max_batch_size,
    packed_tensor,
    to_numpy,
    typed_tensor,
)

pytestmark = pytest.mark.e2e

TIMEOUT = 60


def predict_request(images=None, *, version=None, label=None, signature="", inputs=None):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.model_spec.signature_name = signature
    if inputs is not None:
        for name, tensor in inputs.items():
            request.inputs[name].CopyFrom(tensor)
    elif images is not None:
        request.inputs["images"].CopyFrom(packed_tensor(images, DT_UINT8))
    return request


def check_outputs(response, expected: dict[str, np.ndarray]) -> None:
    assert set(response.outputs) == {"probabilities", "class_ids", "classes"}
    probabilities = to_numpy(response.outputs["probabilities"])
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected["probabilities"], atol=TOLERANCE)
    class_ids = to_numpy(response.outputs["class_ids"])
    assert class_ids.dtype == np.int64
    assert class_ids.tolist() == expected["class_ids"].tolist()
    classes = to_numpy(response.outputs["classes"])
    assert [value.decode() for value in classes] == expected["classes"].tolist()


# --- Predict: servables/tensorflow/predict_util.cc -------------------------------------------


def test_predict_packed_tensor_content(target: Target, prediction_stub):
    expected = target.expectations
    response = prediction_stub.Predict(predict_request(expected.images), timeout=TIMEOUT)
    check_outputs(response, expected.outputs[2])
    # MakeModelSpec: the reply names the model, the resolved version and the signature run.
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"


def test_predict_typed_values(target: Target, prediction_stub):
    """uint8 values may come in int_val instead of tensor_content (tensor.proto)."""
    expected = target.expectations
    tensor = typed_tensor(expected.images.ravel().tolist(), expected.images.shape, DT_UINT8)
    response = prediction_stub.Predict(predict_request(inputs={"images": tensor}), timeout=TIMEOUT)
    check_outputs(response, expected.outputs[2])


@pytest.mark.parametrize(
    ("version", "label", "resolved"),
    [(1, None, 1), (2, None, 2), (None, "stable", 1), (None, "canary", 2)],
)
def test_predict_routes_by_version_and_label(
    target: Target, prediction_stub, version, label, resolved
):
    expected = target.expectations
    request = predict_request(expected.images, version=version, label=label)
    response = prediction_stub.Predict(request, timeout=TIMEOUT)
    assert response.model_spec.version.value == resolved
    check_outputs(response, expected.outputs[resolved])


def test_predict_encoded_images(target: Target, prediction_stub):
    expected = target.expectations
    tensor = typed_tensor(expected.pngs, (len(expected.pngs),), DT_STRING)
    request = predict_request(signature="serving_bytes", inputs={"image_bytes": tensor})
    response = prediction_stub.Predict(request, timeout=TIMEOUT)
    assert response.model_spec.signature_name == "serving_bytes"
    check_outputs(response, expected.outputs[2])


def test_predict_output_filter(target: Target, prediction_stub):
    expected = target.expectations
    request = predict_request(expected.images)
    request.output_filter.append("probabilities")
    response = prediction_stub.Predict(request, timeout=TIMEOUT)
    assert set(response.outputs) == {"probabilities"}
    np.testing.assert_allclose(
        to_numpy(response.outputs["probabilities"]),
        expected.outputs[2]["probabilities"],
        atol=TOLERANCE,
    )


def test_predict_large_message(target: Target, prediction_stub):
    """TF Serving lifts gRPC's 4 MB default (model_servers/server.cc SetMaxMessageSize
    (INT32_MAX)): an ~8 MB request of two big noise PNGs is served."""
    from PIL import Image

    generator = np.random.default_rng(0)
    pngs = []
    for _ in range(2):
        buffer = io.BytesIO()
        noise = generator.integers(0, 256, size=(2048, 2048), dtype=np.uint8)
        Image.fromarray(noise, mode="L").save(buffer, format="PNG", compress_level=0)
        pngs.append(buffer.getvalue())
    assert sum(len(png) for png in pngs) > 8 * 1024 * 1024
    tensor = typed_tensor(pngs, (2,), DT_STRING)
    request = predict_request(signature="serving_bytes", inputs={"image_bytes": tensor})
    response = prediction_stub.Predict(request, timeout=TIMEOUT)
    assert to_numpy(response.outputs["probabilities"]).shape == (2, 10)


def test_predict_errors(target: Target, prediction_stub):
    images = target.expectations.images[:1]

    def predict(request):
        return lambda: prediction_stub.Predict(request, timeout=TIMEOUT)

    # core/basic_manager.cc: NOT_FOUND "Servable not found for request: ...".
    unknown_model = predict_request(images)
    unknown_model.model_spec.name = "no-such-model"
    assert_rpc_error(
        predict(unknown_model),
        "NOT_FOUND",
        r"^Servable not found for request: Latest\(no-such-model\)$",
    )
    assert_rpc_error(
        predict(predict_request(images, version=99)),
        "NOT_FOUND",
        rf"^Servable not found for request: Specific\({MODEL}, 99\)$",
    )
    # model_servers/server_core.cc GetModelVersionForLabel.
    assert_rpc_error(
        predict(predict_request(images, label="no-such-label")),
        "INVALID_ARGUMENT",
        r"^Unrecognized servable version label: no-such-label$",
    )
    # servables/tensorflow/predict_util.cc RunPredict: FAILED_PRECONDITION over gRPC (REST
    # looks the signature up earlier and answers INVALID_ARGUMENT).
    assert_rpc_error(
        predict(predict_request(images, signature="nope")),
        "FAILED_PRECONDITION",
        r'^Serving signature key "nope" not found\.$',
    )
    # predict_util.cc VerifyRequestInputsSize.
    assert_rpc_error(
        predict(predict_request(inputs={})),
        "INVALID_ARGUMENT",
        r"^input size does not match signature: 0!=1 len\(\{\}\) != len\(\{images\}\)\. "
        r"Sent extra: \{\}\. Missing but required: \{images\}\.$",
    )
    # predict_util.cc PreProcessPrediction: output_filter must name signature outputs.
    filtered = predict_request(images)
    filtered.output_filter.append("nope")
    assert_rpc_error(
        predict(filtered),
        "INVALID_ARGUMENT",
        r"^output tensor alias not found in signature: nope Outputs expected to be in the set "
        r"\{class_ids,classes,probabilities\}\.$",
    )
    # A float tensor for a uint8 input: TensorFlow refuses the feed (text from the runtime).
    wrong_dtype = predict_request(
        inputs={"images": packed_tensor(images.astype(np.float32), DT_FLOAT)}
    )
    assert_rpc_error(predict(wrong_dtype), "INVALID_ARGUMENT", r"uint8")
    # Larger than batching.config's max_batch_size (shared_batch_scheduler.h).
    limit = max_batch_size()
    oversized = np.zeros((limit + 1, 28, 28, 1), dtype=np.uint8)
    assert_rpc_error(
        predict(predict_request(oversized)),
        "INVALID_ARGUMENT",
        rf"^Task size {limit + 1} is larger than maximum input batch size {limit}$",
    )
    # Still serving.
    response = prediction_stub.Predict(predict_request(images), timeout=TIMEOUT)
    assert to_numpy(response.outputs["probabilities"]).shape == (1, 10)


def test_classify_and_regress_on_a_predict_signature(target: Target, prediction_stub):
    """servables/tensorflow/classifier.cc, regressor.cc: a predict signature cannot classify or
    regress; which text depends on --enable_signature_method_name_check."""
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    for request_class, call, pattern in [
        (
            classification_pb2.ClassificationRequest,
            prediction_stub.Classify,
            r"^(Expected classification signature method_name to be tensorflow/serving/classify"
            r"\. Was: tensorflow/serving/predict|Expected one or two output Tensors, found 3)$",
        ),
        (
            regression_pb2.RegressionRequest,
            prediction_stub.Regress,
            r"^(Expected regression signature method_name to be tensorflow/serving/regress\. "
            r"Was: tensorflow/serving/predict|Expected one output Tensor\.)$",
        ),
    ]:
        request = request_class()
        request.model_spec.name = MODEL
        example = request.input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(1.0)
        assert_rpc_error(lambda: call(request, timeout=TIMEOUT), "INVALID_ARGUMENT", pattern)  # noqa: B023


# --- GetModelMetadata: servables/tensorflow/get_model_metadata_impl.cc -----------------------


def metadata_request(version=None, label=None, fields=("signature_def",)):
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.metadata_field.extend(fields)
    return request


@pytest.mark.parametrize(
    ("version", "label", "resolved"),
    [(None, None, 2), (1, None, 1), (None, "stable", 1), (None, "canary", 2)],
)
def test_metadata(target: Target, prediction_stub, version, label, resolved):
    from tensorflow_serving.apis import get_model_metadata_pb2

    response = prediction_stub.GetModelMetadata(metadata_request(version, label), timeout=TIMEOUT)
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == resolved
    assert set(response.metadata) == {"signature_def"}
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    default = signatures.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    images = default.inputs["images"]
    assert images.dtype == DT_UINT8
    assert [dim.size for dim in images.tensor_shape.dim] == [-1, 28, 28, 1]
    assert set(default.outputs) == {"probabilities", "class_ids", "classes"}
    assert signatures.signature_def["serving_bytes"].inputs["image_bytes"].dtype == DT_STRING


def test_metadata_errors(target: Target, prediction_stub):
    def call(request):
        return lambda: prediction_stub.GetModelMetadata(request, timeout=TIMEOUT)

    assert_rpc_error(
        call(metadata_request(fields=())),
        "INVALID_ARGUMENT",
        r"^GetModelMetadataRequest must specify at least one metadata_field$",
    )
    # TF Serving builds this text with StrCat, not printf, and prints a literal "%s".
    assert_rpc_error(
        call(metadata_request(fields=("foo",))),
        "INVALID_ARGUMENT",
        r"^Metadata field (%s is not supportedfoo|foo is not supported)$",
    )
    assert_rpc_error(
        call(metadata_request(version=99)),
        "NOT_FOUND",
        rf"^Servable not found for request: Specific\({MODEL}, 99\)$",
    )


# --- ModelService: model_servers/get_model_status_impl.cc, model_service_impl.cc -------------


def status_request(name=MODEL, version=None):
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return request


def test_model_status(target: Target, model_stub):
    from tensorflow_serving.apis import get_model_status_pb2

    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    response = model_stub.GetModelStatus(status_request(), timeout=TIMEOUT)
    by_version = {entry.version: entry for entry in response.model_version_status}
    assert set(by_version) == {1, 2}
    for entry in by_version.values():
        assert entry.state == available
        assert entry.status.error_code == 0  # tensorflow.error.OK
        assert entry.status.error_message == ""
    (entry,) = model_stub.GetModelStatus(
        status_request(version=1), timeout=TIMEOUT
    ).model_version_status
    assert (entry.version, entry.state) == (1, available)


def test_model_status_errors(target: Target, model_stub):
    assert_rpc_error(
        lambda: model_stub.GetModelStatus(status_request("no-such-model"), timeout=TIMEOUT),
        "NOT_FOUND",
        r"^Could not find any versions of model no-such-model$",
    )
    assert_rpc_error(
        lambda: model_stub.GetModelStatus(status_request(version=99), timeout=TIMEOUT),
        "NOT_FOUND",
        rf"^Could not find version 99 of model {MODEL}$",
    )


def test_reload_config_needs_a_model_config_list(target: Target, model_stub):
    """An empty ModelServerConfig is refused before anything changes, so this is safe against
    any server (model_service_impl.cc HandleReloadConfigRequest)."""
    from tensorflow_serving.apis import model_management_pb2

    assert_rpc_error(
        lambda: model_stub.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(), timeout=TIMEOUT
        ),
        "INVALID_ARGUMENT",
        r"^ServerModelConfig type not supported by HandleReloadConfigRequest\. "
        r"Only ModelConfigList is currently supported$",
    )
