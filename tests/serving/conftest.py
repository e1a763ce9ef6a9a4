"""Fixtures for the server tests: real test digits and small SavedModels built on the spot."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from serving_support import export_contract_model, export_half_plus_two


def read_idx_images(path: Path, count: int) -> np.ndarray:
    with gzip.open(path, "rb") as stream:
        data = stream.read(16 + count * 28 * 28)
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, 28, 28, 1)


@pytest.fixture(scope="session")
def test_digits(mnist_dir: Path) -> np.ndarray:
    """The first 16 real MNIST test images, uint8 [16, 28, 28, 1]."""
    return read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz", 16).copy()


@pytest.fixture(scope="session")
def contract_versions(tmp_path_factory, test_digits) -> dict[int, tuple[Path, np.ndarray]]:
    """Three differently seeded contract models: version -> (export folder, expected
    probabilities for `test_digits`). Built once, copied into repositories by the tests."""
    root = tmp_path_factory.mktemp("contract-exports")
    versions = {}
    for version in (1, 2, 3):
        folder = root / f"seed-{version}"
        serve = export_contract_model(folder, seed=version, warmup_images=test_digits[:2])
        versions[version] = (folder, serve(test_digits)["probabilities"].numpy())
    return versions


@pytest.fixture(scope="session")
def half_plus_two(tmp_path_factory) -> Path:
    """Base path of a TF1 graph SavedModel `y = 0.5 x + 2` (version 1)."""
    base = tmp_path_factory.mktemp("tf1") / "half_plus_two"
    export_half_plus_two(base / "1")
    return base
