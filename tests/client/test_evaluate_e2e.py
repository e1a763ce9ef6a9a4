"""`evaluate` end to end: real MNIST digits, the trainer's model, the local server, gRPC and REST.

The reference is the published SavedModel run in this process with TensorFlow on the same
pixels: the report must agree with it exactly, and scans of the same digits (dark ink on white,
RGB JPEG, random size and position) must score within 1.5 points of the original digits.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from client_fixtures import load_mnist_test, render_dark_on_light
from PIL import Image

from client.preprocess import load_image
from common import contract

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]

N_DIGITS = 10_000  # the whole MNIST test split, as the acceptance asks
N_REST = 500  # the local server's REST path is far slower than gRPC on a busy 2-core machine
N_SCANS = 1_000  # enough for the 1.5-point comparison (measured differences: 0.1 to 0.4)


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first N_DIGITS MNIST test digits (uint8 [N, 28, 28]) and their labels."""
    images, labels = load_mnist_test(mnist_dir, N_DIGITS)
    return images, labels.astype(np.int64)


@pytest.fixture(scope="module")
def saved_model_predict(published_model):
    """class ids from the published SavedModel, run in-process on uint8 [N, 28, 28, 1]."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(published_model.version_dir(1)))
    signature = loaded.signatures[contract.SERVING_DEFAULT]

    def predict(images: np.ndarray) -> np.ndarray:
        outputs = [
            signature(**{contract.IMAGES_INPUT: tf.constant(images[start : start + 500])})[
                contract.CLASS_IDS
            ].numpy()
            for start in range(0, len(images), 500)
        ]
        return np.concatenate(outputs).astype(np.int64)

    return predict


def evaluate(folder: Path, report_dir: Path, server: str, *extra: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "client", "evaluate", str(folder), "--report-dir",
         str(report_dir), "--server", server, *extra],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((report_dir / "report.json").read_text())


@pytest.mark.parametrize(("transport", "count"), [("grpc", N_DIGITS), ("rest", N_REST)])
def test_report_matches_the_saved_model(
    tmp_path: Path, digits, saved_model_predict, served_model, transport: str, count: int
) -> None:
    images, labels = digits[0][:count], digits[1][:count]
    folder = tmp_path / "digits"
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(label) / f"{index:05d}.png")
    expected = saved_model_predict(images[..., None])
    server = {"grpc": f"grpc://{served_model.grpc_target}", "rest": served_model.rest_url}

    report = evaluate(folder, tmp_path / "report", server[transport])

    assert report["n_images"] == count and report["n_failed"] == 0
    assert report["accuracy"] == float(np.mean(expected == labels))
    matrix = np.zeros((10, 10), np.int64)
    np.add.at(matrix, (labels, expected), 1)
    assert report["confusion_matrix"] == matrix.tolist()
    assert report["model_name"] == "mnist" and report["model_version"] == 1
    assert report["latency_ms"]["p50"] > 0 and report["images_per_second"] > 0
    for name in ("report.md", "confusion_matrix.png", "misclassified.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    page = (tmp_path / "report" / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources)
    assert "<link" not in page and "<script" not in page
    grid = base64.b64decode(sources[-1].split(",", 1)[1])
    assert Image.open(io.BytesIO(grid)).format == "PNG"


def test_scans_of_the_same_digits_keep_the_accuracy(
    tmp_path: Path, digits, saved_model_predict, served_model
) -> None:
    images, labels = digits[0][:N_SCANS], digits[1][:N_SCANS]
    folder = tmp_path / "scans"
    rng = np.random.default_rng(4)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        (folder / str(label) / f"{index:05d}.jpg").write_bytes(render_dark_on_light(image, rng))

    server = f"grpc://{served_model.grpc_target}"
    report = evaluate(folder, tmp_path / "report", server, "--preprocess", "auto")

    # Exactly what the SavedModel says about the preprocessed scans...
    files = sorted(folder.rglob("*.jpg"), key=lambda path: path.relative_to(folder).as_posix())
    preprocessed = np.stack(
        [load_image(path, height=28, width=28, channels=1, mode="auto") for path in files]
    )
    truth = np.array([int(path.parent.name) for path in files])
    assert report["accuracy"] == float(np.mean(saved_model_predict(preprocessed) == truth))
    # ...and within 1.5 points of the same model on the original digits.
    original_accuracy = float(np.mean(saved_model_predict(images[..., None]) == labels))
    assert abs(report["accuracy"] - original_accuracy) <= 0.015, (
        report["accuracy"],
        original_accuracy,
    )
