"""The Makefile's entry points: help, the GPU training recipe, and its failure without Docker."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from deploy_support import REPO_ROOT

MAKEFILE = REPO_ROOT / "Makefile"


def make(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO_ROOT), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def docker_engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def declared_targets() -> list[str]:
    """Every target a user may type: the names in .PHONY."""
    text = MAKEFILE.read_text().replace("\\\n", " ")
    (phony,) = re.findall(r"^\.PHONY:(.*)$", text, re.MULTILINE)
    return phony.split()


def test_help_lists_every_target_with_its_description():
    result = make("help")
    assert result.returncode == 0, result.stderr
    listed = {}
    for line in result.stdout.splitlines():
        # Strip the colour codes, keep "name  description".
        name, _, description = re.sub(r"\x1b\[[0-9;]*m", "", line).strip().partition(" ")
        listed[name] = description.strip()
    required = {"help", "setup", "test", "test-fast", "lint", "demo", "train", "train-gpu",
                "serve", "serve-local", "stop", "score", "evaluate", "k8s-render", "k8s-check",
                "clean"}  # fmt: skip
    assert required <= set(declared_targets())
    for target in declared_targets():
        assert listed.get(target), f"`make help` does not describe {target}"


def test_train_gpu_builds_and_runs_the_cuda_image_with_the_repository_mounted(tmp_path):
    repo = tmp_path / "repo"
    result = make("-n", "train-gpu", f"MODEL_REPO={repo}", "EPOCHS=3", "MODEL=cnn",
                  "TRAIN_ARGS=--seed 7 --min-accuracy 0.99")  # fmt: skip
    assert result.returncode == 0, result.stderr
    # One line per command, continuations joined, whitespace collapsed.
    commands = re.sub(r"[ \t]+", " ", result.stdout.replace("\\\n", " "))
    build = next(line for line in commands.splitlines() if line.startswith("docker build"))
    assert "-f Dockerfile.gpu" in build
    run = next(line for line in commands.splitlines() if line.startswith("docker run"))
    assert "--gpus all" in run
    # Mounted at its own path: the first publish writes that path into models.config.
    assert f'-v "{repo}:{repo}"' in run
    # The trainer CLI's flags pass through, pointing at the mounted repository.
    for flag in ("train --dataset mnist", "--model cnn", "--epochs 3", f"--model-repo {repo}",
                 "--model-name mnist", "--seed 7 --min-accuracy 0.99"):  # fmt: skip
        assert flag in run, flag
    # Built image and run image are the same tag.
    tag = re.search(r"-t (\S+)", build).group(1)
    assert f" {tag} train " in run


@pytest.mark.skipif(docker_engine_answers(), reason="a Docker engine answers here")
def test_train_gpu_without_docker_stops_at_once_with_one_line():
    started = time.monotonic()
    result = make("train-gpu")
    assert time.monotonic() - started < 30
    assert result.returncode != 0
    # Nothing was built or run: only our explanation, then make's own "Error 1" line.
    # Under `make test` this make is nested and says "make[1]: ***" instead of "make: ***".
    lines = [
        line for line in result.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)
    ]
    assert len(lines) == 1, result.stderr
    assert "no Docker engine" in lines[0] and "make train" in lines[0]
    assert "docker build" not in result.stdout


@pytest.mark.skipif(docker_engine_answers(), reason="a Docker engine answers here")
def test_serve_without_docker_points_at_the_local_server():
    result = make("serve")
    assert result.returncode != 0
    assert "serve-local" in result.stderr


def test_k8s_rollout_runs_the_step_as_a_job_and_wants_one():
    result = make("-n", "k8s-rollout", "STEP=promote /data/in/mnist-test --min-delta 0.01")
    assert result.returncode == 0, result.stderr
    assert (
        "scripts/k8s_rollout.py --kubectl .venv/bin/kubectl -- "
        "promote /data/in/mnist-test --min-delta 0.01"
    ) in result.stdout
    result = make("k8s-rollout", "STEP=")
    assert result.returncode == 2
    assert "say which step" in result.stderr


def test_k8s_render_writes_one_file_per_overlay(tmp_path):
    # The venv exists already; never let a test reinstall it.
    result = make("--assume-old=.venv/.installed", "k8s-render", f"RENDER_DIR={tmp_path}")
    assert result.returncode == 0, result.stderr
    written = result.stdout.split()
    assert written == [f"{tmp_path}/cpu.yaml", f"{tmp_path}/gpu.yaml"]
    for path in written:
        assert "kind: Deployment" in Path(path).read_text()


def test_help_prints_no_colour_codes_into_a_pipe():
    result = make("help")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "tensorboard" in result.stdout


def test_tensorboard_target_serves_the_runs_with_the_pinned_tensorboard():
    result = make("--assume-old=.venv/.installed", "-n", "tensorboard", "TB_PORT=7007")
    assert result.returncode == 0, result.stderr
    command = " ".join(result.stdout.replace("\\\n", " ").split())
    assert ".venv/bin/tensorboard --logdir runs --port 7007" in command
    # TensorBoard is in the train extra, pinned, with the same pin in constraints.txt.
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    (pin,) = [
        item for item in project["project"]["optional-dependencies"]["train"]
        if item.startswith("tensorboard==")
    ]  # fmt: skip
    assert pin in (REPO_ROOT / "constraints.txt").read_text().splitlines()


def test_clean_removes_what_the_readme_examples_write():
    result = make("-n", "clean")
    assert result.returncode == 0, result.stderr
    (remove,) = [line for line in result.stdout.splitlines() if line.startswith("rm -rf")]
    for path in ("runs", "reports", "data", "build", "preds.csv", "report", "digits"):
        assert path in remove.split(), path
    assert "models" not in remove.split()


def test_demo_checks_its_ports_before_training(tmp_path):
    import os
    import signal
    import socket

    if docker_engine_answers():
        pytest.skip("a Docker engine answers here: the demo would use 8500/8501")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "GRPC_PORT": str(port), "REST_PORT": "1", "EPOCHS": "1",
               "MODEL_REPO": str(tmp_path / "models")}  # fmt: skip
        process = subprocess.Popen(
            [str(REPO_ROOT / "scripts" / "demo.sh")], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail("the demo did not stop at the busy port (it went on to train)")
    assert process.returncode != 0
    assert f"port {port} is taken" in stderr
    assert "training" not in stdout
    assert not (tmp_path / "models").exists()
