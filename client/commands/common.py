"""Helpers the commands share: addressing the model, connecting, failing with one clear line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import NoReturn

import typer

from client.errors import EXIT_ERROR, EXIT_USAGE, ClientError
from client.transport import Transport, connect
from client.types import ModelSpec, VersionStatus


def fail(message: str, exit_code: int = EXIT_ERROR) -> NoReturn:
    """Print "error: <message>" on stderr and exit with `exit_code`."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(exit_code)


def model_spec(model: str, version: int | None, label: str | None, signature: str) -> ModelSpec:
    if not model.strip():
        fail("--model must not be empty", EXIT_USAGE)
    try:
        return ModelSpec(name=model, version=version, label=label, signature=signature)
    except ValueError as error:
        fail(f"{error} (--version or --label)", EXIT_USAGE)


def open_transport(
    server: str, *, timeout: float, retries: int, max_connections: int = 8
) -> Transport:
    """connect(), with a malformed address or a missing optional install as a clean exit."""
    try:
        return connect(server, timeout=timeout, retries=retries, max_connections=max_connections)
    except ValueError as error:
        fail(f"--server: {error}", EXIT_USAGE)
    except ModuleNotFoundError as error:
        fail(str(error), EXIT_ERROR)


@contextlib.contextmanager
def server_errors(server: str | None = None, model: ModelSpec | None = None) -> Iterator[None]:
    """Turn a ClientError into "error: CODE: message; how to fix it" and exit code 1."""
    try:
        yield
    except ClientError as error:
        fail(explain(error, server, model), EXIT_ERROR)


START_A_SERVER = (
    "start one with 'make serve-local' (the local server, gRPC 8500, REST 8501) or 'make serve' "
    "(TF Serving in Docker), or point --server at a running one"
)


def explain(error: ClientError, server: str | None, model: ModelSpec | None) -> str:
    """`error` as one line that says what went wrong and how to fix it.

    A REST address on a gRPC port gets an HTTP/2 frame back, which the HTTP client reports as a
    BadStatusLine full of binary; a gRPC address on a REST port fails to parse HTTP/2. Both are
    named for what they are. An unreachable server says how to start one; a model, version or
    label that is not there names what was asked for.
    """
    message = error.message
    if (
        error.code == "UNAVAILABLE"
        and "BadStatusLine" in message
        and ("\\x00" in message or "\x00" in message)
    ):
        where = server or "the server"
        return (
            f"UNAVAILABLE: {where} answered with HTTP/2 (binary): that is a gRPC port, not a REST "
            f"one; use --server {_with_scheme(server, 'grpc')} or the REST port (usually 8501)"
        )
    if error.code == "UNAVAILABLE" and (
        "Failed parsing HTTP/2" in message or "Expected SETTINGS frame" in message
    ):
        where = server or "the server"
        return (
            f"UNAVAILABLE: {where} answered with HTTP/1: that is a REST port, not a gRPC one; use "
            f"--server {_with_scheme(server, 'http')} or the gRPC port (usually 8500)"
        )
    if error.code == "UNAVAILABLE" and "cannot reach" in message:
        return f"{error}; is a model server running there? {START_A_SERVER}"
    if model is not None and error.code in ("NOT_FOUND", "FAILED_PRECONDITION", "INVALID_ARGUMENT"):
        status = f"'python -m client status --model {model.name}'"
        if model.label is not None:
            return (
                f"{error.code}: label {model.label!r} of model {model.name!r}: {message}; the "
                "label must point at an AVAILABLE version in the model config file "
                f"(--model_config_file, e.g. models.config); {status} lists the versions"
            )
        if model.version is not None and error.code == "NOT_FOUND":
            return (
                f"NOT_FOUND: version {model.version} of model {model.name!r}: {message}; {status} "
                "lists the versions the server has"
            )
        if error.code == "NOT_FOUND":
            return (
                f"NOT_FOUND: model {model.name!r}: {message}; check --model (the server's "
                "--model_name) and that the server has loaded a version of it"
            )
    return str(error)


def _with_scheme(server: str | None, scheme: str) -> str:
    """`server` with its scheme replaced ("http://host:8500" -> "grpc://host:8500")."""
    if not server or "://" not in server:
        return f"{scheme}://HOST:PORT"
    rest = server.split("://", 1)[1]
    return f"{scheme}://{rest}"


def describe(model: ModelSpec) -> str:
    """ "mnist", "mnist version 3" or "mnist (label stable)" for messages."""
    if model.version is not None:
        return f"{model.name} version {model.version}"
    if model.label is not None:
        return f"{model.name} (label {model.label})"
    return model.name


def model_versions(transport: Transport, model: ModelSpec) -> list[VersionStatus]:
    """The status of the versions `model` addresses: all, the one given, or the labelled one.

    TF Serving's status call ignores version labels (get_model_status_impl.cc only narrows by
    version number), so a label is resolved through the metadata call, which honours it and
    fails (NOT_FOUND / INVALID_ARGUMENT) while the label points at no AVAILABLE version.
    """
    versions = transport.status(model)
    if model.label is None:
        return versions
    labelled = transport.metadata(model).version
    return [item for item in versions if item.version == labelled]
