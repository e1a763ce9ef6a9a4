"""Fixtures shared by every test folder: real data, a published model, a served model.

Plain helpers (free ports, subprocesses, the local server) live in harness.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import ServerProcess, find_mnist_dir, local_server, run_python

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def require_dir(path: Path | None, what: str, how: str) -> Path:
    """Return `path`, or skip (outside CI) / fail (in CI) with a message saying how to fix it."""
    if path is not None and path.exists():
        return path
    message = f"{what} not found ({how})"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The four original MNIST IDX files (CI: ../shared/data/mnist)."""
    return require_dir(
        find_mnist_dir(), "MNIST IDX files", "set MNIST_DIR or put them in ../shared/data/mnist"
    )


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """Fashion-MNIST IDX files from Debian's dataset-fashion-mnist package."""
    return require_dir(
        FASHION_MNIST_DIR if FASHION_MNIST_DIR.exists() else None,
        "Fashion-MNIST",
        "apt-get install -y dataset-fashion-mnist",
    )


@dataclass(frozen=True)
class PublishedModel:
    """A small MLP trained on a real MNIST subset and published by the trainer."""

    repo: Path  # the model repository (base of <name>/<version>)
    name: str
    run_dir: Path

    @property
    def base_path(self) -> Path:
        return self.repo / self.name

    def version_dir(self, version: int = 1) -> Path:
        return self.base_path / str(version)


@pytest.fixture(scope="session")
def published_model(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> PublishedModel:
    """Train for one epoch on 6,000 real MNIST digits and publish version 1 (about 20 s)."""
    root = tmp_path_factory.mktemp("published")
    model = PublishedModel(repo=root / "models", name="mnist", run_dir=root / "run")
    result = run_python(
        "-m", "trainer", "train",
        "--dataset", "mnist", "--data-dir", str(mnist_dir),
        "--model", "mlp", "--epochs", "2", "--limit", "6000", "--seed", "7",
        "--model-repo", str(model.repo), "--model-name", model.name,
        "--run-dir", str(model.run_dir),
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"trainer failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    if not (model.version_dir(1) / "saved_model.pb").exists():
        pytest.fail(f"trainer did not publish {model.version_dir(1)}")
    return model


@pytest.fixture(scope="session")
def served_model(
    published_model: PublishedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The local server, serving `published_model` as `mnist` (gRPC and REST on free ports)."""
    log_dir = tmp_path_factory.mktemp("server-logs")
    with local_server(
        f"--model_name={published_model.name}",
        f"--model_base_path={published_model.base_path}",
        log_dir=log_dir,
        model_name=published_model.name,
    ) as server:
        yield server
