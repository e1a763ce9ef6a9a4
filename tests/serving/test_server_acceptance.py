"""Issue 3's acceptance: serving a trainer-published model over REST and gRPC.

The served probabilities must equal what the SavedModel computes in-process (to float32
rounding) for the same uint8 images, on both transports and on both signatures.
"""

from __future__ import annotations

import base64
import io

import grpc
import numpy as np
import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def in_process(published_model, test_digits):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(published_model.version_dir(1)))
    outputs = loaded.signatures["serving_default"](images=tf.constant(test_digits))
    return {name: value.numpy() for name, value in outputs.items()}


def test_status_reports_the_newest_version_available(served_model, published_model):
    reply = requests.get(f"{served_model.rest_url}/v1/models/{published_model.name}", timeout=10)
    assert reply.status_code == 200
    newest = max(int(p.name) for p in published_model.base_path.iterdir() if p.name.isdigit())
    (status,) = reply.json()["model_version_status"]
    assert status == {
        "version": str(newest),
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }


def test_rest_predict_matches_the_savedmodel(
    served_model, published_model, in_process, test_digits
):
    url = f"{served_model.rest_url}/v1/models/{published_model.name}:predict"
    reply = requests.post(url, json={"instances": test_digits.tolist()}, timeout=60)
    assert reply.status_code == 200, reply.text[:500]
    predictions = reply.json()["predictions"]
    probabilities = np.array([p["probabilities"] for p in predictions], dtype=np.float32)
    np.testing.assert_allclose(probabilities, in_process["probabilities"], rtol=1e-6, atol=1e-7)
    assert [p["class_ids"] for p in predictions] == in_process["class_ids"].tolist()
    assert [p["classes"] for p in predictions] == [c.decode() for c in in_process["classes"]]


def test_grpc_predict_matches_the_savedmodel(
    served_model, published_model, in_process, test_digits
):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = published_model.name
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(test_digits))
    with grpc.insecure_channel(served_model.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=60)
    assert response.model_spec.signature_name == "serving_default"
    probabilities = response.outputs["probabilities"]
    # Stock TF Serving answers with typed fields (AsProtoField), never tensor_content.
    assert not probabilities.tensor_content
    assert len(probabilities.float_val) == probabilities.tensor_shape.dim[0].size * 10
    np.testing.assert_allclose(
        tf.make_ndarray(probabilities), in_process["probabilities"], rtol=1e-6, atol=1e-7
    )
    assert (
        tf.make_ndarray(response.outputs["class_ids"]).tolist() == in_process["class_ids"].tolist()
    )
    assert list(response.outputs["classes"].string_val) == list(in_process["classes"])


def test_png_bytes_signature_agrees(served_model, published_model, in_process, test_digits):
    from PIL import Image

    encoded = []
    for image in test_digits[:4]:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0]).save(buffer, format="PNG")
        encoded.append({"b64": base64.b64encode(buffer.getvalue()).decode()})
    body = {"signature_name": "serving_bytes", "instances": encoded}
    url = f"{served_model.rest_url}/v1/models/{published_model.name}:predict"
    reply = requests.post(url, json=body, timeout=60)
    assert reply.status_code == 200, reply.text[:500]
    probabilities = np.array([p["probabilities"] for p in reply.json()["predictions"]])
    np.testing.assert_allclose(probabilities, in_process["probabilities"][:4], atol=1e-6)
