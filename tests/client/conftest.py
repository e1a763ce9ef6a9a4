"""Fixtures of the client tests: the thin client venv of test_thin_install.py, whose build
(`pip install -e '.[client]'`, about a minute on 2 cores, mostly unpacking and building) starts
when the first client test does and runs beside the others, niced, instead of in front of the
thin tests. The install itself is the test's: the same commands, in a fresh venv from a clean
copy of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
THIN_TESTS = "test_thin_install.py"
# What a checkout has that the install needs; compiled modules and caches are left behind, so
# the build must compile the protos itself.
PROJECT_FILES = ("pyproject.toml", "README.md", "constraints.txt")
PACKAGES = ("common", "client", "trainer", "serving")
NOT_COPIED = shutil.ignore_patterns("__pycache__", "*_pb2.py", "*_pb2_grpc.py", "_compiled.py")


def thin_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(MPLCONFIGDIR=str(home / "mpl"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


class ThinVenvBuild:
    """A fresh venv with the client extra of a clean copy of the project, built in a thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.source = root / "project"
        self.venv = root / "venv"
        self.env = thin_env(root)
        self._process: subprocess.Popen | None = None
        self._stopped = False
        self._failure: str | None = None
        self._lock = threading.Lock()
        self._copy_source()
        self._thread = threading.Thread(target=self._build, daemon=True)
        self._thread.start()

    def _copy_source(self) -> None:
        self.source.mkdir(parents=True)
        for name in PROJECT_FILES:
            shutil.copy2(REPO_ROOT / name, self.source / name)
        for package in PACKAGES:
            shutil.copytree(REPO_ROOT / package, self.source / package, ignore=NOT_COPIED)
        # The build must compile the protos itself (the install then adds them to this copy).
        assert not list((self.source / "client").rglob("*_pb2.py"))

    def _run(self, *command: str, timeout: float) -> subprocess.CompletedProcess:
        with self._lock:
            if self._stopped:
                raise RuntimeError("stopped")
            self._process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=self.env, cwd=self.root, preexec_fn=lambda: os.nice(5),
            )  # fmt: skip
        stdout, stderr = self._process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(command, self._process.returncode, stdout, stderr)

    def _build(self) -> None:
        try:
            for command, timeout in (
                ((sys.executable, "-m", "venv", str(self.venv)), 120),
                ((str(self.python), "-m", "pip", "install", "--quiet",
                  "-c", str(self.source / "constraints.txt"), "-e", f"{self.source}[client]"),
                 900),
            ):  # fmt: skip
                result = self._run(*command, timeout=timeout)
                if result.returncode != 0:
                    self._failure = f"{command}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
                    return
        except Exception as error:  # reported by wait(), in the test that needs the venv
            self._failure = repr(error)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def wait(self) -> Path:
        """The venv's python, once the install has finished; fails the test if it did not."""
        self._thread.join(timeout=1200)
        assert not self._thread.is_alive(), "the thin venv build did not finish in 20 minutes"
        assert self._failure is None, self._failure
        return self.python

    def stop(self) -> None:
        """Stop a build still under way (by its process's PID)."""
        with self._lock:
            self._stopped = True
            process = self._process
        if process is not None and process.poll() is None:
            process.kill()
        self._thread.join(timeout=60)


@pytest.fixture(scope="session", autouse=True)
def thin_venv_build(request, tmp_path_factory):
    """Started at the first client test when test_thin_install.py's tests are selected."""
    if not any(item.path.name == THIN_TESTS for item in request.session.items):
        yield None
        return
    build = ThinVenvBuild(tmp_path_factory.mktemp("thin"))
    yield build
    build.stop()
