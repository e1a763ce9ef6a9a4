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
def server_errors() -> Iterator[None]:
    """Turn a ClientError into "error: CODE: message" and exit code 1."""
    try:
        yield
    except ClientError as error:
        fail(str(error), EXIT_ERROR)


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
