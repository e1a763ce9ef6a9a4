"""client.preprocess: every format and mode, EXIF, transparency, bombs, corrupt files, MNIST."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from client_fixtures import load_mnist_test, png_header_only, render_dark_on_light
from PIL import Image, ImageDraw

from client.preprocess import (
    ImageError,
    glyph_check,
    glyph_checks,
    list_images,
    load_image,
    mnist_normalize,
)


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def drawn_digit(size: int = 28) -> np.ndarray:
    """A light "1"-like bar on black, MNIST style: 28x28 light-on-dark."""
    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).rectangle([12, 4, 15, 23], fill=255)
    return np.asarray(image)


def load28(source, mode: str = "none", channels: int = 1) -> np.ndarray:
    return load_image(source, height=28, width=28, channels=channels, mode=mode)


# -- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("image_format", ["PNG", "BMP", "GIF", "TIFF"])
def test_lossless_formats_round_trip_exactly(image_format: str) -> None:
    digit = drawn_digit()
    pixels = load28(encode(Image.fromarray(digit), image_format), mode="none")
    assert pixels.dtype == np.uint8 and pixels.shape == (28, 28, 1)
    np.testing.assert_array_equal(pixels[..., 0], digit)


@pytest.mark.parametrize("image_format", ["JPEG", "WEBP"])
def test_lossy_formats_stay_close(image_format: str) -> None:
    digit = drawn_digit()
    pixels = load28(encode(Image.fromarray(digit), image_format, quality=95), mode="none")
    assert np.abs(pixels[..., 0].astype(int) - digit).mean() < 4


def test_reads_paths_as_well_as_bytes(tmp_path: Path) -> None:
    path = tmp_path / "digit.png"
    Image.fromarray(drawn_digit()).save(path)
    np.testing.assert_array_equal(load28(path), load28(path.read_bytes()))


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("L", (28, 28), 0), Image.new("L", (28, 28), 255)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert load28(data).max() == 0


def test_none_resizes_to_the_model_input() -> None:
    big = Image.fromarray(drawn_digit()).resize((112, 84))
    assert load_image(encode(big, "PNG"), height=20, width=24, channels=1, mode="none").shape == (
        20,
        24,
        1,
    )


# -- modes -------------------------------------------------------------------------------------


def test_rgb_becomes_luminance_for_one_channel_models_and_stays_rgb_for_three() -> None:
    image = Image.new("RGB", (28, 28), (255, 0, 0))
    gray = load28(encode(image, "PNG"))
    assert gray.shape == (28, 28, 1) and int(gray[0, 0, 0]) == 76  # ITU-R 601-2 luma of red
    color = load28(encode(image, "PNG"), channels=3)
    assert color.shape == (28, 28, 3) and tuple(color[0, 0]) == (255, 0, 0)


def test_grayscale_is_replicated_for_three_channel_models() -> None:
    color = load28(encode(Image.fromarray(drawn_digit()), "PNG"), channels=3)
    np.testing.assert_array_equal(color[..., 0], drawn_digit())
    np.testing.assert_array_equal(color[..., 0], color[..., 2])


def test_rgba_transparency_is_flattened_onto_white() -> None:
    image = Image.new("RGBA", (28, 28), (0, 0, 0, 0))  # fully transparent black
    ImageDraw.Draw(image).rectangle([0, 0, 13, 27], fill=(0, 0, 0, 255))  # opaque black half
    pixels = load28(encode(image, "PNG"))[..., 0]
    assert (pixels[:, :14] == 0).all() and (pixels[:, 14:] == 255).all()


def test_half_transparent_ink_blends_with_the_paper() -> None:
    pixels = load28(encode(Image.new("LA", (28, 28), (0, 128)), "PNG"))
    assert 120 <= int(pixels[0, 0, 0]) <= 135


def test_palette_with_transparency_flattens_the_transparent_index_to_white() -> None:
    image = Image.new("P", (28, 28), 0)
    image.putpalette([0, 0, 0, 200, 200, 200] + [0] * 762)
    ImageDraw.Draw(image).rectangle([0, 0, 27, 13], fill=1)
    pixels = load28(encode(image, "PNG", transparency=0))[..., 0]
    assert (pixels[:14] == 200).all() and (pixels[14:] == 255).all()


def test_palette_without_transparency_keeps_its_colours() -> None:
    image = Image.new("P", (28, 28), 1)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    assert tuple(load28(encode(image, "PNG"), channels=3)[5, 5]) == (0, 0, 255)


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits() -> None:
    values = np.zeros((28, 28), np.uint16)
    values[:, 14:] = 65535
    values[:14, :14] = 32896  # 128 * 257
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    data = encode(image, "PNG")
    pixels = load28(data)[..., 0]
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")
    assert int(pixels[0, 20]) == 255 and int(pixels[0, 0]) == 128 and int(pixels[20, 0]) == 0


def test_32_bit_integer_and_float_images_are_scaled_to_eight_bits() -> None:
    integers = Image.fromarray(np.full((28, 28), 65535, np.int32), "I")
    assert int(load28(encode(integers, "TIFF"))[0, 0, 0]) == 255
    floats = Image.fromarray(np.full((28, 28), 0.5, np.float32), "F")
    assert int(load28(encode(floats, "TIFF"))[0, 0, 0]) in (127, 128)


def test_cmyk_and_bilevel_images_convert() -> None:
    cyan = Image.new("CMYK", (28, 28), (255, 0, 0, 0))
    assert tuple(load28(encode(cyan, "JPEG", quality=100), channels=3)[3, 3]) == pytest.approx(
        (0, 255, 255), abs=3
    )
    bilevel = Image.fromarray(drawn_digit() > 0).convert("1")
    np.testing.assert_array_equal(load28(encode(bilevel, "PNG"))[..., 0], drawn_digit())


def test_exif_orientation_is_applied() -> None:
    # Stored 40 wide x 20 high, left half dark; orientation 6 means "rotate 90° clockwise to
    # display", which puts the stored left half on top.
    stored = Image.new("L", (40, 20), 255)
    ImageDraw.Draw(stored).rectangle([0, 0, 19, 19], fill=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    pixels = load_image(data, height=40, width=20, channels=1, mode="none")[..., 0]
    assert pixels[:18].mean() < 20 and pixels[22:].mean() > 235


# -- bad input ---------------------------------------------------------------------------------


def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(ImageError, match=r"^image too large: .*pixels \(limit \d+\)$"):
        load28(png_header_only(20000, 20000))


def test_pixel_limit_is_configurable_and_reports_the_size(monkeypatch) -> None:
    data = encode(Image.new("L", (300, 200), 255), "PNG")
    with pytest.raises(ImageError, match=r"^image too large: 300x200 pixels \(limit 50000\)$"):
        load_image(data, height=28, width=28, channels=1, max_pixels=50_000)
    monkeypatch.setenv("TFS_MAX_IMAGE_PIXELS", "5_000")
    with pytest.raises(ImageError, match=r"300x200 pixels \(limit 5000\)"):
        load28(data)
    monkeypatch.setenv("TFS_MAX_IMAGE_PIXELS", "60000")
    assert load28(data).shape == (28, 28, 1)
    monkeypatch.setenv("TFS_MAX_IMAGE_PIXELS", "many")
    with pytest.raises(ValueError, match="TFS_MAX_IMAGE_PIXELS must be a positive integer"):
        load28(data)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"hello, I am a text file\n", "not an image (cannot identify image file)"),
        (b"\x89PNG\r\n\x1a\n", "not an image (cannot identify image file)"),
    ],
)
def test_unreadable_content_gets_a_one_line_reason(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "looks-like.png"
    path.write_bytes(content)
    with pytest.raises(ImageError) as caught:
        load28(path)
    assert str(caught.value) == reason


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF", "BMP", "TIFF"])
def test_truncated_files_say_so(image_format: str) -> None:
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8))
    data = encode(noise, image_format)
    with pytest.raises(ImageError) as caught:
        load28(data[: len(data) // 2])
    assert str(caught.value) == "truncated image"


def test_corrupt_webp_gets_a_reason() -> None:
    data = encode(Image.fromarray(drawn_digit()), "WEBP")
    with pytest.raises(ImageError, match=r"^corrupt image \(.+\)$"):
        load28(data[: len(data) // 2])


def test_missing_files_and_folders_are_image_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"^file not found$"):
        load28(tmp_path / "missing.png")
    with pytest.raises(ImageError, match=r"^is a folder, not a file$"):
        load28(tmp_path)


def test_image_error_is_a_value_error_and_bad_arguments_are_not_image_errors() -> None:
    assert issubclass(ImageError, ValueError)
    data = encode(Image.fromarray(drawn_digit()), "PNG")
    for arguments in ({"mode": "fancy"}, {"channels": 2}, {"height": 0}):
        options = {"height": 28, "width": 28, "channels": 1, "mode": "none", **arguments}
        with pytest.raises(ValueError) as caught:
            load_image(data, **options)
        assert not isinstance(caught.value, ImageError)


# -- preprocessing modes -----------------------------------------------------------------------


def test_auto_leaves_model_ready_images_untouched() -> None:
    digit = drawn_digit()
    np.testing.assert_array_equal(
        load28(encode(Image.fromarray(digit), "PNG"), "auto")[..., 0], digit
    )


def test_mnist_mode_inverts_crops_scales_and_centres() -> None:
    # A dark 60x30 bar on light paper, far off-centre in a 300x200 image.
    page = Image.new("L", (300, 200), 230)
    ImageDraw.Draw(page).rectangle([240, 10, 269, 69], fill=20)
    for mode in ("mnist", "auto"):
        pixels = load28(encode(page, "PNG"), mode)[..., 0].astype(float)
        rows = np.flatnonzero(pixels.max(axis=1) > 64)
        columns = np.flatnonzero(pixels.max(axis=0) > 64)
        assert rows[-1] - rows[0] + 1 == 20  # longer side scaled to 20 of 28
        assert columns[-1] - columns[0] + 1 == 10  # aspect ratio kept
        assert pixels.max() == 255 and pixels[0, 0] == 0  # light ink on black
        total = pixels.sum()
        row_grid, column_grid = np.indices(pixels.shape)
        assert abs((pixels * row_grid).sum() / total - 14) <= 0.5
        assert abs((pixels * column_grid).sum() / total - 14) <= 0.5


def test_auto_leaves_colour_models_to_plain_resizing() -> None:
    page = Image.new("RGB", (100, 60), (250, 250, 240))
    ImageDraw.Draw(page).rectangle([70, 5, 89, 44], fill=(10, 20, 200))
    data = encode(page, "PNG")
    auto = load_image(data, height=30, width=50, channels=3, mode="auto")
    np.testing.assert_array_equal(
        auto, load_image(data, height=30, width=50, channels=3, mode="none")
    )
    mnist = load_image(data, height=28, width=28, channels=3, mode="mnist")
    assert mnist.shape == (28, 28, 3) and (mnist[..., 0] == mnist[..., 2]).all()


def test_mnist_mode_scales_the_box_to_other_input_sizes() -> None:
    page = Image.new("L", (100, 100), 255)
    ImageDraw.Draw(page).ellipse([20, 20, 79, 79], outline=0, width=6)
    pixels = load_image(encode(page, "PNG"), height=56, width=42, channels=1, mode="mnist")
    assert pixels.shape == (56, 42, 1)
    rows = np.flatnonzero(pixels[..., 0].max(axis=1) > 64)
    assert rows[-1] - rows[0] + 1 == 30  # 20/28 of the narrower 42 px side


def test_blank_pages_become_blank_inputs() -> None:
    assert load28(encode(Image.new("L", (200, 100), 240), "JPEG"), "mnist").max() == 0
    assert mnist_normalize(np.zeros((5, 5), np.uint8)).shape == (28, 28)


def test_ignores_faint_specks_far_from_the_ink() -> None:
    page = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(page).rectangle([80, 40, 99, 159], fill=0)
    ImageDraw.Draw(page).point([(5, 5), (190, 190)], fill=225)  # paper texture
    pixels = load28(encode(page, "PNG"), "mnist")[..., 0]
    rows = np.flatnonzero(pixels.max(axis=1) > 64)
    assert rows[-1] - rows[0] + 1 == 20


def test_real_mnist_digits_rendered_as_scans_round_trip(mnist_dir: Path) -> None:
    digits = load_mnist_test(mnist_dir, 200)[0]
    rng = np.random.default_rng(2026)
    correlations = []
    for digit in digits:
        restored = load28(render_dark_on_light(digit, rng), "auto")[..., 0]
        correlations.append(np.corrcoef(digit.ravel(), restored.ravel().astype(float))[0, 1])
    correlations = np.array(correlations)
    # Sub-pixel centring and JPEG noise cost a little; a wrong crop, scale or inversion would
    # drop these to near zero.
    assert np.median(correlations) > 0.95, np.median(correlations)
    assert np.percentile(correlations, 10) > 0.8, np.percentile(correlations, 10)


def test_mnist_mode_is_almost_the_identity_on_real_mnist(mnist_dir: Path) -> None:
    digits = load_mnist_test(mnist_dir, 100)[0]
    same = [
        np.corrcoef(digit.ravel(), mnist_normalize(digit).ravel().astype(float))[0, 1]
        for digit in digits
    ]
    assert np.median(same) > 0.99


# -- listing folders ---------------------------------------------------------------------------


def test_list_images_is_recursive_sorted_and_drops_only_hidden_files(tmp_path: Path) -> None:
    for name in [
        "b/2.png",
        "b/10.png",
        "a/z.jpg",
        "a/notes.txt",
        "a/scan.unknown",
        "top.PNG",
        ".hidden.png",
        "a/.DS_Store",
        ".git/objects/x.png",
        "a/Thumbs.db",
    ]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (tmp_path / "empty-folder").mkdir()
    listed = [path.relative_to(tmp_path).as_posix() for path in list_images(tmp_path)]
    assert listed == ["a/notes.txt", "a/scan.unknown", "a/z.jpg", "b/10.png", "b/2.png", "top.PNG"]
    with pytest.raises(ValueError, match="not a folder"):
        list_images(tmp_path / "a" / "z.jpg")


def test_list_images_refuses_to_skip_a_folder_it_cannot_read(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.png").write_bytes(b"x")
    real_scandir = os.scandir

    def scandir(path):  # root may read anything, so deny one folder the way the kernel would
        if Path(path) == tmp_path / "a":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(ValueError, match=r"cannot list .*/a: Permission denied"):
        list_images(tmp_path)


def test_png_exif_orientation_is_applied() -> None:
    # PNG keeps EXIF in an eXIf chunk: the fast path that skips images without orientation
    # data must still see it.
    stored = np.zeros((20, 40), np.uint8)
    stored[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(stored), "PNG", exif=exif.tobytes())
    upright = load_image(data, height=40, width=20, channels=1, mode="none")[..., 0]
    assert upright.shape == (40, 20)
    assert upright[:20].mean() > 200 and upright[20:].mean() < 50  # left half is now the top


def test_the_batch_glyph_check_judges_each_image_alone(mnist_dir: Path) -> None:
    # One union-find over the whole batch: parts must never join across images.
    images, _ = load_mnist_test(mnist_dir, 60)
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    specks = ((rng.random((8, 28, 28)) < 0.05) * 255).astype(np.uint8)
    blank, white = np.zeros((1, 28, 28), np.uint8), np.full((1, 28, 28), 255, np.uint8)
    batch = np.concatenate([images[:20], noise, specks, blank, white, images[20:]])
    rng.shuffle(batch)
    notes = glyph_checks(batch[..., None])
    assert notes == [glyph_check(image) for image in batch]
    assert sum(note is not None for note in notes) >= 18  # the noise, specks and blank pages
    assert any("separate marks" in (note or "") for note in notes)


# -- the plain-PNG path ------------------------------------------------------------------------


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk of a PNG."""
    chunks, position = [], 8
    while position < len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        start = position + 8
        chunks.append((data[position + 4 : start], data[start : start + length]))
        position += length + 12
    return chunks


def png_from_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    import zlib

    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, payload in chunks:
        crc = zlib.crc32(kind + payload).to_bytes(4, "big")
        out.append(len(payload).to_bytes(4, "big") + kind + payload + crc)
    return b"".join(out)


def pillow_reader(data: bytes, channels: int = 1) -> np.ndarray | str:
    """What Pillow's full PNG reader makes of `data` for load_image: pixels, or the reason."""
    from client import preprocess

    try:
        image = preprocess._decode_stream(io.BytesIO(data), preprocess.DEFAULT_MAX_PIXELS)
    except ImageError as error:
        return str(error)
    return np.asarray(image.convert("L" if channels == 1 else "RGB"))


def test_plain_pngs_decode_as_pillow_reads_them(mnist_dir: Path) -> None:
    from client import preprocess

    rng = np.random.default_rng(3)
    digits = load_mnist_test(mnist_dir, 50)[0]
    gray = [encode(Image.fromarray(image), "PNG") for image in digits]
    colour = encode(Image.fromarray(rng.integers(0, 256, (31, 17, 3), dtype=np.uint8)), "PNG")
    # Pillow writes one IDAT chunk; other encoders split the data over several.
    (header, idat, end) = png_chunks(gray[0])
    split = png_from_chunks([header, (b"IDAT", idat[1][:7]), (b"IDAT", idat[1][7:]), end])
    for data, channels in [*((g, 1) for g in gray), (colour, 3), (split, 1)]:
        image = preprocess._plain_png(data, preprocess.DEFAULT_MAX_PIXELS)
        assert image is not None, "the plain path declined a plain PNG"
        np.testing.assert_array_equal(np.asarray(image), pillow_reader(data, channels))
    pixels = load28(gray[0], mode="auto")[..., 0]
    np.testing.assert_array_equal(pixels, digits[0])


def test_plain_png_path_leaves_everything_else_to_pillow() -> None:
    from client import preprocess

    digit = Image.fromarray(drawn_digit())
    plain = encode(digit, "PNG")
    header, idat, end = png_chunks(plain)
    declined = {
        "text chunk": encode(digit, "PNG", pnginfo=_text_info()),
        "interlaced": _interlaced(plain),  # Pillow writes no interlaced PNGs
        "palette": encode(digit.convert("P"), "PNG"),
        "16-bit": encode(Image.fromarray(drawn_digit().astype(np.uint16) * 257), "PNG"),
        "grey with alpha": encode(digit.convert("LA"), "PNG"),
        "bad header checksum": plain[:29] + bytes([plain[29] ^ 1]) + plain[30:],
        "truncated data": png_from_chunks([header, (b"IDAT", idat[1][: len(idat[1]) // 2]), end]),
        "corrupt data": png_from_chunks([header, (b"IDAT", b"\x78\x9c" + b"\xff" * 40), end]),
        "no IEND": plain[:-12],
        "cut inside a chunk": plain[:-20],
        "chunk between IDATs": png_from_chunks([header, idat, (b"tEXt", b"a\x00b"), idat, end]),
    }
    for name, data in declined.items():
        assert preprocess._plain_png(data, preprocess.DEFAULT_MAX_PIXELS) is None, name
        try:
            ours: np.ndarray | str = load28(data, mode="none")[..., 0]
        except ImageError as error:
            ours = str(error)
        theirs = pillow_reader(data)
        if isinstance(theirs, str) or isinstance(ours, str):
            assert ours == theirs, name
        else:
            np.testing.assert_array_equal(ours, theirs, err_msg=name)
    # Over the pixel limit: declined, and Pillow's reader words the refusal.
    assert preprocess._plain_png(plain, 28 * 28 - 1) is None
    with pytest.raises(ImageError, match=r"^image too large: 28x28 pixels \(limit 783\)$"):
        load_image(plain, height=28, width=28, channels=1, max_pixels=28 * 28 - 1)


def _text_info():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "scanned")
    return info


def _interlaced(plain: bytes) -> bytes:
    """`plain` with its IHDR saying Adam7 (the data is then wrong for it: Pillow's reader
    decides what that means)."""
    header, idat, end = png_chunks(plain)
    return png_from_chunks([(b"IHDR", header[1][:12] + b"\x01"), idat, end])
