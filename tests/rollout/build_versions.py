"""Build the rollout test's model versions into DIR/<n>/ (not a repository: the test publishes
them one by one with the trainer's publish()).

    python -m tests.rollout.build_versions DIR MNIST_DIR

Version n is make_repository's small MLP: version 1 keeps its seeded initial weights (a model
that is clearly worse), versions 2 and 3 train 2 and 3 epochs on 400 real digits. About as
long as the conformance repository takes: a few seconds once TensorFlow has loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conformance.make_repository import build_version, load_digits


def main(directory: Path, mnist_dir: Path) -> None:
    train_images, train_labels, samples = load_digits(mnist_dir)
    for version in (1, 2, 3):
        digits = None if version == 1 else (train_images, train_labels)
        build_version(version, digits, samples, directory / str(version))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
