"""Fixtures for the deployment tests: rendered overlays and the pins in pyproject.toml."""

from __future__ import annotations

import tomllib

import pytest
from deploy_support import K8S_DIR, OVERLAYS, REPO_ROOT, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Every overlay, rendered by the venv's kubectl: {"cpu": [objects], "gpu": [objects]}."""
    return {overlay: render(K8S_DIR / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="session")
def tensorflow_version(pyproject: dict) -> str:
    """The trainer's TensorFlow pin (the `train` extra), e.g. "2.21.0"."""
    for requirement in pyproject["project"]["optional-dependencies"]["train"]:
        name, _, version = requirement.partition("==")
        if name.strip() == "tensorflow":
            return version.strip()
    pytest.fail("pyproject.toml pins no tensorflow==X in the train extra")
