"""Fixtures of the reliability tests: real MNIST digits as PNGs, the reference predictions of an
uninterrupted run, and `figures`, which prints each test's one-line summary and repeats it at the
end of the run (RELIABILITY.md's figures come from there)."""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_support import MODEL, N_DIGITS, load_mnist_test, run_client, write_pngs

_FIGURES = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def digits(mnist_dir: Path):
    """The first N_DIGITS MNIST test digits uint8 [N, 28, 28] and their labels."""
    return load_mnist_test(mnist_dir, N_DIGITS)


@pytest.fixture(scope="session")
def digit_folder(digits, tmp_path_factory) -> tuple[Path, list[str]]:
    """The digits as <label>/<index>.png, and their relative paths in the client's order."""
    root = tmp_path_factory.mktemp("reliability-digits")
    return root, write_pngs(*digits, root)


@pytest.fixture(scope="session")
def reference(served_model, digit_folder, tmp_path_factory) -> Path:
    """The predictions file (CSV) of one uninterrupted `score` of digit_folder."""
    out = tmp_path_factory.mktemp("reliability-reference") / "reference.csv"
    result = run_client(
        "score", digit_folder[0], "--out", out, "-s", f"grpc://{served_model.grpc_target}",
        "-m", MODEL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def figures(request: pytest.FixtureRequest):
    """record(**numbers): print "reliability <test>: k=v ..." and keep it for the summary."""

    def record(**numbers: object) -> str:
        text = " ".join(f"{key}={value}" for key, value in numbers.items())
        line = f"reliability {request.node.name}: {text}"
        print(line)
        request.config.stash.setdefault(_FIGURES, []).append(line)
        return line

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    lines = config.stash.get(_FIGURES, [])
    if lines:
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line(line)
