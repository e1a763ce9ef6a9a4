"""Write the model repository the conformance suite runs against.

    python -m tests.conformance.make_repository DIR [--mnist-dir PATH] [--config-base-path /models]

DIR receives:
- `mnist/1/` and `mnist/2/`: two small contract-following SavedModels (DESIGN.md, "The
  contract"): `serving_default` takes uint8 `images` [-1, 28, 28, 1], `serving_bytes` takes
  encoded PNG/JPEG `image_bytes` [-1]; both answer `probabilities`, `class_ids`, `classes`. Each
  version has `assets.extra/tf_serving_warmup_requests` and `assets.extra/model_info.json`. The
  two versions differ (other seed, other training), so routing to one or the other is visible.
- `models.config`: a ModelServerConfig for `mnist` with `latest { num_versions: 2 }` and labels
  `stable` -> 1, `canary` -> 2. Its base path is `<config base path>/mnist`: DIR itself by
  default, `--config-base-path /models` when DIR is mounted at /models in a container.
- `expectations.json`: sample images (base64 raw uint8 and PNG) and, per version, the outputs
  the exported signature computes for them, so the suite can check served numbers.

With --mnist-dir (the four IDX files), each version trains one short epoch on a few hundred real
digits and the samples are real test digits; without it the weights stay at their seeded
initialisation and the samples are seeded noise. Either way it takes a few seconds.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import sys
from pathlib import Path

import numpy as np

MODEL_NAME = "mnist"
VERSIONS = (1, 2)
LABELS = {"stable": 1, "canary": 2}
CLASS_NAMES = [str(digit) for digit in range(10)]
IMAGE_SHAPE = (28, 28, 1)
SAMPLE_COUNT = 8
TRAIN_COUNT = 400
CONFIG_FILE = "models.config"
EXPECTATIONS_FILE = "expectations.json"


def read_idx(path: Path) -> np.ndarray:
    """Read one (optionally gzipped) IDX file as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        data = stream.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def load_digits(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training images and labels (first TRAIN_COUNT) and sample test images."""

    def find(stem: str) -> Path:
        for candidate in (mnist_dir / f"{stem}.gz", mnist_dir / stem):
            if candidate.exists():
                return candidate
        raise ValueError(f"{stem}(.gz) not found in {mnist_dir}")

    train_images = read_idx(find("train-images-idx3-ubyte"))[:TRAIN_COUNT]
    train_labels = read_idx(find("train-labels-idx1-ubyte"))[:TRAIN_COUNT]
    test_images = read_idx(find("t10k-images-idx3-ubyte"))[:SAMPLE_COUNT]
    return train_images[..., None], train_labels.astype("int64"), test_images[..., None]


def build_version(version: int, digits, samples: np.ndarray, directory: Path) -> dict:
    """Train (or not), export one version to `directory`, return its expected outputs."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(version)
    model = keras.Sequential(
        [
            keras.layers.Input(shape=IMAGE_SHAPE),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(len(CLASS_NAMES), activation="softmax"),
        ]
    )
    if digits is not None:
        images, labels = digits
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(images / 255.0, labels, epochs=version, batch_size=50, verbose=0)

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

    def decode(encoded):
        image = tf.io.decode_image(encoded, channels=1, expand_animations=False)
        image = tf.image.resize(image, IMAGE_SHAPE[:2])
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(image_bytes):
        images = tf.map_fn(
            decode, image_bytes, fn_output_signature=tf.TensorSpec(IMAGE_SHAPE, tf.uint8)
        )
        return serve_images(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve_images)
    archive.add_endpoint("serving_bytes", serve_bytes)
    archive.write_out(str(directory), verbose=False)

    write_assets_extra(directory, version, samples, bool(digits is not None))
    outputs = serve_images(tf.constant(samples))
    return {
        "probabilities": outputs["probabilities"].numpy().tolist(),
        "class_ids": outputs["class_ids"].numpy().tolist(),
        "classes": [name.decode() for name in outputs["classes"].numpy()],
    }


def write_assets_extra(directory: Path, version: int, samples: np.ndarray, trained: bool) -> None:
    """Warmup records (what TF Serving replays before AVAILABLE) and model_info.json."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    extra = directory / "assets.extra"
    extra.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
        for batch in (samples[:1], samples):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = MODEL_NAME
            request.model_spec.signature_name = "serving_default"
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(batch))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    info = {
        "dataset": "mnist" if trained else "none (seeded initial weights)",
        "class_names": CLASS_NAMES,
        "input_shape": list(IMAGE_SHAPE),
        "version": version,
        "purpose": "conformance test model (tests/conformance/make_repository.py)",
    }
    (extra / "model_info.json").write_text(json.dumps(info, indent=2) + "\n")


def model_config_text(base_path: str) -> str:
    labels = "".join(
        f'    version_labels {{ key: "{label}" value: {version} }}\n'
        for label, version in LABELS.items()
    )
    return (
        "# Written by tests/conformance/make_repository.py.\n"
        "model_config_list {\n"
        "  config {\n"
        f'    name: "{MODEL_NAME}"\n'
        f'    base_path: "{base_path}/{MODEL_NAME}"\n'
        '    model_platform: "tensorflow"\n'
        "    model_version_policy { latest { num_versions: 2 } }\n"
        f"{labels}"
        "  }\n"
        "}\n"
    )


def make_repository(directory: Path, mnist_dir: Path | None, config_base_path: str | None) -> None:
    # Everything that can be wrong with the arguments is checked before TensorFlow loads.
    for version in VERSIONS:
        if (directory / MODEL_NAME / str(version)).exists():
            raise ValueError(f"{directory / MODEL_NAME / str(version)} already exists")
    if mnist_dir is not None:
        if not mnist_dir.is_dir():
            raise ValueError(f"--mnist-dir {mnist_dir} is not a directory")
        train_images, train_labels, samples = load_digits(mnist_dir)
        digits = (train_images, train_labels)
    else:
        samples = np.random.default_rng(0).integers(
            0, 256, size=(SAMPLE_COUNT, *IMAGE_SHAPE), dtype=np.uint8
        )
        digits = None

    import tensorflow as tf

    directory.mkdir(parents=True, exist_ok=True)
    expected = {}
    for version in VERSIONS:
        target = directory / MODEL_NAME / str(version)
        # Stage under a non-integer name, then rename: a server polling DIR never sees half a
        # version (the publishing rule of DESIGN.md).
        staging = directory / MODEL_NAME / f".staging-{version}"
        expected[str(version)] = build_version(version, digits, samples, staging)
        staging.rename(target)

    pngs = [base64.b64encode(tf.io.encode_png(image).numpy()).decode() for image in samples]
    expectations = {
        "model_name": MODEL_NAME,
        "labels": LABELS,
        "class_names": CLASS_NAMES,
        "sample_shape": list(samples.shape),
        "samples_uint8_b64": base64.b64encode(samples.tobytes()).decode(),
        "samples_png_b64": pngs,
        "outputs": expected,
    }
    (directory / EXPECTATIONS_FILE).write_text(json.dumps(expectations) + "\n")
    base_path = config_base_path.rstrip("/") if config_base_path else str(directory.resolve())
    (directory / CONFIG_FILE).write_text(model_config_text(base_path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.conformance.make_repository",
        description="Write the two-version mnist model repository and models.config that the "
        "conformance suite expects a server to serve.",
    )
    parser.add_argument("directory", type=Path, help="where to write (created if missing)")
    parser.add_argument(
        "--mnist-dir",
        type=Path,
        help="folder with the four MNIST IDX files; train briefly on real digits",
    )
    parser.add_argument(
        "--config-base-path",
        help="base path written into models.config (default: DIR; /models for Docker)",
    )
    args = parser.parse_args(argv)
    try:
        make_repository(args.directory, args.mnist_dir, args.config_base_path)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.directory}/{MODEL_NAME}/{{1,2}}, {CONFIG_FILE}, {EXPECTATIONS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
