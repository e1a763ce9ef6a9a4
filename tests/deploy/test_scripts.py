"""scripts/serve_local.sh: refuses bad starts clearly, and `stop` never kills a stranger."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from deploy_support import REPO_ROOT

SERVE_LOCAL = REPO_ROOT / "scripts" / "serve_local.sh"


def serve_local(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SERVE_LOCAL), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_scripts_are_valid_bash():
    for script in (REPO_ROOT / "scripts").glob("*.sh"):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"


def test_stop_without_a_server_is_a_no_op(tmp_path):
    result = serve_local("stop", "--pid-file", str(tmp_path / "server.pid"))
    assert result.returncode == 0
    assert "not running" in result.stdout


def test_stop_leaves_a_process_that_is_not_the_server_alone(tmp_path):
    # A stale pid file whose pid now belongs to some other process.
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file = tmp_path / "server.pid"
        pid_file.write_text(str(stranger.pid))
        result = serve_local("stop", "--pid-file", str(pid_file))
        assert result.returncode == 0
        assert stranger.poll() is None, "stop killed a process that is not the server"
        assert not pid_file.exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_start_without_a_model_repository_says_so(tmp_path):
    result = serve_local("start", "--pid-file", str(tmp_path / "server.pid"),
                         "--model-repo", str(tmp_path / "missing"))  # fmt: skip
    assert result.returncode == 1
    assert "no model repository" in result.stderr and "make train" in result.stderr
    assert not (tmp_path / "server.pid").exists()


def test_start_on_a_taken_port_says_which(tmp_path):
    (tmp_path / "mnist").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = serve_local("start", "--pid-file", str(tmp_path / "server.pid"),
                             "--model-repo", str(tmp_path),
                             "--grpc-port", port, "--rest-port", "1")  # fmt: skip
    assert result.returncode == 1
    assert f"port {port} is taken" in result.stderr
    assert not (tmp_path / "server.pid").exists()


def test_unknown_option_is_rejected():
    result = serve_local("start", "--bogus", "1")
    assert result.returncode == 2
    assert "unknown option --bogus" in result.stderr


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for the venv's python: training ends at once with $TRAIN_EXIT (0: published version
# 1), the image export runs until killed (recording its pid), and the server dies at start-up,
# so the demo fails mid-way.
case "$*" in
    "-m trainer train"*) exit "${TRAIN_EXIT:-0}" ;;
    "-c import json"*) echo 1 ;;
    "-m trainer export-images"*) echo $$ > "$EXPORT_PID_FILE"; exec sleep 120 ;;
    *) exit 1 ;;
esac
"""


def alive(pid: int) -> bool:
    """Running, not merely an unreaped zombie (PID 1 in a container may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def demo_tree(tmp_path: Path) -> None:
    """The demo in a scratch tree (it writes data/, runs/ and models/ next to scripts/), with a
    fake venv and a `docker` that answers no engine, so it takes the local-server path."""
    (tmp_path / "scripts").mkdir()
    for name in ("demo.sh", "serve_local.sh"):
        (tmp_path / "scripts" / name).write_bytes((REPO_ROOT / "scripts" / name).read_bytes())
        (tmp_path / "scripts" / name).chmod(0o755)
    for tool, text in ((".venv/bin/python", FAKE_PYTHON), ("bin/docker", "#!/bin/sh\nexit 1\n")):
        (tmp_path / tool).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / tool).write_text(text)
        (tmp_path / tool).chmod(0o755)
    (tmp_path / "models" / "mnist").mkdir(parents=True)
    # What the first publish writes; the fake trainer publishes nothing.
    (tmp_path / "models" / "models.config").write_text("")


def run_demo(tmp_path: Path, **environment: str) -> subprocess.CompletedProcess:
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(str(probe.getsockname()[1]))
    environment = {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
        "EXPORT_PID_FILE": str(tmp_path / "export.pid"),
        "GRPC_PORT": ports[0],
        "REST_PORT": ports[1],
        "MNIST_DIR": "",
        **environment,
    }
    return subprocess.run(
        [str(tmp_path / "scripts" / "demo.sh")],
        env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_failed_demo_stops_the_background_image_export(tmp_path):
    demo_tree(tmp_path)
    export_pid_file = tmp_path / "export.pid"
    result = run_demo(tmp_path)
    export_pid = int(export_pid_file.read_text())
    try:
        assert result.returncode == 1, result.stdout + result.stderr
        assert "the server exited during start-up" in result.stderr
        # Give the SIGTERM a moment to land, then the exporter must be gone.
        for _ in range(50):
            if not alive(export_pid):
                break
            time.sleep(0.1)
        assert not alive(export_pid), "the image export outlived the demo"
        assert not (tmp_path / "data" / ".mnist-test.complete").exists()
    finally:
        if alive(export_pid):
            os.kill(export_pid, signal.SIGKILL)


def test_a_refused_publish_keeps_serving_the_existing_versions(tmp_path):
    demo_tree(tmp_path)
    # Nothing published yet: there is nothing to serve, and the demo says why it stops.
    result = run_demo(tmp_path, TRAIN_EXIT="3")
    assert result.returncode == 1
    assert "publishing refused (above) and models/mnist has no version to serve" in result.stderr
    # With a version already published, it says so and goes on to serve it.
    (tmp_path / "models" / "mnist" / "1").mkdir()
    result = run_demo(tmp_path, TRAIN_EXIT="3")
    assert "demo: publishing refused (above): nothing new was published" in result.stdout
    assert "starting the local server" in result.stdout
    assert "the server exited during start-up" in result.stderr  # the fake server, not the demo
    # Any other training failure stops the demo with the trainer's exit code.
    result = run_demo(tmp_path, TRAIN_EXIT="2")
    assert result.returncode == 2 and "starting the local server" not in result.stdout
