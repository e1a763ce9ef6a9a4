"""Flag parsing: tensorflow_model_server's names, defaults and --flag=value / --flag value forms."""

from __future__ import annotations

import subprocess
import sys

import pytest

from serving.options import FlagError, parse_flags

BASE = ["--model_base_path=/models/mnist"]


def test_defaults_follow_tensorflow_model_server():
    options = parse_flags(BASE)
    assert (options.port, options.rest_api_port) == (8500, 0)
    assert options.model_name == "default"
    assert options.file_system_poll_wait_seconds == 1
    assert options.model_config_file_poll_wait_seconds == 0
    assert options.rest_api_timeout_in_ms == 30000
    assert options.enable_batching is False
    assert options.enable_model_warmup is True


def test_equals_and_space_forms_and_booleans():
    options = parse_flags(
        ["--port", "9000", "--rest_api_port=9001", "--model_name", "digits", *BASE,
         "--enable_batching", "--enable_model_warmup=false", "--rest_api_num_threads=3"]
    )  # fmt: skip
    assert (options.port, options.rest_api_port, options.model_name) == (9000, 9001, "digits")
    assert options.enable_batching is True
    assert options.enable_model_warmup is False
    assert options.rest_api_num_threads == 3
    # A bare boolean followed by a value-looking word takes that word as its value.
    assert parse_flags([*BASE, "--enable_batching", "false"]).enable_batching is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nope=1", *BASE], "unknown flag --nope"),
        (["--ssl_config_file=/tmp/s", *BASE], "does not support"),
        (["--grpc_channel_arguments=grpc.keepalive", *BASE], "is not key=value"),
        (["--port=abc", *BASE], "--port takes an integer"),
        (["--enable_batching=maybe", *BASE], "takes true or false"),
        (["--port=8500"], "give --model_base_path"),
        (["--rest_api_port=8500", *BASE], "cannot be the same as --port"),
        (["--model_config_file=/no/such/file"], "no such file"),
        ([*BASE, "stray"], "unexpected argument"),
        ([*BASE, "--model_name"], "needs a value"),
        ([*BASE, "--batching_parameters_file=pyproject.toml"], "needs --enable_batching"),
    ],
)
def test_bad_flags(argv, message):
    with pytest.raises(FlagError, match=message):
        parse_flags(argv)


def test_bad_flag_is_one_line_and_exit_2():
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--model_base_path=/m", "--no_such_flag=1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown flag --no_such_flag (see python -m serving --help)"
    ]


def test_help_is_fast_and_imports_neither_tensorflow_nor_grpc():
    code = (
        "import sys, contextlib, io\n"
        "from serving.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['--help']) == 0\n"
        "assert '--model_config_file' in out.getvalue()\n"
        "heavy = [m for m in ('tensorflow', 'grpc', 'uvicorn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
