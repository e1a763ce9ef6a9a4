"""Small SavedModels for the server tests: a contract-following Keras export and a TF1 graph."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import requests

IMAGE_SHAPE = (28, 28, 1)
CLASS_NAMES = [str(digit) for digit in range(10)]


def export_contract_model(directory: Path, seed: int, warmup_images: np.ndarray | None = None):
    """Export an untrained (seeded) classifier with the contract's signatures to `directory`.

    Returns the in-process `serving_default` function, to compute expected outputs.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.layers.Input(shape=IMAGE_SHAPE),
            keras.layers.Flatten(),
            keras.layers.Dense(len(CLASS_NAMES), activation="softmax"),
        ]
    )
    class_names = tf.constant(CLASS_NAMES)

    @tf.function(input_signature=[tf.TensorSpec([None, *IMAGE_SHAPE], tf.uint8, name="images")])
    def serve_images(images):
        probabilities = model(tf.cast(images, tf.float32) / 255.0, training=False)
        class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            "probabilities": probabilities,
            "class_ids": class_ids,
            "classes": tf.gather(class_names, class_ids),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(image_bytes):
        def decode(encoded):
            image = tf.io.decode_png(encoded, channels=1)
            return tf.ensure_shape(image, IMAGE_SHAPE)

        images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.uint8)
        return serve_images(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve_images)
    archive.add_endpoint("serving_bytes", serve_bytes)
    archive.write_out(str(directory), verbose=False)
    if warmup_images is not None:
        write_warmup(directory, {"images": warmup_images})
    return serve_images


def write_warmup(directory: Path, inputs: dict[str, np.ndarray], signature: str = "") -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    extra = directory / "assets.extra"
    extra.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
        request = predict_pb2.PredictRequest()
        request.model_spec.signature_name = signature
        for name, array in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        writer.write(log.SerializeToString())


def export_half_plus_two(directory: Path) -> None:
    """A TF1 graph SavedModel like TF Serving's own test model: y = 0.5 x + 2.

    Signatures: `serving_default` (predict, x -> y), `classify_x_to_y` and `regress_x_to_y`
    (serialized tf.Examples with a float feature "x").
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        examples = v1.placeholder(tf.string, [None], name="tf_example")
        parsed = v1.io.parse_example(examples, {"x": v1.io.FixedLenFeature([1], tf.float32)})
        x = v1.placeholder(tf.float32, [None], name="x")
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(2.0, name="b")
        y = tf.add(a * x, b, name="y")
        y_from_examples = tf.add(a * parsed["x"], b, name="y_from_examples")
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(directory))
            signatures = {
                "serving_default": v1.saved_model.predict_signature_def({"x": x}, {"y": y}),
                "classify_x_to_y": v1.saved_model.classification_signature_def(
                    examples, None, y_from_examples
                ),
                "regress_x_to_y": v1.saved_model.regression_signature_def(
                    examples, y_from_examples
                ),
            }
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map=signatures, strip_default_attrs=True
            )
            builder.save()


def publish(source: Path, base_path: Path, version: int) -> Path:
    """Copy a version in the way the trainer publishes: stage under a hidden name, rename."""
    staging = base_path / f".staging-{version}"
    shutil.copytree(source, staging)
    target = base_path / str(version)
    staging.rename(target)
    return target


def version_states(rest_url: str, model: str) -> dict[int, dict]:
    reply = requests.get(f"{rest_url}/v1/models/{model}", timeout=10)
    reply.raise_for_status()
    return {int(s["version"]): s for s in reply.json()["model_version_status"]}


def wait_for(condition, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def predict_rest(rest_url: str, model: str, body: dict, route: str = "") -> requests.Response:
    return requests.post(
        f"{rest_url}/v1/models/{model}{route}:predict", data=json.dumps(body), timeout=60
    )
