"""Fixtures and helpers of the client tests; test modules import them by name (shared folder)."""

from __future__ import annotations

import functools
import gzip
import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import client_fakes as fake_server
import numpy as np
import pytest
from harness import free_port
from PIL import Image


@dataclass
class FakeServer:
    grpc_url: str
    rest_url: str
    behaviour: fake_server.Behaviour

    def url(self, transport: str) -> str:
        return self.grpc_url if transport == "grpc" else self.rest_url


@pytest.fixture(scope="module")
def fake_server_instance() -> Iterator[FakeServer]:
    behaviour = fake_server.Behaviour()
    grpc_port, rest_port = free_port(), free_port()
    grpc_server = fake_server.start_grpc(behaviour, grpc_port)
    rest_server = fake_server.start_rest(behaviour, rest_port)
    try:
        yield FakeServer(
            f"grpc://127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}", behaviour
        )
    finally:
        grpc_server.stop(grace=None)
        rest_server.shutdown()


@pytest.fixture
def fake(fake_server_instance: FakeServer) -> FakeServer:
    """The fake server with its counters and failure knobs reset."""
    behaviour = fake_server_instance.behaviour
    with behaviour.lock:
        behaviour.unavailable_next = 0
        behaviour.delay_seconds = 0.0
        behaviour.cut_next = 0
        behaviour.predict_calls = 0
        behaviour.batch_sizes.clear()
    return fake_server_instance


@pytest.fixture(params=["grpc", "rest"])
def transport_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def save_png(path: Path, pixels: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze(-1) if pixels.ndim == 3 else pixels).save(path)
    return path


def fake_class(value: int) -> int:
    """What the fake model predicts for an image filled with `value`."""
    return value % 10


def make_uniform_folder(root: Path, values: list[int]) -> dict[str, int]:
    """28x28 grey PNGs filled with each value, in nested folders; returns path -> expected class."""
    expected = {}
    for index, value in enumerate(values):
        relative = f"part{index % 3}/img{index:04d}.png"
        save_png(root / relative, np.full((28, 28), value, dtype=np.uint8))
        expected[relative] = fake_class(value)
    return expected


def huge_png(path: Path) -> Path:
    """A valid 1-bit 20000x20000 PNG, built by hand: 50 KB on disk, 400 Mpx when decoded."""
    path.write_bytes(_huge_png_bytes(20000))
    return path


@functools.cache
def _huge_png_bytes(side: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" + bytes((side + 7) // 8)  # filter byte, then all-black pixels
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def make_bad_files(root: Path) -> dict[str, str]:
    """The issue's bad files; returns relative path -> a word the error must contain."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "bad_empty.png").write_bytes(b"")
    good = save_png(
        root / "tmp_good.png", np.arange(784, dtype=np.uint32).reshape(28, 28).astype(np.uint8)
    )
    (root / "bad_truncated.png").write_bytes(good.read_bytes()[:60])
    good.unlink()
    (root / "bad_text.png").write_text("this is not an image\n")
    huge_png(root / "bad_huge.png")
    return {"bad_empty.png": "", "bad_truncated.png": "", "bad_text.png": "", "bad_huge.png": ""}


def load_mnist_test(mnist_dir: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` MNIST test digits [N, 28, 28] and labels, from the original IDX files."""
    with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz") as images_file:
        magic, _count, rows, cols = struct.unpack(">IIII", images_file.read(16))
        if magic != 2051:
            raise ValueError(f"bad IDX magic {magic}")
        images = np.frombuffer(images_file.read(count * rows * cols), dtype=np.uint8)
    with gzip.open(mnist_dir / "t10k-labels-idx1-ubyte.gz") as labels_file:
        labels_file.read(8)
        labels = np.frombuffer(labels_file.read(count), dtype=np.uint8)
    return images.reshape(count, rows, cols), labels


def render_dark_on_light(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """An MNIST digit as a scan would show it: dark ink on white, RGB JPEG, larger, off-centre."""
    size = int(rng.integers(40, 200))
    ink = Image.fromarray(255 - digit).resize((size, size), Image.Resampling.BICUBIC)
    width, height = size + int(rng.integers(10, 150)), size + int(rng.integers(10, 150))
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    position = (int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1)))
    canvas.paste(ink.convert("RGB"), position)
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=int(rng.integers(75, 96)))
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height 8-bit gray, with one compressed row of data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * (width + 1))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
