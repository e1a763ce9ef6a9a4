"""scripts/serve_local.sh: refuses bad starts clearly, and `stop` never kills a stranger."""

from __future__ import annotations

import socket
import subprocess
import sys

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
                         "--model-base-path", str(tmp_path / "missing"))  # fmt: skip
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
                             "--model-base-path", str(tmp_path / "mnist"),
                             "--grpc-port", port, "--rest-port", "1")  # fmt: skip
    assert result.returncode == 1
    assert f"port {port} is taken" in result.stderr
    assert not (tmp_path / "server.pid").exists()


def test_unknown_option_is_rejected():
    result = serve_local("start", "--bogus", "1")
    assert result.returncode == 2
    assert "unknown option --bogus" in result.stderr
