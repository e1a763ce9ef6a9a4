"""Turn image files into the uint8 pixels a model's `serving_default` signature takes.

`load_image` decodes any common format and mode into `[height, width, channels]` uint8, and
optionally applies the classic MNIST normalization so that scans and photos of dark ink on
light paper, at any size and position, look like the digits the model was trained on.
`find_images` lists the files of a folder that `score` and `evaluate` must account for, and the
folders below it that could not be listed.

Every failure to read or decode a file raises `ImageError` (a `ValueError`) whose message is one
short line meant for a report row: "empty file", "truncated image", ...
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import stat
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import BinaryIO, NamedTuple

import numpy as np

from common import contract

PREPROCESS_MODES = ("auto", "mnist", "none")

# Pixel limit checked from the header, before any pixel is decoded: 40 megapixels is a
# 7700x5200 photo, far more than a classifier of small images needs, and decodes into at most
# 160 MB of RGBA; the exported serving_bytes signature refuses the same from its header.
# Override with TFS_MAX_IMAGE_PIXELS or the `max_pixels` argument.
MAX_PIXELS_ENV = "TFS_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = contract.MAX_IMAGE_PIXELS

# Files up to this size are read whole before decoding; larger ones through their handle, so
# that a huge file is refused from its header before its data is read.
_SLURP_BYTES = 1 << 20

# Operating-system droppings that are never images (hidden files are skipped anyway).
_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})

# MNIST digits were scaled so that their longer side is 20 px in a 28 px field (LeCun et al.).
_MNIST_BOX_RATIO = 20 / 28
# Ink below this fraction of the strongest ink is paper texture or JPEG noise: it neither
# extends the bounding box nor survives into the output.
_INK_THRESHOLD = 0.25
_NOISE_FLOOR = 0.12


class ImageError(ValueError):
    """A file that cannot be turned into model input; the message is a one-line reason."""


@functools.cache
def _pil() -> SimpleNamespace:
    """Pillow, imported on first use (not at import time, so `--help` stays fast), once: an
    import statement per image costs more than a small PNG's decoding overhead."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    return SimpleNamespace(
        Image=Image, ImageOps=ImageOps, UnidentifiedImageError=UnidentifiedImageError
    )


def default_max_pixels() -> int:
    """The pixel limit from TFS_MAX_IMAGE_PIXELS, or DEFAULT_MAX_PIXELS."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value.replace("_", ""))
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV} must be a positive integer, not {value!r}") from None
    if limit <= 0:
        raise ValueError(f"{MAX_PIXELS_ENV} must be a positive integer, not {value!r}")
    return limit


class UnreadableFolder(NamedTuple):
    """A folder `find_images` could not list."""

    name: str  # POSIX path relative to the listed folder, ending in "/"; "" for that folder
    path: str  # the folder as the operating system names it
    reason: str  # the operating system's words, e.g. "Permission denied"


def find_images(folder: Path) -> tuple[list[Path], list[UnreadableFolder]]:
    """Every file under `folder` that scoring must account for, and the folders that could not
    be listed (whose files are therefore unknown).

    Recursive. Included: every regular file (or symlink to one), whatever its extension, so a
    misnamed or corrupt file gets an error row instead of vanishing; an entry whose type cannot
    be read (permissions) is included too, so that its row says why. Excluded: hidden files and
    anything under hidden folders (names starting with "."), and Windows' Thumbs.db and
    desktop.ini. Symlinked folders are not followed (no loops). Files are sorted by their POSIX
    relative path's bytes (`client.names.name_order`: the same on every machine, and plain
    string order for UTF-8 names), so shards and resumed runs line up.
    Raises ValueError when `folder` is not a folder; when it cannot be listed itself, the
    second list holds it under the name "".
    """
    found, unreadable = find_image_names(folder)
    return [Path(path) for _, path in found], unreadable


def find_image_names(folder: Path | str) -> tuple[list[tuple[str, str]], list[UnreadableFolder]]:
    """`find_images` as plain strings: (POSIX path relative to `folder`, path as the operating
    system names it) per file, and the folders that could not be listed. The relative names
    are those of `client.scoring.relative_name`, found on the way rather than computed again,
    and no Path object is made per file: for 10,000 files, those cost a third of a second."""
    from client.names import name_order

    if not os.path.isdir(folder):
        raise ValueError(f"not a folder: {folder}")
    found: list[tuple[str, str]] = []
    unreadable: list[UnreadableFolder] = []
    # os.scandir: a directory entry knows its type without a stat call per file.
    pending = [(os.fspath(folder), "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            with os.scandir(directory) as iterator:
                entries = list(iterator)
        except OSError as error:  # os.walk would skip the folder without a word
            unreadable.append(UnreadableFolder(prefix, directory, error.strerror or str(error)))
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                is_folder = entry.is_dir()
            except OSError:
                is_folder = False
            if is_folder:
                if not entry.is_symlink():
                    pending.append((entry.path, f"{prefix}{name}/"))
                continue
            if name.lower() in _IGNORED_NAMES:
                continue
            try:
                is_file = entry.is_file()
            except OSError:  # a symlink in a folder that can be listed but not searched
                is_file = True
            if is_file:
                found.append((prefix + name, entry.path))
    found.sort(key=lambda item: name_order(item[0]))
    unreadable.sort(key=lambda item: name_order(item.name))
    return found, unreadable


def list_images(folder: Path) -> list[Path]:
    """The files of `find_images(folder)`; raises ValueError when `folder`, or a folder below
    it, cannot be listed (rather than leaving its files out)."""
    files, unreadable = find_images(folder)
    if unreadable:
        first = unreadable[0]
        raise ValueError(f"cannot list {first.path}: {first.reason}")
    return files


def load_image(
    source: Path | str | bytes,
    *,
    height: int,
    width: int,
    channels: int,
    mode: str = "auto",
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode one image into uint8 `[height, width, channels]` for the model.

    source: a path or the encoded bytes (PNG, JPEG, BMP, GIF, TIFF, WebP, ...; first frame).
    height, width, channels: the model's input shape (channels 1 = grayscale, 3 = RGB).
    mode: "none" resizes to height x width; "mnist" applies the MNIST normalization (light
        background inverted to light-on-dark, cropped to the ink, longer side scaled to 20/28
        of the field, centred on the centre of mass); "auto" uses "mnist" for single-channel
        models unless the image already is height x width light-on-dark, and "none" for colour
        models, whose training data is not MNIST-like.
    max_pixels: reject images whose header declares more pixels (default: TFS_MAX_IMAGE_PIXELS
        or 40,000,000).

    Raises ImageError with a one-line reason for unreadable, corrupt or oversized files, and
    ValueError for arguments that make no sense (unknown mode, channels other than 1 or 3).
    """
    if mode not in PREPROCESS_MODES:
        raise ValueError(
            f"unknown preprocess mode {mode!r} (choose from {', '.join(PREPROCESS_MODES)})"
        )
    if channels not in (1, 3):
        raise ValueError(f"models with {channels} input channels are not supported (1 or 3)")
    if height <= 0 or width <= 0:
        raise ValueError(f"model input size must be positive, not {height}x{width}")
    limit = default_max_pixels() if max_pixels is None else max_pixels
    if limit <= 0:
        raise ValueError(f"max_pixels must be positive, not {limit}")

    image = _decode(source, limit)
    # The luminance of a model-sized image serves the auto test and then "none" or "mnist";
    # it is computed once (per-image overhead dominates for small images).
    gray = None
    if channels == 1 and image.size == (width, height):
        gray = _pixels(_convert(image, "L"))
    if mode == "auto":
        # Model-sized light-on-dark images (MNIST's own) pass unchanged; colour models' data
        # is not MNIST-like.
        model_ready = gray is not None and _border_level(gray) < 128
        mode = "none" if channels == 3 or model_ready else "mnist"
    if mode == "none" and gray is not None:
        pixels = gray
    elif mode == "none":
        pixels = _resize(_convert(image, "L" if channels == 1 else "RGB"), height, width)
    else:
        if gray is None:
            gray = _pixels(_convert(image, "L"))
        pixels = mnist_normalize(gray, height=height, width=width)
        if channels == 3:
            pixels = np.repeat(pixels[..., None], 3, axis=-1)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def _decode(source: Path | str | bytes, max_pixels: int):
    """Decode the first frame into an 8-bit "L" or "RGB" PIL image, upright, alpha flattened."""
    Image = _pil().Image

    if max_pixels > (Image.MAX_IMAGE_PIXELS or 0) and Image.MAX_IMAGE_PIXELS is not None:
        # Pillow's own bomb limit is a process-wide backstop; keep it above ours so that the
        # limit a user configured is the one that applies.
        Image.MAX_IMAGE_PIXELS = max_pixels
    content = _read_source(source)
    if not isinstance(content, bytes | bytearray | memoryview):
        # A large file is read through its handle, not slurped: Pillow reads the header first,
        # and a huge file is refused before its data is read.
        with content:
            return _decode_stream(content, max_pixels)
    image = _plain_png(content, max_pixels)
    if image is not None:
        return image
    return _decode_stream(io.BytesIO(content), max_pixels)


# The PNG signature, then the length of the IHDR chunk that must follow it (13).
_PNG_START = b"\x89PNG\r\n\x1a\n\x00\x00\x00\r"
# (bit depth, colour type) of the PNGs `_plain_png` decodes, and their Pillow mode.
_PLAIN_PNG_MODES = {(8, 0): "L", (8, 2): "RGB"}
_PNG_CHUNK = struct.Struct(">I4s")
_PNG_HEADER = struct.Struct(">4sIIBBBBBI")  # IHDR: type, size, depth, colour, 3 methods, CRC


def _plain_png(data: bytes, max_pixels: int):
    """The PIL image of the commonest PNG (8-bit grey or RGB, not interlaced, nothing but IHDR,
    IDAT and IEND chunks), or None for anything else, which goes to Pillow's full reader.

    Pillow's PNG reader parses chunks in Python, and for an MNIST-sized file that parsing costs
    several times the decompression. Here the chunks are walked with struct, and Pillow's own C
    decoder (inflate and PNG filters) fills the image, so the pixels are Pillow's. Whatever
    this walk does not accept -- other chunks (text, EXIF orientation, palettes, transparency),
    a bad header checksum, truncated or corrupt data, more pixels than `max_pixels` -- returns
    None: Pillow's reader then decides, and says what is wrong, exactly as without this path.
    """
    if len(data) < 45 or data[:12] != _PNG_START:
        return None
    kind, width, height, depth, colour, compression, filtering, interlace, crc = (
        _PNG_HEADER.unpack_from(data, 12)
    )
    mode = _PLAIN_PNG_MODES.get((depth, colour))
    if (
        kind != b"IHDR"
        or mode is None
        or compression
        or filtering
        or interlace
        or not 0 < width * height <= max_pixels
        or zlib.crc32(data[12:29]) != crc  # Pillow checks the chunks before the image data
    ):
        return None
    position, end, parts = 33, len(data), []
    while position + 8 <= end:
        length, kind = _PNG_CHUNK.unpack_from(data, position)
        start = position + 8
        position = start + length + 4
        if kind == b"IDAT" and position <= end:
            parts.append(data[start : start + length])
        elif kind == b"IEND" and parts:
            try:
                return _pil().Image.frombytes(mode, (width, height), b"".join(parts), "zip", mode)
            except ValueError:  # truncated or corrupt data: Pillow's reader says which
                return None
        else:
            return None
    return None


def _decode_stream(stream: BinaryIO, max_pixels: int):
    pil = _pil()
    Image = pil.Image

    try:
        image = Image.open(stream)
    except pil.UnidentifiedImageError:
        raise ImageError("not an image (cannot identify image file)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"image too large: {_bomb_pixels(error)} (limit {max_pixels})") from None
    except Exception as error:
        raise _corrupt(error, "image") from None

    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"image too large: {width}x{height} pixels (limit {max_pixels})")
    if width == 0 or height == 0:
        raise ImageError(f"image has no pixels ({width}x{height})")
    try:
        if image.tell() != 0:
            image.seek(0)
        image.load()
        _upright(image, pil.ImageOps)
        return _to_8bit(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"image too large: {_bomb_pixels(error)} (limit {max_pixels})") from None
    except ImageError:
        raise
    except Exception as error:
        raise _corrupt(error, image.format or "image") from None


# Where Pillow's getexif() finds an orientation (EXIF, PNG's text form of it, XMP); TIFF keeps
# it in its tags.
_ORIENTATION_KEYS = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


def _upright(image, image_ops) -> None:
    """Apply the EXIF orientation in place; broken EXIF data must not cost a decodable image."""
    if not hasattr(image, "tag_v2") and not any(key in image.info for key in _ORIENTATION_KEYS):
        return  # nothing to read: exif_transpose would cost a tenth of a small PNG's decoding
    # In place: otherwise Pillow returns a copy of every image, rotated or not.
    with contextlib.suppress(Exception):
        image_ops.exif_transpose(image, in_place=True)


def _read_source(source: Path | str | bytes) -> bytes | BinaryIO:
    """The contents of a file up to _SLURP_BYTES (one read instead of Pillow's many small
    ones), or an open handle on a larger one (the caller closes it); bytes as given."""
    if isinstance(source, bytes | bytearray | memoryview):
        if not len(source):
            raise ImageError("empty file")
        return source
    # os.open and os.read: a file object costs more than reading a small image.
    try:
        descriptor = os.open(source, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except IsADirectoryError:
        raise ImageError("is a folder, not a file") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as error:
        raise ImageError(f"cannot read file ({error.strerror or error})") from None
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError("is a folder, not a file")
        if info.st_size == 0:
            raise ImageError("empty file")
        if info.st_size > _SLURP_BYTES or not stat.S_ISREG(info.st_mode):
            stream = os.fdopen(descriptor, "rb")
            descriptor = -1  # the stream owns it now
            return stream
        return read_descriptor(descriptor, info.st_size)
    finally:
        if descriptor >= 0:
            os.close(descriptor)


def read_descriptor(descriptor: int, size: int | None, limit: int | None = None) -> bytes:
    """Everything an open file holds (at most `limit` bytes). For a regular file, `size` is its
    length (fstat): one read of size + 1 bytes, whose coming back short is the end of the file
    (a read of the largest size allowed would allocate that much for every small file; a file
    that grew since is read on to its end). None: a pipe or device, read until it ends."""
    chunks, total = [], 0
    while limit is None or total < limit:
        want = (1 << 16) if size is None else max(size - total, 0) + 1
        chunk = os.read(descriptor, want if limit is None else min(want, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if size is not None:
            if len(chunk) < want:
                break
            size = None  # it grew since fstat: read on in large chunks
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _to_8bit(image):
    """Any Pillow mode to "L" or "RGB" uint8; transparency is flattened onto white paper."""
    Image = _pil().Image

    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode.startswith("I") or mode == "F":
        image = Image.fromarray(_scale_to_8bit(np.asarray(image), mode), "L")
    elif mode not in ("L", "LA", "RGB", "RGBA", "RGBa"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX

    if image.mode in ("RGBA", "RGBa", "LA"):
        if image.mode == "RGBa":
            image = image.convert("RGBA")
        color_mode = "L" if image.mode == "LA" else "RGB"
        paper = Image.new(color_mode, image.size, "white")
        paper.paste(image.convert(color_mode), mask=image.getchannel("A"))
        image = paper
    return image


def _scale_to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """16- and 32-bit integer or float pixels to 0..255, keeping their absolute brightness."""
    values = values.astype(np.float64)
    if mode == "F":
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
    elif mode.startswith("I;16") or values.max(initial=0) > 255:
        top = 65535.0
    else:
        top = 255.0
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)


def _resize(image, height: int, width: int) -> np.ndarray:
    if image.size != (width, height):
        # Pillow filters over the whole source area when shrinking, so large scans keep thin
        # strokes instead of aliasing them away.
        image = image.resize((width, height), _pil().Image.Resampling.LANCZOS)
    return _pixels(image)


def _convert(image, mode: str):
    # convert() to the mode an image already has still copies it.
    return image if image.mode == mode else image.convert(mode)


def _pixels(image) -> np.ndarray:
    """An 8-bit "L" or "RGB" image as uint8 [H, W] or [H, W, 3] (read-only)."""
    width, height = image.size
    shape = (height, width) if image.mode == "L" else (height, width, len(image.mode))
    # Cheaper than np.asarray(image), whose array interface costs more than a small image.
    return np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(shape)


def _border_level(pixels: np.ndarray) -> float:
    """The paper's brightness: the median of a thin frame around the image."""
    frame = np.asarray(pixels).reshape(-1)[_frame_indices(*pixels.shape)]
    # np.median's overhead exceeds the rest of a small image's preprocessing; sorting the few
    # hundred frame pixels and taking the middle gives the same value.
    frame.sort()
    middle = frame.size // 2
    if frame.size % 2:
        return float(frame[middle])
    return (float(frame[middle - 1]) + float(frame[middle])) / 2


@functools.lru_cache(maxsize=64)
def _frame_indices(rows: int, columns: int) -> np.ndarray:
    """Flat indices of the frame `_border_level` reads: the top and bottom bands, then the left
    and right ones (corners in both), computed once per image size."""
    band = max(1, min(rows, columns) // 50)
    grid = np.arange(rows * columns).reshape(rows, columns)
    return np.concatenate(
        [
            grid[:band].ravel(),
            grid[-band:].ravel(),
            grid[:, :band].ravel(),
            grid[:, -band:].ravel(),
        ]
    )


def mnist_normalize(gray: np.ndarray, *, height: int = 28, width: int = 28) -> np.ndarray:
    """The MNIST preparation of one grayscale image (2-D uint8), as uint8 `[height, width]`.

    Light paper is detected from the image's border and inverted, so ink is light on dark;
    the paper level is subtracted and the strongest ink stretched to 255; faint specks are
    dropped; the ink's bounding box is scaled (aspect kept) so that its longer side fills 20/28
    of the field; and it is pasted so that its centre of mass lands on the field's centre.
    A blank image comes back all zeros.
    """
    Image = _pil().Image

    pixels = np.asarray(gray, dtype=np.float32)
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale array, got shape {pixels.shape}")
    paper = _border_level(pixels)
    if paper >= 128:
        pixels = 255.0 - pixels
        paper = 255.0 - paper
    ink = np.clip(pixels - paper, 0, None)
    strongest = float(ink.max(initial=0))
    field = np.zeros((height, width), dtype=np.float32)
    if strongest < 16:  # nothing but paper
        return field.astype(np.uint8)
    ink *= 255.0 / strongest
    ink[ink < _NOISE_FLOOR * 255] = 0

    rows = np.flatnonzero((ink >= _INK_THRESHOLD * 255).any(axis=1))
    columns = np.flatnonzero((ink >= _INK_THRESHOLD * 255).any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]

    box_height = max(1, round(height * _MNIST_BOX_RATIO))
    box_width = max(1, round(width * _MNIST_BOX_RATIO))
    scale = min(box_height / ink.shape[0], box_width / ink.shape[1])
    new_height = max(1, min(height, round(ink.shape[0] * scale)))
    new_width = max(1, min(width, round(ink.shape[1] * scale)))
    digit = Image.fromarray(ink, "F").resize((new_width, new_height), Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(digit), 0, 255)

    total = float(digit.sum())
    if total <= 0:
        return field.astype(np.uint8)
    row_grid, column_grid = np.indices(digit.shape)
    center_row = float((digit * row_grid).sum()) / total
    center_column = float((digit * column_grid).sum()) / total
    # MNIST's centres of mass sit at pixel index 14.0 of 28 (measured on the test set), i.e. at
    # half the field size in index coordinates.
    top = round(height / 2 - center_row)
    left = round(width / 2 - center_column)
    _paste(field, digit, top, left)
    return np.rint(field).astype(np.uint8)


def _paste(field: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
    """Copy `patch` into `field` at (top, left), clipping whatever falls outside."""
    field_top, field_left = max(0, top), max(0, left)
    field_bottom = min(field.shape[0], top + patch.shape[0])
    field_right = min(field.shape[1], left + patch.shape[1])
    if field_bottom <= field_top or field_right <= field_left:
        return
    field[field_top:field_bottom, field_left:field_right] = patch[
        field_top - top : field_bottom - top, field_left - left : field_right - left
    ]


def _corrupt(error: Exception, what: str) -> ImageError:
    if isinstance(error, EOFError) or "truncated" in str(error).lower():
        return ImageError("truncated image")
    return ImageError(f"corrupt {what} ({_short(error)})")


def _bomb_pixels(error: Exception) -> str:
    match = re.search(r"\((\d+) pixels\)", str(error))
    return f"{match.group(1)} pixels" if match else "over Pillow's decompression-bomb limit"


def _short(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


# What one MNIST-style glyph looks like as model input, measured on the 10,000 MNIST test digits
# and on 1,000 of them rendered as off-centre JPEG scans and preprocessed with "mnist": a dark
# frame (mean <= 8 of 255), ink (pixels >= 64) on 4.5-36 % of the field, strokes with a solid
# core (>= 10 % of the ink at >= 192), mostly not a filled block (ink on <= 70 % of its bounding
# box), one part (the largest 8-connected part holds >= 55 % of the ink, bar one broken "6").
# The limits below leave a margin: 3 of the 10,000 digits cross one (a blotted 8, a bold 1, the
# broken 6), no scan does; a colour photo, a line of text, a texture or a blank page does.
_GLYPH_FRAME_MAX = 32.0
_GLYPH_INK_MIN, _GLYPH_INK_MAX = 0.02, 0.45
_GLYPH_CORE_MIN = 0.08
_GLYPH_FILL_MAX = 0.8
_GLYPH_LARGEST_PART_MIN = 0.5


def glyph_check(pixels: np.ndarray) -> str | None:
    """Why a single-channel model input does not look like one light glyph on a dark
    background (an MNIST digit after preprocessing), or None when it does.

    pixels: uint8 `[H, W]` or `[H, W, 1]`, as `load_image` returns it. The reasons are short and
    joined by "; ", e.g. "background not dark (mean 130 of 255); 3 separate marks".
    """
    gray = np.asarray(pixels)
    return glyph_checks(gray[None] if gray.ndim == 2 else gray[None, ..., :1])[0]


def glyph_checks(batch: np.ndarray) -> list[str | None]:
    """`glyph_check` of every image of a batch `[N, H, W]` or `[N, H, W, C]` (channel 0), in
    whole-batch array operations: per image, numpy's call overhead cost more than the checks."""
    gray = np.asarray(batch)
    if gray.ndim == 4:
        gray = gray[..., 0]
    count, height, width = gray.shape
    band = max(1, round(min(height, width) / 14))
    if count == 0 or min(height, width) <= 2 * band:
        return [None] * count
    frame_sum = (
        gray[:, :band].sum(axis=(1, 2), dtype=np.int64)
        + gray[:, -band:].sum(axis=(1, 2), dtype=np.int64)
        + gray[:, band:-band, :band].sum(axis=(1, 2), dtype=np.int64)
        + gray[:, band:-band, -band:].sum(axis=(1, 2), dtype=np.int64)
    )
    frame = frame_sum / (2 * band * width + 2 * band * (height - 2 * band))
    ink = gray >= 64
    ink_count = np.count_nonzero(ink, axis=(1, 2))
    share = ink_count / (height * width)
    weak_core = np.count_nonzero(gray >= 192, axis=(1, 2)) < _GLYPH_CORE_MIN * ink_count
    ink_rows, ink_columns = ink.any(axis=2), ink.any(axis=1)
    box_height = height - np.argmax(ink_rows[:, ::-1], axis=1) - np.argmax(ink_rows, axis=1)
    box_width = width - np.argmax(ink_columns[:, ::-1], axis=1) - np.argmax(ink_columns, axis=1)
    filled = (np.minimum(box_height, box_width) >= 8) & (
        ink_count > _GLYPH_FILL_MAX * box_height * box_width
    )
    largest, total, marks = _part_masses(gray >= 32, np.where(ink, gray, 0))
    scattered = (total > 0) & (largest < _GLYPH_LARGEST_PART_MIN * total)
    dark = frame <= _GLYPH_FRAME_MAX
    plain = (
        dark
        & (ink_count > 0)
        & (share >= _GLYPH_INK_MIN)
        & (share <= _GLYPH_INK_MAX)
        & ~weak_core
        & ~filled
        & ~scattered
    )
    notes: list[str | None] = [None] * count
    for index in np.flatnonzero(~plain).tolist():
        reasons = []
        if not dark[index]:
            reasons.append(f"background not dark (mean {frame[index]:.0f} of 255)")
        if ink_count[index] == 0:
            notes[index] = "; ".join([*reasons, "blank (no ink)"])
            continue
        if share[index] < _GLYPH_INK_MIN:
            reasons.append(f"almost no ink ({ink_count[index]} pixels)")
        elif share[index] > _GLYPH_INK_MAX:
            reasons.append(f"ink covers {share[index]:.0%} of the image")
        if weak_core[index]:
            reasons.append("no solid strokes (a photo or a texture?)")
        if filled[index]:
            reasons.append("a filled block, not strokes")
        if scattered[index]:
            reasons.append(f"{marks[index]} separate marks, not one glyph")
        notes[index] = "; ".join(reasons) or None
    return notes


def _part_masses(
    region: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image of the boolean batch `region` [N, H, W], over its 8-connected parts: the
    largest part's summed `weights`, the sum over all parts, and how many parts hold at least
    a tenth of that sum.

    The parts are row runs joined where they touch the row above (8-connectivity), by
    union-find over every run of the batch at once: hook each touching pair's larger root
    onto the smaller, compress the paths, repeat until no pair spans two roots.
    """
    count, height, width = region.shape
    padded = np.zeros((count, height, width + 2), np.int8)
    padded[:, :, 1:-1] = region
    # Flat indices into the [N, H, W + 1] edges, and one cumulative sum over the whole batch
    # (weights behind a zero column, so that each line starts from the sum of those before):
    # per-axis nonzero and cumsum over short rows cost most of the check otherwise.
    edges = np.diff(padded, axis=2).reshape(-1)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # ends exclusive
    lines, run_starts = np.divmod(starts, width + 1)
    run_ends = ends - lines * (width + 1)
    run_images, run_rows = np.divmod(lines, height)
    sums = np.zeros((count, height, width + 1), np.int64)
    sums[:, :, 1:] = weights
    sums = sums.reshape(-1).cumsum()
    run_mass = (sums[ends] - sums[starts]).astype(np.float64)
    # Runs of one line (image, row) are disjoint and sorted, so the runs of the line above
    # that touch run b (start <= b's end, end >= b's start) form one range of indices.
    stride = width + 2
    line = (run_images * height + run_rows) * stride
    above = line - stride
    low = np.searchsorted(line + run_ends, above + run_starts, side="left")
    high = np.searchsorted(line + run_starts, above + run_ends, side="right")
    touching = np.where(run_rows > 0, np.maximum(high - low, 0), 0)
    lower = np.repeat(np.arange(len(run_mass)), touching)
    first = np.repeat(low, touching)
    upper = first + np.arange(len(lower)) - np.repeat(np.cumsum(touching) - touching, touching)
    parent = np.arange(len(run_mass))
    while True:
        a, b = parent[lower], parent[upper]
        apart = a != b
        if not apart.any():
            break
        np.minimum.at(parent, np.maximum(a, b)[apart], np.minimum(a, b)[apart])
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    part_mass = np.bincount(parent, weights=run_mass, minlength=len(run_mass))
    roots = np.flatnonzero(parent == np.arange(len(parent)))
    root_images, root_mass = run_images[roots], part_mass[roots]
    total = np.bincount(run_images, weights=run_mass, minlength=count)
    largest = np.zeros(count)
    np.maximum.at(largest, root_images, root_mass)
    heavy = root_mass >= 0.1 * total[root_images]
    marks = np.bincount(root_images[heavy], minlength=count)
    return largest, total, marks
