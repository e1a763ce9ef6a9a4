"""Fixtures of the trainer tests: small synthetic data sets built in tmp folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_helpers import synthetic_arrays, write_idx


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    """train-/t10k- IDX files, 30 training and 12 test images of 8x8, 3 classes."""
    folder = tmp_path / "idx"
    folder.mkdir()
    for prefix, count, seed in (("train", 30, 1), ("t10k", 12, 2)):
        images, labels = synthetic_arrays(count, seed=seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder
