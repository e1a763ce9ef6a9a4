"""End to end: a trainer-published model on the local server, real MNIST PNGs, both transports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from client_fixtures import load_mnist_test, make_bad_files, save_png

from client.outputs import read_rows
from common import contract

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
N_DIGITS = 600


def client_cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "client", *map(str, args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def mnist_pngs(mnist_dir, tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """The first MNIST test digits as PNGs under <label>/<index>.png, and path -> pixels."""
    root = tmp_path_factory.mktemp("mnist-pngs")
    images, labels = load_mnist_test(mnist_dir, N_DIGITS)
    pixels = {}
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        relative = f"{label}/{index:05d}.png"
        save_png(root / relative, image)
        pixels[relative] = image
    return root, pixels


@pytest.fixture(scope="module")
def in_process(published_model, mnist_pngs) -> dict[str, tuple[int, np.ndarray]]:
    """path -> (class id, probabilities) from the SavedModel run in this process by TensorFlow."""
    import tensorflow as tf

    _, pixels = mnist_pngs
    paths = sorted(pixels)
    batch = np.stack([pixels[path] for path in paths])[..., None]
    loaded = tf.saved_model.load(str(published_model.version_dir(1)))
    signature = loaded.signatures[contract.SERVING_DEFAULT]
    outputs = signature(**{contract.IMAGES_INPUT: tf.constant(batch, dtype=tf.uint8)})
    class_ids = outputs[contract.CLASS_IDS].numpy()
    probabilities = outputs[contract.PROBABILITIES].numpy()
    return {path: (int(class_ids[i]), probabilities[i]) for i, path in enumerate(paths)}


@pytest.mark.parametrize("transport", ["grpc", "rest"])
@pytest.mark.parametrize("signature", [contract.SERVING_DEFAULT, contract.SERVING_BYTES])
def test_score_gives_the_in_process_predictions(
    served_model, mnist_pngs, in_process, transport, signature, tmp_path
):
    # serving_bytes: the PNGs are sent as they are and decoded by the model's graph, which
    # must give the pixels Pillow gives here, so the same predictions.
    root, _ = mnist_pngs
    server = f"grpc://{served_model.grpc_target}" if transport == "grpc" else served_model.rest_url
    out = tmp_path / "preds.csv"
    result = client_cli(
        "score", root, "--out", out, "--server", server, "--batch-size", "50",
        "--signature", signature,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = read_rows(out)
    assert [row["path"] for row in rows] == sorted(in_process)
    for row in rows:
        class_id, probabilities = in_process[row["path"]]
        assert row["error"] is None
        assert row["class_id"] == class_id, row
        assert row["class"] == str(class_id)
        assert row["confidence"] == pytest.approx(float(probabilities[class_id]), abs=1e-6)
        assert row["top_k"][0]["class_id"] == class_id
        assert row["model_version"] == 1
    accuracy = np.mean([row["class_id"] == int(row["path"].split("/")[0]) for row in rows])
    assert accuracy > 0.8  # a real model, trained briefly on 6,000 digits


def test_bad_files_get_rows_and_partial_exit_code(served_model, mnist_pngs, tmp_path):
    _, pixels = mnist_pngs
    folder = tmp_path / "mixed"
    for relative in sorted(pixels)[:20]:
        save_png(folder / "good" / relative, pixels[relative])
    make_bad_files(folder)
    out = tmp_path / "preds.jsonl"
    result = client_cli(
        "score", folder, "--out", out, "--server", f"grpc://{served_model.grpc_target}"
    )
    assert result.returncode == 3, result.stderr
    rows = {row["path"]: row for row in read_rows(out)}
    assert len(rows) == 24
    reasons = {path: row["error"] for path, row in rows.items() if row["error"]}
    assert set(reasons) == {"bad_empty.png", "bad_truncated.png", "bad_text.png", "bad_huge.png"}
    assert all(reason and len(reason) < 200 for reason in reasons.values()), reasons
    assert all(
        row["class_id"] is not None for path, row in rows.items() if path.startswith("good/")
    )


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_files_the_model_cannot_decode_cost_only_their_own_rows(
    served_model, mnist_pngs, transport, tmp_path
):
    # The server refuses a whole batch of encoded images for one it cannot decode; the client
    # halves such a batch until that file is alone.
    _, pixels = mnist_pngs
    folder = tmp_path / "mixed"
    for relative in sorted(pixels)[:20]:
        save_png(folder / "good" / relative, pixels[relative])
    make_bad_files(folder)
    server = f"grpc://{served_model.grpc_target}" if transport == "grpc" else served_model.rest_url
    out = tmp_path / "preds.csv"
    result = client_cli(
        "score", folder, "--out", out, "--server", server, "--signature", contract.SERVING_BYTES
    )
    assert result.returncode == 3, result.stderr
    rows = {row["path"]: row for row in read_rows(out)}
    assert {path for path, row in rows.items() if row["error"]} == {
        "bad_empty.png", "bad_truncated.png", "bad_text.png", "bad_huge.png",
    }  # fmt: skip
    assert rows["bad_empty.png"]["error"] == "empty file"
    assert all(row["class_id"] is not None for path, row in rows.items() if path[:5] == "good/")


def test_status_metadata_wait_and_predict_against_the_real_server(served_model, mnist_pngs):
    grpc_server, rest_server = f"grpc://{served_model.grpc_target}", served_model.rest_url
    waited = client_cli("wait", "--server", grpc_server, "--timeout", "10")
    assert waited.returncode == 0, waited.stderr
    for server in (grpc_server, rest_server):
        status = json.loads(client_cli("status", "--server", server, "--json").stdout)
        assert status["versions"][0]["state"] == "AVAILABLE"
    by_grpc = json.loads(client_cli("metadata", "--server", grpc_server, "--json").stdout)
    by_rest = json.loads(client_cli("metadata", "--server", rest_server, "--json").stdout)
    assert by_grpc == by_rest
    signature = by_grpc["signatures"][contract.SERVING_DEFAULT]
    assert signature["inputs"][contract.IMAGES_INPUT] == {
        "name": contract.IMAGES_INPUT,
        "dtype": contract.IMAGES_DTYPE,
        "shape": [-1, 28, 28, 1],
    }
    assert set(signature["outputs"]) == set(contract.OUTPUT_DTYPES)

    root, _ = mnist_pngs
    files = sorted(root.glob("7/*.png"))[:3]
    predicted = client_cli("predict", *files, "--server", rest_server, "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert len(json.loads(predicted.stdout)) == 3
    missing = client_cli("status", "--server", rest_server, "--model", "nosuchmodel")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


@pytest.mark.parametrize("preprocess", ["auto", "none"])
def test_a_colour_photo_gets_a_warning_from_the_real_mnist_model(
    served_model, mnist_pngs, preprocess, tmp_path
):
    # The case: "9" at 42 % (auto), "6" at 93 % (none), exit 0 and no word of warning.
    import matplotlib

    _, pixels = mnist_pngs
    folder = tmp_path / "mixed"
    digits = sorted(pixels)[:20]
    for relative in digits:
        save_png(folder / relative, pixels[relative])
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    (folder / "photo.jpg").write_bytes(photo.read_bytes())
    out = tmp_path / "preds.csv"
    result = client_cli("score", folder, "--out", out, "--preprocess", preprocess,
                        "--server", f"grpc://{served_model.grpc_target}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {row["path"]: row for row in read_rows(out)}
    assert rows["photo.jpg"]["warning"].startswith("input does not look like a digit")
    # Real digits pass the input check (a briefly trained model may still be unsure of some).
    assert not any("does not look like" in (rows[relative]["warning"] or "") for relative in digits)
    assert "warning: " in result.stderr and "warning column" in result.stderr
