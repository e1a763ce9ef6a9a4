"""SavedModel export following the contract in `common.contract` (and DESIGN.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from common import contract

# Enough warmup records to trace both batch sizes TF Serving sees most, few enough to load fast.
WARMUP_RECORDS = 5

# The most pixels `serving_bytes` decodes per image, read from the image's header before any
# decoding, so a "decompression bomb" costs the server nothing more than the header read.
MAX_IMAGE_PIXELS = contract.MAX_IMAGE_PIXELS
# How much of an encoded image `image_dimensions` reads: every header field it uses is in it.
HEADER_BYTES = 32


def warmup_images(images: np.ndarray, labels: np.ndarray, count: int = 16) -> np.ndarray:
    """A few real test images, one per class first, so warmup covers varied inputs."""
    chosen: list[int] = []
    for label in np.unique(labels):
        chosen.append(int(np.flatnonzero(labels == label)[0]))
        if len(chosen) == count:
            break
    chosen += [index for index in range(len(labels)) if index not in chosen][: count - len(chosen)]
    return images[np.array(chosen[:count], np.int64)]


def model_info(
    dataset, model_kind: str, metrics: dict, parameters: dict, versions: dict, num_parameters: int
) -> dict:
    """What `assets.extra/model_info.json` says about a published version."""
    height, width, channels = dataset.input_shape
    return {
        "dataset": dataset.name,
        "class_names": list(dataset.class_names),
        "input_shape": [height, width, channels],
        "input_dtype": "uint8",
        "signatures": {
            contract.SERVING_DEFAULT: {"inputs": {contract.IMAGES_INPUT: "uint8 [-1, H, W, C]"}},
            contract.SERVING_BYTES: {"inputs": {contract.IMAGE_BYTES_INPUT: "string [-1]"}},
            "outputs": {
                contract.PROBABILITIES: "float32 [-1, K]",
                contract.CLASS_IDS: "int64 [-1]",
                contract.CLASSES: "string [-1]",
            },
        },
        "model": model_kind,
        "num_parameters": num_parameters,
        "metrics": {
            key: metrics[key]
            for key in ("test_accuracy", "test_loss", "test_examples", "per_class")
            if key in metrics
        },
        "training": parameters,
        "library_versions": versions,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def image_dimensions(encoded):
    """Graph code: int64 [..., 2], the (height, width) each encoded image's header declares.

    Reads the fields TensorFlow's own decoders size their buffers by: PNG's IHDR, GIF's logical
    screen, BMP's BITMAPINFOHEADER (absolute values: a negative height is a top-down BMP),
    JPEG's start-of-frame (`tf.io.extract_jpeg_shape`, which parses markers only) and WebP's
    VP8/VP8L/VP8X chunk. Anything else is (0, 0): `tf.io.decode_image` refuses it anyway.
    Works on a whole batch at once (a few dozen ops per batch, not per image), JPEG aside.
    """
    import tensorflow as tf

    flat = tf.reshape(encoded, [-1])
    head = tf.strings.substr(flat, 0, HEADER_BYTES)  # shorter strings come back shorter
    padded = tf.strings.join([head, tf.constant(b"\0" * HEADER_BYTES)])
    raw = tf.io.decode_raw(tf.strings.substr(padded, 0, HEADER_BYTES), tf.uint8)  # [N, 32]
    byte = tf.cast(raw, tf.int64)

    def starts(offset: int, magic: bytes):
        expected = tf.constant(list(magic), tf.uint8)
        return tf.reduce_all(tf.equal(raw[:, offset : offset + len(magic)], expected), axis=1)

    def little(offset: int, size: int):
        return sum(byte[:, offset + i] * (1 << (8 * i)) for i in range(size))

    def big(offset: int, size: int):
        return sum(byte[:, offset + i] * (1 << (8 * (size - 1 - i))) for i in range(size))

    def signed32(value):
        return tf.abs(tf.where(value >= 1 << 31, value - (1 << 32), value))

    def bits(value, shift: int, count: int):
        return tf.bitwise.bitwise_and(tf.bitwise.right_shift(value, shift), (1 << count) - 1)

    def jpeg(element):
        return tf.cond(
            tf.strings.substr(element, 0, 3) == b"\xff\xd8\xff",
            lambda: tf.cast(tf.io.extract_jpeg_shape(element)[:2], tf.int64),
            lambda: tf.zeros([2], tf.int64),
        )

    vp8l_bits = little(21, 4)  # 14 bits width - 1, then 14 bits height - 1
    candidates = [  # (is this format, height, width), first match wins
        (starts(0, b"\x89PNG\r\n\x1a\n"), big(20, 4), big(16, 4)),
        (starts(0, b"GIF"), little(8, 2), little(6, 2)),
        (starts(0, b"BM"), signed32(little(22, 4)), signed32(little(18, 4))),
        (
            starts(0, b"RIFF") & starts(8, b"WEBPVP8X"),
            little(27, 3) + 1,
            little(24, 3) + 1,
        ),
        (
            starts(0, b"RIFF") & starts(8, b"WEBPVP8L"),
            bits(vp8l_bits, 14, 14) + 1,
            bits(vp8l_bits, 0, 14) + 1,
        ),
        (
            starts(0, b"RIFF") & starts(8, b"WEBPVP8 "),
            bits(little(28, 2), 0, 14),  # the top two bits are a scaling hint
            bits(little(26, 2), 0, 14),
        ),
    ]
    is_jpeg = starts(0, b"\xff\xd8\xff")
    dimensions = tf.cond(  # one JPEG parse per JPEG image, nothing for a batch without one
        tf.reduce_any(is_jpeg),
        lambda: tf.map_fn(jpeg, flat, fn_output_signature=tf.TensorSpec([2], tf.int64)),
        lambda: tf.zeros([tf.shape(flat)[0], 2], tf.int64),
    )
    for matches, height, width in reversed(candidates):
        dimensions = tf.where(matches[:, None], tf.stack([height, width], axis=1), dimensions)
    return tf.reshape(dimensions, tf.concat([tf.shape(encoded), [2]], axis=0))


def check_pixels(encoded, max_pixels: int):
    """Graph code: an op that fails with INVALID_ARGUMENT when any image of the batch
    `encoded` declares more than `max_pixels`; the message names the first such image's size
    (formatted only then)."""
    import tensorflow as tf

    dimensions = tf.reshape(image_dimensions(encoded), [-1, 2])
    over = dimensions[:, 0] * dimensions[:, 1] > max_pixels

    def refuse():
        first = dimensions[tf.argmax(tf.cast(over, tf.int32))]
        message = tf.strings.format(
            "image too large to decode: its header declares {}x{} pixels, more than the "
            f"{max_pixels:,} per image that this model decodes (downscale it before sending it)",
            (first[1], first[0]),
        )
        with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
            return tf.constant(False)

    return tf.cond(tf.reduce_any(over), refuse, lambda: tf.constant(True), name="check_pixels")


def write_saved_model(
    model,
    folder: Path,
    class_names: Sequence[str],
    model_name: str,
    info: dict,
    warmup: np.ndarray,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> None:
    """Export `model` with both signatures into `folder`, plus assets.extra/.

    The model takes float pixels 0..255; the signatures take uint8 pixels or encoded images
    and cast, so every client sends the same bytes it would have fed the training pipeline.
    `serving_bytes` refuses an image whose header declares more than `max_pixels` pixels
    before decoding it.
    """
    import keras
    import tensorflow as tf

    height, width, channels = (int(size) for size in model.input_shape[1:])
    names = [str(name) for name in class_names]

    def outputs(probabilities):
        class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            contract.PROBABILITIES: tf.cast(probabilities, tf.float32),
            contract.CLASS_IDS: class_ids,
            contract.CLASSES: tf.gather(tf.constant(names), class_ids),
        }

    def classify_pixels(images):
        return outputs(model(tf.cast(images, tf.float32), training=False))

    def decode_native(encoded):
        # TensorFlow's BMP, GIF and WebP decoders refuse channels=1, so decode those as they
        # are and convert as Pillow does in training: alpha dropped, gray by ITU-R 601 luma.
        image = tf.io.decode_image(encoded, expand_animations=False)
        have = tf.shape(image)[-1]
        if channels == 1:
            return tf.cond(
                have >= 3,
                lambda: tf.image.rgb_to_grayscale(image[..., :3]),
                lambda: image[..., :1],
            )
        return tf.cond(
            have >= 3,
            lambda: image[..., :3],
            lambda: tf.image.grayscale_to_rgb(image[..., :1]),
        )

    def decode(encoded):
        if channels in (1, 3):
            header = tf.strings.substr(encoded, 0, 4)
            native = tf.reduce_any(
                [
                    tf.strings.substr(header, 0, 2) == b"BM",
                    tf.strings.substr(header, 0, 3) == b"GIF",
                    header == b"RIFF",  # WebP
                ]
            )
            image = tf.cond(
                native,
                lambda: decode_native(encoded),
                lambda: tf.io.decode_image(encoded, channels=channels, expand_animations=False),
            )
        else:
            image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
        image = tf.ensure_shape(image, (None, None, channels))
        # Antialiased bilinear, like Pillow's resize that prepared the training images, so
        # large inputs are averaged rather than sampled. Same-size images keep their pixels.
        image = tf.image.resize(image, (height, width), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    def classify_bytes(image_bytes):
        # Every header of the batch is checked before the first image is decoded.
        with tf.control_dependencies([check_pixels(image_bytes, max_pixels)]):
            image_bytes = tf.identity(image_bytes)
        pixels = tf.map_fn(
            decode,
            image_bytes,
            fn_output_signature=tf.TensorSpec((height, width, channels), tf.uint8),
        )
        return classify_pixels(pixels)

    archive = keras.export.ExportArchive()
    archive.track(model)
    images_spec = tf.TensorSpec((None, height, width, channels), tf.uint8, contract.IMAGES_INPUT)
    bytes_spec = tf.TensorSpec((None,), tf.string, contract.IMAGE_BYTES_INPUT)
    # The signatures' input keys come from the spec names (and match the parameter names).
    archive.add_endpoint(contract.SERVING_DEFAULT, classify_pixels, [images_spec])
    archive.add_endpoint(contract.SERVING_BYTES, classify_bytes, [bytes_spec])
    archive.write_out(str(folder), verbose=False)

    extra = folder / contract.ASSETS_EXTRA
    extra.mkdir(exist_ok=True)
    (folder / "assets").mkdir(exist_ok=True)
    write_warmup(extra / contract.WARMUP_FILE, model_name, warmup)
    info = {**info, "max_image_pixels": max_pixels}
    (extra / contract.MODEL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def write_warmup(path: Path, model_name: str, images: np.ndarray) -> None:
    """TF Serving warmup: PredictionLog records of real images, batch sizes 1, 2, 4, ..."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in range(WARMUP_RECORDS):
            batch = images[: min(len(images), 2**record)]
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = contract.SERVING_DEFAULT
            tensor = request.inputs[contract.IMAGES_INPUT]
            tensor.dtype = tf.uint8.as_datatype_enum
            for size in batch.shape:
                tensor.tensor_shape.dim.add().size = int(size)
            # Packed bytes, as gRPC clients send them (not one repeated int per pixel).
            tensor.tensor_content = np.ascontiguousarray(batch, np.uint8).tobytes()
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def check_complete(folder: Path) -> None:
    """Raise unless `folder` holds everything a version needs (run before it becomes visible)."""
    required = [
        folder / "saved_model.pb",
        folder / "variables" / "variables.index",
        folder / contract.ASSETS_EXTRA / contract.WARMUP_FILE,
        folder / contract.ASSETS_EXTRA / contract.MODEL_INFO_FILE,
    ]
    missing = [str(path.relative_to(folder)) for path in required if not path.is_file()]
    if missing or not any((folder / "variables").glob("variables.data-*")):
        raise RuntimeError(
            f"export incomplete, missing {missing or ['variables/variables.data-*']}"
        )
