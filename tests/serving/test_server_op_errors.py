"""A failing TensorFlow op answers with the op's own message, not tf.function's preamble."""

from __future__ import annotations

import pytest

from serving.servable import _first_line


def test_a_failing_op_in_a_tf_function_reports_the_ops_message():
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def decode(data):
        return tf.map_fn(
            lambda encoded: tf.io.decode_png(encoded, channels=1), data,
            fn_output_signature=tf.uint8,
        )  # fmt: skip

    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        decode(tf.constant([b"not an image"]))
    assert caught.value.message.startswith("Graph execution error")
    assert _first_line(caught.value).startswith("Unknown image file format.")


def test_the_preamble_of_a_loaded_savedmodel_is_skipped():
    import tensorflow as tf

    # The text a signature of a loaded SavedModel raises (no stack traces there).
    message = (
        "Graph execution error:\n\nDetected at node map/while/DecodePng defined at (most recent "
        "call last):\n<stack traces unavailable>\nUnknown image file format. One of JPEG, PNG "
        "required.\n\t [[{{node map/while/DecodePng}}]] [Op:__inference_signature_wrapper_173]"
    )
    error = tf.errors.InvalidArgumentError(None, None, message)
    assert _first_line(error) == "Unknown image file format. One of JPEG, PNG required."
    plain = tf.errors.InvalidArgumentError(None, None, "Expected 2 dims\nsecond line")
    assert _first_line(plain) == "Expected 2 dims"
