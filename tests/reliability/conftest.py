"""Fixtures of the reliability tests: real MNIST digits as PNGs, ten times as many hard-linked
with the predictions of an uninterrupted run of them, and `figures`, which prints each test's
one-line summary and repeats it at the end of the run (RELIABILITY.md's figures come from there)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from reliability_support import MODEL, N_DIGITS, load_mnist_test, run_client, write_pngs

_FIGURES = pytest.StashKey[list[str]]()
COPIES = 10  # many_digits holds 10 x N_DIGITS files


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
def many_digits(served_model, digit_folder, tmp_path_factory) -> tuple[Path, int, Path]:
    """COPIES hard-linked copies of the digit folder (root/copyNN/<label>/<index>.png), their
    count, and the predictions file of one uninterrupted gRPC `score` of them.

    The client flushes rows every FLUSH_SECONDS (0.25 s) and scores ~1,000-2,500 files a second
    here: 600 files are gone in one or two flushes, too few to kill a run in the middle of."""
    root = tmp_path_factory.mktemp("reliability-many-digits")
    folder, count = root / "digits", 0
    for copy in range(COPIES):
        for source in sorted(digit_folder[0].rglob("*.png")):
            target = folder / f"copy{copy:02d}" / source.relative_to(digit_folder[0])
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, target)
            count += 1
    reference = root / "reference.csv"
    result = run_client(
        "score", folder, "--out", reference, "-s", f"grpc://{served_model.grpc_target}",
        "-m", MODEL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return folder, count, reference


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
