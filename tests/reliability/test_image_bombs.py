"""Decompression bombs sent to `serving_bytes` (issue 12): a valid PNG of a few hundred KB that
declares 20000x20000 pixels decoded to +400 MB inside the graph and answered 200. The trainer's
export now reads each image's header size in the graph (`trainer/export.py`, image_dimensions)
and refuses more than MAX_IMAGE_PIXELS (the client's 40,000,000) before any decoding, so the
server answers INVALID_ARGUMENT / HTTP 400 with the limit and its memory does not move.

The model is the session's real one (trained on MNIST and published by the trainer), served by
the local server; stock TF Serving runs the same graph, so it refuses the same way."""

from __future__ import annotations

import base64
import io
import json
import struct
import urllib.error
import urllib.request
import zlib

import numpy as np
import pytest
from reliability_support import MODEL, rss_mb

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIDE = 20_000
ROUNDS = 3
# The refused bombs may cost the server no more than this (decoding one costs ~400 MB).
GROWTH_MB = 48


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(side: int) -> bytes:
    """A real, valid 8-bit gray PNG of side x side black pixels (side**2 bytes decoded)."""
    compressor = zlib.compressobj(9)
    row = bytes(side + 1)  # filter type 0, then the row's pixels
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"".join(
        [b"\x89PNG\r\n\x1a\n", png_chunk(b"IHDR", header), png_chunk(b"IDAT", data),
         png_chunk(b"IEND", b"")]
    )  # fmt: skip


def predict_bytes_grpc(target: str, encoded: bytes) -> tuple[str, str]:
    from harness import grpc_predict
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)])
    tensor = tensor_pb2.TensorProto(dtype=7, tensor_shape=shape, string_val=[encoded])  # string
    return grpc_predict(target, MODEL, {"image_bytes": tensor}, "serving_bytes")


def predict_bytes_rest(url: str, encoded: bytes) -> tuple[int, dict]:
    instance = {"b64": base64.b64encode(encoded).decode()}
    body = json.dumps({"signature_name": "serving_bytes", "instances": [instance]}).encode()
    request = urllib.request.Request(f"{url}/v1/models/{MODEL}:predict", body)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_png_bomb_is_refused_from_its_header_over_grpc_and_rest(served_model, figures):
    from PIL import Image

    bomb = png_bomb(SIDE)
    assert len(bomb) < 1024 * 1024
    limit_text = f"declares {SIDE}x{SIDE} pixels, more than the 40,000,000 per image"
    pid = served_model.process.pid
    before = rss_mb(pid)
    for _ in range(ROUNDS):
        code, details = predict_bytes_grpc(served_model.grpc_target, bomb)
        assert code == "INVALID_ARGUMENT", (code, details)
        assert limit_text in details
        status, body = predict_bytes_rest(served_model.rest_url, bomb)
        assert status == 400, body
        assert limit_text in body["error"]
    grown = rss_mb(pid) - before
    assert grown < GROWTH_MB, f"the server grew {grown:.0f} MB on refused bombs"

    # A real digit-sized PNG through the same signature still answers.
    stream = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(stream, "PNG")
    assert predict_bytes_grpc(served_model.grpc_target, stream.getvalue()) == ("OK", "")
    status, body = predict_bytes_rest(served_model.rest_url, stream.getvalue())
    assert status == 200 and len(body["predictions"]) == 1
    figures(
        bomb_bytes=len(bomb), declared_pixels=SIDE * SIDE, requests=2 * ROUNDS,
        refused=2 * ROUNDS, rss_growth_mb=round(grown, 1),
    )  # fmt: skip
    assert served_model.process.poll() is None
