"""End to end on real MNIST: the published SavedModel honours the contract and the Keras model.

Uses the shared `published_model` (mlp, 2 epochs, 6,000 digits, seed 7, version 1).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from trainer_helpers import run_python

from trainer import data
from trainer.images import encode_png

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The contract (DESIGN.md), written out independently of trainer.contract on purpose.
EXPECTED_SIGNATURES = {
    "serving_default": {
        "inputs": {"images": ("DT_UINT8", "(-1, 28, 28, 1)")},
        "outputs": {
            "probabilities": ("DT_FLOAT", "(-1, 10)"),
            "class_ids": ("DT_INT64", "(-1)"),
            "classes": ("DT_STRING", "(-1)"),
        },
    },
    "serving_bytes": {
        "inputs": {"image_bytes": ("DT_STRING", "(-1)")},
        "outputs": {
            "probabilities": ("DT_FLOAT", "(-1, 10)"),
            "class_ids": ("DT_INT64", "(-1)"),
            "classes": ("DT_STRING", "(-1)"),
        },
    },
}

PROBE = """
import sys
import numpy as np
import tensorflow as tf

version_dir, images_path, out_path = sys.argv[1:4]
loaded = tf.saved_model.load(version_dir)
images = np.load(images_path)
by_pixels = loaded.signatures["serving_default"](images=tf.constant(images))
pngs = np.load(images_path.replace(".npy", "-png.npy"), allow_pickle=False)
by_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant(list(pngs)))
np.savez(
    out_path,
    probabilities=by_pixels["probabilities"].numpy(),
    class_ids=by_pixels["class_ids"].numpy(),
    classes=by_pixels["classes"].numpy().astype(str),
    bytes_class_ids=by_bytes["class_ids"].numpy(),
    bytes_probabilities=by_bytes["probabilities"].numpy(),
)
"""


@pytest.fixture(scope="module")
def mnist_test(mnist_dir: Path) -> data.Dataset:
    return data.load_builtin("mnist", data_dir=mnist_dir)


def parse_saved_model_cli(text: str) -> dict:
    signatures: dict = {}
    current = section = None
    for line in text.splitlines():
        if match := re.match(r"signature_def\['(.+)'\]:", line):
            current = signatures.setdefault(match.group(1), {"inputs": {}, "outputs": {}})
        elif "following input(s)" in line:
            section = "inputs"
        elif "following output(s)" in line:
            section = "outputs"
        elif current is not None and (match := re.match(r"\s+(inputs|outputs)\['(.+)'\]", line)):
            name = match.group(2)
            current[section][name] = []
        elif current is not None and (match := re.match(r"\s+(dtype|shape): (.+)", line)):
            if current[section]:
                last = list(current[section])[-1]
                current[section][last].append(match.group(2).strip())
        elif line.startswith("The MetaGraph") or line.startswith("Concrete Functions"):
            current = None
    return {
        name: {
            part: {key: tuple(values) for key, values in entries.items()}
            for part, entries in signature.items()
        }
        for name, signature in signatures.items()
        if not name.startswith("__")
    }


def test_saved_model_cli_shows_exactly_the_contract(published_model) -> None:
    cli = Path(sys.executable).with_name("saved_model_cli")
    import subprocess

    result = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(published_model.version_dir(1))],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert parse_saved_model_cli(result.stdout) == EXPECTED_SIGNATURES


def test_fresh_process_serving_matches_the_keras_model(
    published_model, mnist_test: data.Dataset, tmp_path: Path
) -> None:
    images = mnist_test.test_images[:200]
    np.save(tmp_path / "images.npy", images)
    pngs = np.array([encode_png(image) for image in images], dtype=object)
    np.save(tmp_path / "images-png.npy", pngs.astype(bytes))
    result = run_python(
        "-c", PROBE, str(published_model.version_dir(1)), str(tmp_path / "images.npy"),
        str(tmp_path / "out.npz"), timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.load(tmp_path / "out.npz")

    import keras

    model = keras.models.load_model(published_model.run_dir / "best.keras")
    expected = model.predict(images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(served["class_ids"], expected.argmax(axis=1))
    assert served["classes"].tolist() == [str(index) for index in served["class_ids"]]
    # Decoding PNG bytes in the graph gives back the same pixels, hence the same answers.
    np.testing.assert_array_equal(served["bytes_class_ids"], served["class_ids"])
    np.testing.assert_allclose(served["bytes_probabilities"], served["probabilities"], atol=1e-6)
    # A model that learned something: far above chance on real digits.
    assert (served["class_ids"] == mnist_test.test_labels[:200]).mean() > 0.8


def read_tfrecords(path: Path) -> list[bytes]:
    records, content, offset = [], path.read_bytes(), 0
    while offset < len(content):
        (length,) = struct.unpack_from("<Q", content, offset)
        offset += 12  # length and its CRC
        records.append(content[offset : offset + length])
        offset += length + 4  # payload and its CRC
    return records


def test_warmup_records_are_real_packed_predict_requests(
    published_model, mnist_test: data.Dataset
) -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    path = published_model.version_dir(1) / "assets.extra" / "tf_serving_warmup_requests"
    records = read_tfrecords(path)
    assert len(records) >= 3
    test_images = {image.tobytes() for image in mnist_test.test_images}
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.name == published_model.name
        assert request.model_spec.signature_name == "serving_default"
        tensor = request.inputs["images"]
        assert tensor.dtype == 4  # DT_UINT8
        shape = [dim.size for dim in tensor.tensor_shape.dim]
        assert shape[1:] == [28, 28, 1] and shape[0] >= 1
        pixels = np.frombuffer(tensor.tensor_content, np.uint8).reshape(shape)
        assert all(image.tobytes() in test_images for image in pixels)


def test_model_info_and_run_reports(published_model) -> None:
    info = json.loads(
        (published_model.version_dir(1) / "assets.extra" / "model_info.json").read_text()
    )
    assert info["dataset"] == "mnist"
    assert info["class_names"] == [str(digit) for digit in range(10)]
    assert info["input_shape"] == [28, 28, 1]
    assert 0.8 < info["metrics"]["test_accuracy"] <= 1
    assert info["training"]["epochs"] == 2 and info["training"]["seed"] == 7
    assert info["library_versions"]["tensorflow"].startswith("2.")
    assert re.match(r"\d{4}-\d\d-\d\dT", info["created_at"])

    run_dir = published_model.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "per_class", "epochs_run", "train_seconds",
                "samples_per_second", "dataset", "model", "version"):  # fmt: skip
        assert key in metrics, key
    assert metrics["version"] == 1 and metrics["epochs_run"] == 2
    assert metrics["test_accuracy"] == info["metrics"]["test_accuracy"]
    assert set(metrics["per_class"]) == set(info["class_names"])
    assert {"precision", "recall", "f1", "support"} <= set(metrics["per_class"]["7"])
    assert sum(entry["support"] for entry in metrics["per_class"].values()) == 1000

    from PIL import Image

    for name in ("samples.png", "curves.png", "confusion_matrix.png"):
        with Image.open(run_dir / name) as image:
            assert image.format == "PNG" and min(image.size) >= 300
    assert (run_dir / "best.keras").stat().st_size > 100_000
    log = (run_dir / "training_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch") and len(log) == 3
    assert list((run_dir / "tensorboard" / "validation").glob("events.out.tfevents.*"))


def test_same_seed_same_model_next_version_and_keep(published_model, tmp_path: Path) -> None:
    """Re-run the fixture's command into a copy of its repository, with --keep 1."""
    repo = tmp_path / "models"
    shutil.copytree(published_model.repo, repo)
    # Without rollout state: its labels would keep version 1 from --keep (test_publish.py).
    (repo / "models.config").unlink()
    run_dir = tmp_path / "run"
    fixture = json.loads((published_model.run_dir / "metrics.json").read_text())
    mnist_dir = fixture["training"]["data_dir"]
    result = run_python(
        "-m", "trainer", "train", "--dataset", "mnist", "--data-dir", mnist_dir,
        "--model", "mlp", "--epochs", "2", "--limit", "6000", "--seed", "7",
        "--model-repo", str(repo), "--model-name", "mnist", "--run-dir", str(run_dir),
        "--keep", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # Non-TTY progress: one line per epoch.
    assert re.search(r"^epoch 2/2 .*val_accuracy", result.stdout, re.MULTILINE)
    assert "pruned versions: 1" in result.stdout
    assert sorted(path.name for path in (repo / "mnist").iterdir()) == ["2"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["version"] == 2
    # --seed turns on op determinism: the same command gives the same model.
    assert metrics["test_loss"] == fixture["test_loss"]
    assert metrics["confusion_matrix"] == fixture["confusion_matrix"]


def test_min_accuracy_refuses_to_publish(fashion_mnist_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    result = run_python(
        "-m", "trainer", "train", "--dataset", "fashion_mnist", "--model", "cnn",
        "--epochs", "1", "--limit", "1200", "--seed", "3", "--min-accuracy", "0.99",
        "--model-repo", str(repo), "--model-name", "fashion", "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"^error: test accuracy 0\.\d+ is below --min-accuracy 0\.99; nothing "
                     r"published$", result.stderr, re.MULTILINE)  # fmt: skip
    assert not (repo / "fashion").exists() or list((repo / "fashion").iterdir()) == []
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["published"] is False and "below --min-accuracy" in metrics["publish_refused"]
    assert metrics["dataset"] == "fashion_mnist"
