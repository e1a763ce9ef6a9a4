"""The exported `serving_bytes` signature decodes every format it advertises like training does."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from trainer import export

pytestmark = pytest.mark.slow


def export_model(folder: Path, channels: int):
    """A fixed, untrained model over 16x16 images, exported with the real contract code."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, channels))
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(flat))
    images = np.zeros((2, 16, 16, channels), np.uint8)
    info = {"dataset": "synthetic"}
    export.write_saved_model(model, folder, "abcd", "probe", info, images)
    import tensorflow as tf

    return tf.saved_model.load(str(folder))


def encode(pixels: np.ndarray, image_format: str, mode: str) -> bytes:
    from PIL import Image

    stream = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(stream, image_format)
    return stream.getvalue()


@pytest.mark.parametrize("channels", [1, 3])
def test_serving_bytes_decodes_png_jpeg_bmp_gif_to_the_models_channels(
    tmp_path: Path, channels: int
) -> None:
    import tensorflow as tf
    from PIL import Image

    loaded = export_model(tmp_path / "model", channels)
    rng = np.random.default_rng(0)
    # Blocks of 4x4 pixels: smooth enough that JPEG keeps them, varied enough to tell apart.
    gray = np.kron(rng.integers(0, 256, (4, 4)), np.ones((4, 4))).astype(np.uint8)
    mode = "L" if channels == 1 else "RGB"
    expected = np.asarray(Image.fromarray(gray).convert(mode)).reshape(16, 16, channels)
    by_pixels = loaded.signatures["serving_default"](images=tf.constant(expected[np.newaxis]))
    cases = [
        (image_format, source_mode)
        for image_format in ("PNG", "BMP", "GIF", "JPEG")
        for source_mode in ("L", "RGB", "RGBA", "P")
        if not (image_format == "JPEG" and source_mode in ("RGBA", "P"))
    ]
    encoded = [encode(gray, image_format, source_mode) for image_format, source_mode in cases]
    by_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant(encoded))
    probabilities = by_bytes["probabilities"].numpy()
    for (image_format, source_mode), row in zip(cases, probabilities, strict=True):
        # JPEG is lossy, and so is Pillow's GIF encoder for colour sources (it quantizes).
        lossy = image_format == "JPEG" or (image_format == "GIF" and source_mode != "L")
        tolerance = 0.02 if lossy else 1e-6
        np.testing.assert_allclose(
            row, by_pixels["probabilities"].numpy()[0], atol=tolerance,
            err_msg=f"{image_format} {source_mode} into {channels} channel(s)",
        )  # fmt: skip


def test_serving_bytes_downscales_like_pillow_not_by_sampling(tmp_path: Path) -> None:
    import tensorflow as tf
    from PIL import Image

    loaded = export_model(tmp_path / "model", 1)
    # Stripes at 8x the input size, white where a plain bilinear sample lands (columns 3 and 4
    # of every 8): sampling sees white, averaging like Pillow's bilinear (which prepared the
    # training images) sees half white.
    stripes = np.zeros((128, 128), np.uint8)
    stripes[:, (np.arange(128) % 8 >= 2) & (np.arange(128) % 8 <= 5)] = 255
    resized = Image.fromarray(stripes).resize((16, 16), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized).reshape(1, 16, 16, 1)
    by_pixels = loaded.signatures["serving_default"](images=tf.constant(pixels))
    by_bytes = loaded.signatures["serving_bytes"](
        image_bytes=tf.constant([encode(stripes, "PNG", "L")])
    )
    np.testing.assert_allclose(
        by_bytes["probabilities"].numpy(), by_pixels["probabilities"].numpy(), atol=0.01
    )
