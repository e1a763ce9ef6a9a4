"""make_repository's command line: clear one-line errors before any TensorFlow work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conformance_support import REPO_ROOT


def run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tests.conformance.make_repository", *arguments],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_names_every_option():
    result = run("--help")
    assert result.returncode == 0
    for option in ("--mnist-dir", "--config-base-path", "directory"):
        assert option in result.stdout


def test_missing_mnist_dir_is_one_clear_line(tmp_path: Path):
    result = run(str(tmp_path / "repository"), "--mnist-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --mnist-dir {tmp_path / 'nowhere'} is not a directory"
    ]
    assert not (tmp_path / "repository").exists()


def test_mnist_dir_without_idx_files(tmp_path: Path):
    result = run(str(tmp_path / "repository"), "--mnist-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: train-images-idx3-ubyte(.gz) not found in ")


def test_refuses_to_overwrite_a_version(tmp_path: Path):
    (tmp_path / "mnist" / "1").mkdir(parents=True)
    result = run(str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'mnist' / '1'} already exists"
