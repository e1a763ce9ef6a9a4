"""The client extra alone, as a user installs it: a fresh venv, `pip install -e '.[client]'` of a
clean copy of the project (no compiled protos), no TensorFlow; then every command, from that
venv, against the local server (run by the full dev venv) over gRPC and REST."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from client_fixtures import load_mnist_test, save_png

from client.outputs import read_rows

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N_DIGITS = 200
HEAVY = ("tensorflow", "tensorflow-serving-api", "tensorflow-cpu", "keras", "tensorboard", "jax")
MAX_MB = 400  # measured: about 250 MB; with TensorFlow it was 2.2 GB


@pytest.fixture(scope="module")
def thin(thin_venv_build) -> tuple[Path, dict[str, str], Path]:
    """(the thin venv's python, its environment, a working folder outside the checkout).

    The venv is conftest.py's ThinVenvBuild: `python -m venv` and `pip install -c
    constraints.txt -e '<copy>[client]'` of a copy of the project without compiled protos,
    started beside the earlier client tests; here it is waited for."""
    python = thin_venv_build.wait()
    work = thin_venv_build.root / "work"
    work.mkdir()
    return python, thin_venv_build.env, work


def run(thin, *args: object) -> subprocess.CompletedProcess:
    python, env, work = thin
    return subprocess.run(
        [str(python), *map(str, args)],
        capture_output=True, text=True, timeout=300, env=env, cwd=work,
    )  # fmt: skip


def client(thin, *args: object) -> subprocess.CompletedProcess:
    result = run(thin, "-m", "client", *args)
    assert result.returncode == 0, f"client {args}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def digits(mnist_dir, tmp_path_factory) -> Path:
    """Real MNIST test digits as <label>/<index>.png."""
    root = tmp_path_factory.mktemp("thin-digits")
    images, labels = load_mnist_test(mnist_dir, N_DIGITS)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        save_png(root / f"{label}/{index:05d}.png", image)
    return root


def test_the_client_extra_installs_no_tensorflow(thin):
    result = run(thin, "-c", "import tensorflow")
    assert result.returncode != 0 and "No module named 'tensorflow'" in result.stderr
    listed = run(thin, "-m", "pip", "list", "--format=json")
    names = {item["name"].lower() for item in json.loads(listed.stdout)}
    assert not names & set(HEAVY), names & set(HEAVY)
    assert {"grpcio", "protobuf"} <= names
    assert "grpcio-tools" not in names  # a build requirement only
    venv = thin[0].parent.parent
    size_mb = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file()) / 2**20
    print(f"thin client venv: {size_mb:.0f} MB")
    assert size_mb < MAX_MB


@pytest.fixture(scope="module")
def scored(thin, served_model, digits, tmp_path_factory) -> dict[str, list[dict]]:
    """score's rows from the thin venv, over each transport."""
    out = tmp_path_factory.mktemp("thin-scores")
    rows = {}
    for transport, server in servers(served_model).items():
        path = out / f"{transport}.csv"
        client(thin, "score", digits, "--out", path, "--server", server, "--batch-size", "64")
        rows[transport] = read_rows(path)
    return rows


def servers(served_model) -> dict[str, str]:
    return {"grpc": f"grpc://{served_model.grpc_target}", "rest": served_model.rest_url}


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_every_command_works_from_the_thin_venv(
    thin, served_model, digits, scored, transport, tmp_path
):
    server = servers(served_model)[transport]
    assert "is AVAILABLE" in client(thin, "wait", "--server", server, "--timeout", "60").stdout
    status = json.loads(client(thin, "status", "--server", server, "--json").stdout)
    assert [v["state"] for v in status["versions"]] == ["AVAILABLE"]
    metadata = json.loads(client(thin, "metadata", "--server", server, "--json").stdout)
    assert metadata["version"] == 1, metadata

    files = sorted(digits.rglob("*.png"))[:3]
    predicted = json.loads(client(thin, "predict", *files, "--server", server, "--json").stdout)
    assert [row["error"] for row in predicted] == [None] * 3

    rows = scored[transport]
    assert len(rows) == N_DIGITS and all(row["error"] is None for row in rows)
    correct = [row["class_id"] == int(row["path"].split("/")[0]) for row in rows]
    assert sum(correct) / len(rows) > 0.8  # the briefly trained model of the e2e tests

    result = client(
        thin, "evaluate", digits, "--report-dir", tmp_path / "report", "--server", server
    )
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["accuracy"] == pytest.approx(sum(correct) / len(rows))
    assert (tmp_path / "report" / "report.html").exists(), result.stdout


def test_both_transports_give_the_same_predictions(scored):
    by_grpc, by_rest = scored["grpc"], scored["rest"]
    assert [row["path"] for row in by_grpc] == [row["path"] for row in by_rest]
    for grpc_row, rest_row in zip(by_grpc, by_rest, strict=True):
        assert grpc_row["class_id"] == rest_row["class_id"]
        assert grpc_row["confidence"] == pytest.approx(rest_row["confidence"], abs=1e-6)
