"""Small models with the shapes of the ones TF Serving's own server suite serves, made here.

`python -m tests.conformance.suite_models DIR` writes (all versions zero-padded, as in TF
Serving's test data):

- `half_plus_two/00000123`: a TF1 graph SavedModel, x float [-1, 1] -> y = x / 2 + 2 (a and b
  are variables), with `serving_default` (predict), `classify_x_to_y` and `regress_x_to_y`
  (both read x from a serialized tf.Example in `inputs`).
- `half_plus_three/00000123`: the same graph with y = x / 2 + 3, whose signature declares x
  as a scalar (rank 0) though the placeholder is [-1, 1], as TF Serving's
  saved_model_half_plus_three does.
- `tf2/00000123`: `tf.saved_model.save` of a tf.function with an unknown-rank input
  (y = v1 * v2 * x = 6 x) as `serving_default`, and `constant`, whose output is a scalar.
- `tflite/00000123/model.tflite`: y = x / 2 + 2 converted to TF Lite, without SignatureDefs.

`models.json` records, for the TF Lite model, the tensor names TensorFlow's own interpreter
reports (TF Serving keys its generated signature by them).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VERSION = "00000123"


def half_plus(directory: Path, addend: float, scalar_signature: bool) -> None:
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(addend, name="b")
        x = v1.placeholder(tf.float32, [None, 1], name="x")
        y = tf.add(a * x, b, name="y")
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        parsed = v1.parse_example(serialized, {"x": v1.FixedLenFeature([1], tf.float32)})
        from_example = tf.add(a * parsed["x"], b, name="y_from_example")
        session.run(v1.global_variables_initializer())

        x_info = v1.saved_model.build_tensor_info(x)
        if scalar_signature:
            x_info.tensor_shape.Clear()  # declared rank 0; the graph takes any shape
        predict = v1.saved_model.build_signature_def(
            inputs={"x": x_info},
            outputs={"y": v1.saved_model.build_tensor_info(y)},
            method_name="tensorflow/serving/predict",
        )
        signatures = {"serving_default": predict}
        if not scalar_signature:
            example_input = {"inputs": v1.saved_model.build_tensor_info(serialized)}
            signatures["classify_x_to_y"] = v1.saved_model.build_signature_def(
                inputs=example_input,
                outputs={"scores": v1.saved_model.build_tensor_info(from_example)},
                method_name="tensorflow/serving/classify",
            )
            signatures["regress_x_to_y"] = v1.saved_model.build_signature_def(
                inputs=example_input,
                outputs={"outputs": v1.saved_model.build_tensor_info(from_example)},
                method_name="tensorflow/serving/regress",
            )
        builder = v1.saved_model.Builder(str(directory / VERSION))
        builder.add_meta_graph_and_variables(
            session, ["serve"], signature_def_map=signatures, strip_default_attrs=True
        )
        builder.save()


def tf2_model(directory: Path) -> None:
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.v1 = tf.Variable(3.0)
    root.v2 = tf.Variable(2.0)
    root.f = tf.function(
        lambda x: {"y": root.v1 * root.v2 * x},
        input_signature=[tf.TensorSpec(None, tf.float32)],
    )
    root.g = tf.function(
        lambda x: {"y": tf.constant(1.0)}, input_signature=[tf.TensorSpec(None, tf.float32)]
    )
    tf.saved_model.save(
        root, str(directory / VERSION), signatures={"serving_default": root.f, "constant": root.g}
    )


def tflite_model(directory: Path) -> dict:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 1], tf.float32, name="x")])
    def half_plus_two(x):
        return x * 0.5 + 2.0

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [half_plus_two.get_concrete_function()], half_plus_two
    )
    model = converter.convert()
    folder = directory / VERSION
    folder.mkdir(parents=True)
    (folder / "model.tflite").write_bytes(model)
    interpreter = tf.lite.Interpreter(model_content=model)
    return {
        "inputs": [d["name"] for d in interpreter.get_input_details()],
        "outputs": [d["name"] for d in interpreter.get_output_details()],
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tests.conformance.suite_models DIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    root.mkdir(parents=True, exist_ok=True)
    half_plus(root / "half_plus_two", 2.0, scalar_signature=False)
    half_plus(root / "half_plus_three", 3.0, scalar_signature=True)
    tf2_model(root / "tf2")
    names = tflite_model(root / "tflite")
    (root / "models.json").write_text(json.dumps({"tflite": names}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
