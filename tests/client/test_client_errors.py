"""One error style: one line saying what went wrong and how to fix it (issue 11, item 6)."""

from __future__ import annotations

from client_fixtures import fake, fake_server_instance, free_port, make_uniform_folder
from typer.testing import CliRunner

from client.cli import app

__all__ = ["fake", "fake_server_instance"]  # fixtures used by name

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False)


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_usage_errors_are_one_line_not_a_box(tmp_path):
    for arguments, words in (
        (["evaluate", tmp_path, "--report-dir", tmp_path / "r", "--min-accuracy", "1.5"],
         "Invalid value for '--min-accuracy'"),
        (["score"], "Missing argument"),
        (["status", "--bogus"], "No such option: --bogus"),
        (["nosuchcommand"], "No such command"),
    ):  # fmt: skip
        result = run(*arguments)
        assert result.exit_code == 2, arguments
        line = one_line(result)
        assert words in line and "--help" in line, line
        assert "╭" not in result.stderr


def test_a_rest_address_on_the_grpc_port_says_so(fake):
    port = fake.grpc_url.rsplit(":", 1)[1]
    line = one_line(run("status", "-s", f"http://127.0.0.1:{port}", "--retries", "0"))
    assert "that is a gRPC port" in line
    assert f"--server grpc://127.0.0.1:{port}" in line
    assert "BadStatusLine" not in line and "\\x00" not in line


def test_a_grpc_address_on_the_rest_port_says_so(fake):
    port = fake.rest_url.rsplit(":", 1)[1]
    line = one_line(run("status", "-s", f"grpc://127.0.0.1:{port}", "--retries", "0"))
    assert "that is a REST port" in line and f"--server http://127.0.0.1:{port}" in line


def test_an_unreachable_server_says_how_to_start_one(tmp_path):
    make_uniform_folder(tmp_path / "images", [1])
    for scheme in ("grpc", "http"):
        server = f"{scheme}://127.0.0.1:{free_port()}"
        result = run("score", tmp_path / "images", "--out", tmp_path / "p.csv", "-s", server,
                     "--retries", "0")  # fmt: skip
        assert result.exit_code == 1
        line = one_line(result)
        assert "cannot reach" in line and "make serve-local" in line


def test_label_and_version_errors_name_what_was_asked_for(fake):
    label = one_line(run("status", "-s", fake.grpc_url, "--label", "canary"))
    assert "label 'canary' of model 'mnist'" in label and "models.config" in label
    version = one_line(run("metadata", "-s", fake.rest_url, "--version", "9"))
    assert "version 9 of model 'mnist'" in version and "client status" in version
    model = one_line(run("status", "-s", fake.grpc_url, "--model", "nosuchmodel"))
    assert "model 'nosuchmodel'" in model and "--model" in model
