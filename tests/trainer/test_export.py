"""The exported `serving_bytes` signature decodes every format it advertises like training does."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from trainer import export

pytestmark = pytest.mark.slow


def export_model(folder: Path, channels: int, max_pixels: int = export.MAX_IMAGE_PIXELS):
    """A fixed, untrained model over 16x16 images, exported with the real contract code."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, channels))
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(flat))
    images = np.zeros((2, 16, 16, channels), np.uint8)
    info = {"dataset": "synthetic"}
    export.write_saved_model(model, folder, "abcd", "probe", info, images, max_pixels=max_pixels)
    import tensorflow as tf

    return tf.saved_model.load(str(folder))


def encode(pixels: np.ndarray, image_format: str, mode: str) -> bytes:
    from PIL import Image

    stream = io.BytesIO()
    options = {"lossless": True} if image_format == "WEBP" else {}
    Image.fromarray(pixels).convert(mode).save(stream, image_format, **options)
    return stream.getvalue()


@pytest.mark.parametrize("channels", [1, 3])
def test_serving_bytes_decodes_png_jpeg_bmp_gif_webp_to_the_models_channels(
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
        for image_format in ("PNG", "BMP", "GIF", "JPEG", "WEBP")
        for source_mode in ("L", "RGB", "RGBA", "P")
        if not (image_format == "JPEG" and source_mode in ("RGBA", "P"))
        and not (image_format == "WEBP" and source_mode == "P")
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


# ---- the pixel cap: header sizes read in the graph, before any decoding ----------------------


def header_reader():
    import tensorflow as tf

    return tf.function(export.image_dimensions, input_signature=[tf.TensorSpec([], tf.string)])


def encoded_like_users_send(rng) -> list[tuple[str, bytes, tuple[int, int]]]:
    """Real files from Pillow in every format and flavour the decoders see, at odd sizes."""
    from PIL import Image

    flavours = [
        ("PNG", {}), ("PNG", {"bits": 16}), ("GIF", {}), ("BMP", {}), ("JPEG", {}),
        ("JPEG", {"progressive": True}), ("WEBP", {"lossless": True}), ("WEBP", {"quality": 70}),
        ("WEBP", {"quality": 70, "icc_profile": b"\0" * 128}),  # extended format: a VP8X chunk
    ]  # fmt: skip
    cases = []
    for image_format, options in flavours:
        for mode in ("L", "RGB", "RGBA"):
            if image_format == "JPEG" and mode == "RGBA":
                continue
            height, width = (int(size) for size in rng.integers(1, 400, 2))
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            image = Image.fromarray(pixels).convert(mode)
            if options.get("bits") == 16:
                image, options = image.convert("I;16"), {}
            stream = io.BytesIO()
            image.save(stream, image_format, **options)
            cases.append((f"{image_format} {mode} {options}", stream.getvalue(), (height, width)))
    return cases


def test_image_dimensions_reads_what_pillow_reads_in_every_format() -> None:
    import tensorflow as tf

    read = header_reader()
    cases = encoded_like_users_send(np.random.default_rng(1))
    assert any(data[12:16] == b"VP8X" for _, data, _ in cases)  # every WebP chunk kind is in
    assert any(data[12:16] == b"VP8L" for _, data, _ in cases)
    for name, data, size in cases:
        assert tuple(read(tf.constant(data)).numpy()) == size, name


def test_image_dimensions_of_top_down_bmp_short_and_unknown_input() -> None:
    import tensorflow as tf

    read = header_reader()
    bmp = bytearray(encode(np.zeros((5, 7), np.uint8), "BMP", "L"))
    bmp[22:26] = (-5).to_bytes(4, "little", signed=True)  # rows stored top-down
    assert tuple(read(tf.constant(bytes(bmp))).numpy()) == (5, 7)
    for data in (b"", b"\x89PNG", b"GIF8", b"not an image at all"):
        assert tuple(read(tf.constant(data)).numpy()) == (0, 0), data
    # A PNG cut inside its IHDR reads the missing bytes as zeros: a size it cannot exceed.
    cut = encode(np.zeros((300, 300), np.uint8), "PNG", "L")[:22]
    assert tuple(read(tf.constant(cut)).numpy()) == (0, 300)


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR declaring `width` x `height` gray pixels, and nothing after."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    crc = zlib.crc32(b"IHDR" + ihdr)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", crc)


def test_serving_bytes_refuses_images_over_the_pixel_limit_before_decoding(tmp_path: Path) -> None:
    import tensorflow as tf

    limit = 24 * 24
    loaded = export_model(tmp_path / "model", 1, max_pixels=limit)
    bytes_signature = loaded.signatures["serving_bytes"]
    info = json.loads((tmp_path / "model" / "assets.extra" / "model_info.json").read_text())
    assert info["max_image_pixels"] == limit
    rng = np.random.default_rng(2)
    for image_format in ("PNG", "GIF", "BMP", "JPEG", "WEBP"):
        at_limit = rng.integers(0, 256, (24, 24), dtype=np.uint8)
        over = rng.integers(0, 256, (24, 25), dtype=np.uint8)
        ok = bytes_signature(image_bytes=tf.constant([encode(at_limit, image_format, "L")]))
        assert ok["probabilities"].shape == (1, 4), image_format
        with pytest.raises(tf.errors.InvalidArgumentError, match="more than the 576 per image"):
            bytes_signature(image_bytes=tf.constant([encode(over, image_format, "L")]))
    # One image over the limit refuses the batch, as any undecodable image does.
    both = [encode(at_limit, "PNG", "L"), encode(over, "PNG", "L")]
    with pytest.raises(tf.errors.InvalidArgumentError, match="declares 25x24 pixels"):
        bytes_signature(image_bytes=tf.constant(both))
    # A header alone is enough to refuse: the pixel data is never read.
    with pytest.raises(tf.errors.InvalidArgumentError, match="declares 20000x20000 pixels"):
        bytes_signature(image_bytes=tf.constant([png_header(20000, 20000)]))
