"""`make k8s-check` passes on the repository and fails on each breakage it guards against."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_support import REPO_ROOT

CHECKOV = REPO_ROOT / ".venv-tools" / "bin" / "checkov"
HAVE_CHECKOV = (REPO_ROOT / ".venv-tools" / ".installed").exists() and CHECKOV.exists()
needs_checkov = pytest.mark.skipif(
    not HAVE_CHECKOV, reason="checkov not installed (`make tools` installs it into .venv-tools)"
)


def k8s_check(repo: Path, *, checkov: bool = HAVE_CHECKOV) -> subprocess.CompletedProcess:
    """scripts/k8s_check.py on a copy of the repository's deployment files."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "k8s_check.py"),
         "--k8s-dir", str(repo / "k8s"), "--repo-root", str(repo),
         "--checkov", str(CHECKOV) if checkov else ""],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """What the checks read: k8s/, the Dockerfiles and serving/'s config files."""
    shutil.copytree(REPO_ROOT / "k8s", tmp_path / "k8s")
    for dockerfile in REPO_ROOT.glob("Dockerfile*"):
        shutil.copy(dockerfile, tmp_path)
    (tmp_path / "serving").mkdir()
    for name in ("compose.yaml", "models.config", "batching.config", "monitoring.config"):
        shutil.copy(REPO_ROOT / "serving" / name, tmp_path / "serving")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first occurrence of `old` that is not inside a comment line."""
    text = path.read_text()
    start = 0
    while (found := text.find(old, start)) != -1:
        line_start = text.rfind("\n", 0, found) + 1
        if not text[line_start:found].lstrip().startswith("#"):
            path.write_text(text[:found] + new + text[found + len(old) :])
            return
        start = found + 1
    raise ValueError(f"{old!r} not in {path} outside comments")


def failed_checks(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("FAIL")]


# Each case breaks one thing the way a careless edit would, and names the check that must catch it.
BREAKAGES = {
    "yaml syntax": (
        "k8s/base/service-tf-serving.yaml", "  type: ClusterIP\n", "  type: ClusterIP\n bad: [\n",
        "render cpu",
    ),
    "missing resource file": (
        "k8s/base/kustomization.yaml", "  - job-score.yaml\n", "  - job-scoring.yaml\n",
        "render gpu",
    ),
    "unknown field": (
        "k8s/base/deployment-tf-serving.yaml", "          imagePullPolicy: Always\n",
        "          imagePullPolicy: Always\n          readinesProbe: {}\n",
        "schemas cpu",
    ),
    "wrong type": (
        "k8s/base/pdb-tf-serving.yaml", "minAvailable: 1", "minAvailable: [1]",
        "schemas gpu",
    ),
    "gpu patch typo": (
        "k8s/overlays/gpu/patch-train-gpu.yaml", "      tolerations:", "      toleration:",
        "schemas gpu",
    ),
    "unpinned base image": (
        "Dockerfile.client", "ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm",
        "ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm\nFROM python:latest AS scratchpad",
        "hadolint Dockerfile.client",
    ),
    "config copy drifted": (
        "k8s/base/tf-serving/batching.config", "value: 128", "value: 64",
        "serving config batching.config",
    ),
    "template does not parse": (
        "serving/models.config", "versions: 1", "version: 1",
        "serving config models.config",
    ),
    "config does not parse": (
        "serving/batching.config", "num_batch_threads {", "num_batch_thread {",
        "serving config batching.config",
    ),
    "compose names a missing file": (
        "serving/compose.yaml", "=/config/monitoring.config", "=/config/monitor.config",
        "compose serving/compose.yaml",
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", BREAKAGES)
def test_a_broken_file_fails_the_check(repo_copy, case):
    path, old, new, check = BREAKAGES[case]
    edit(repo_copy / path, old, new)
    # checkov is the slowest step and has its own case below.
    result = k8s_check(repo_copy, checkov=False)
    assert result.returncode == 1, result.stdout
    assert any(line.startswith(f"FAIL  {check}") for line in failed_checks(result)), result.stdout


@pytest.mark.slow
@needs_checkov
def test_policy_violation_fails_checkov(repo_copy):
    edit(
        repo_copy / "k8s/base/job-score.yaml",
        "            readOnlyRootFilesystem: true\n            runAsNonRoot: true\n"
        "            capabilities:\n              drop:\n                - ALL\n"
        "          volumeMounts:",
        "            readOnlyRootFilesystem: false\n            runAsNonRoot: true\n"
        "            capabilities:\n              drop:\n                - ALL\n"
        "          volumeMounts:",
    )
    result = k8s_check(repo_copy)
    assert result.returncode == 1, result.stdout
    assert [line[:13] for line in failed_checks(result)] == ["FAIL  checkov"]
    assert "CKV_K8S_22" in result.stdout  # "Use read-only filesystem for containers"


@pytest.mark.slow
def test_make_k8s_check_passes_on_the_repository_then_fails_on_a_broken_manifest(repo_copy):
    """The Makefile target itself, as CI runs it: on the repository's own tree with every check
    (checkov too, where .venv-tools has it), then on a copy of k8s/ with a broken manifest."""
    # The venv exists already (the test runs in it); never let a test reinstall it.
    command = ["make", "--no-print-directory", "-C", str(REPO_ROOT), "k8s-check",
               "--assume-old=.venv/.installed"]  # fmt: skip
    # Without .venv-tools, `make k8s-check` would first install checkov: skip the linter then.
    no_checkov = ["CHECKOV=", "--assume-old=.venv-tools/.installed"]
    # The real tree, with the Makefile's default relative K8S_DIR (k8s).
    intact = subprocess.run(
        command + ([] if HAVE_CHECKOV else no_checkov),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "k8s-check: all checks passed" in intact.stdout
    for check in ("render cpu", "render gpu", "schemas cpu", "hadolint Dockerfile.gpu",
                  "hadolint Dockerfile.client", "serving config models.config"):  # fmt: skip
        assert f"ok    {check}" in intact.stdout
    if HAVE_CHECKOV:
        assert "ok    checkov" in intact.stdout

    edit(repo_copy / "k8s/base/hpa-tf-serving.yaml", "maxReplicas: 8", "maxReplicas: eight")
    # Another relative K8S_DIR: every tool must resolve it. The break is a schema error, which
    # needs no checkov to catch (checkov's own case is test_policy_violation_fails_checkov).
    k8s_dir = os.path.relpath(repo_copy / "k8s", REPO_ROOT)
    broken = subprocess.run(
        [*command, f"K8S_DIR={k8s_dir}", *no_checkov],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert broken.returncode != 0, broken.stdout
    assert "FAIL  schemas cpu" in broken.stdout
    # Every rendering (overlays alone and with components) on both Kubernetes versions.
    assert "k8s-check: 8 check(s) failed" in broken.stderr
