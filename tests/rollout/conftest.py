"""Fixtures of the rollout tests: tiny real model versions and a labelled image folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from conformance.make_repository import read_idx
from harness import run_python

EVALUATION_IMAGES = 300  # MNIST test digits in the labelled folder promote evaluates on


@pytest.fixture(scope="session")
def built_versions(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folders 1, 2, 3, each a complete SavedModel version (build_versions.py)."""
    directory = tmp_path_factory.mktemp("rollout-versions")
    result = run_python("-m", "tests.rollout.build_versions", str(directory), str(mnist_dir))
    if result.returncode != 0:
        pytest.fail(f"build_versions failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return directory


@pytest.fixture(scope="session")
def labelled_folder(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EVALUATION_IMAGES MNIST test digits (after the ones build_versions samples) as PNGs in
    one folder per digit."""
    from PIL import Image

    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[100 : 100 + EVALUATION_IMAGES]
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")[100 : 100 + EVALUATION_IMAGES]
    folder = tmp_path_factory.mktemp("rollout-images")
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (folder / str(label)).mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / str(label) / f"{index:04d}.png")
    return folder
