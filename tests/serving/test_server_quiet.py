"""The local server's log holds no TensorFlow start-up noise, unless --verbose asks for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import local_server

pytestmark = pytest.mark.slow

NOISE = ("oneDNN", "cudart_stub", "cuInit", "absl::InitializeLog")


def server_log(half_plus_two: Path, log_dir: Path, *flags: str) -> str:
    with local_server(
        "--model_name=half_plus_two",
        f"--model_base_path={half_plus_two}",
        *flags,
        log_dir=log_dir,
        model_name="half_plus_two",
    ) as server:
        pass
    return server.log()


def test_the_log_has_no_tensorflow_noise_by_default(half_plus_two: Path, tmp_path: Path) -> None:
    log = server_log(half_plus_two, tmp_path)
    assert "server_starting" in log and "half_plus_two" in log, log
    for noise in NOISE:
        assert noise not in log, log


def test_verbose_shows_tensorflow_start_up_lines(half_plus_two: Path, tmp_path: Path) -> None:
    log = server_log(half_plus_two, tmp_path, "--verbose")
    assert "server_starting" in log, log
    assert any(noise in log for noise in NOISE), log
