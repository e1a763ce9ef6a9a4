"""Helpers the commands share: the connection options, addressing the model, connecting,
failing with one clear line."""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn

import typer

from client import options
from client.errors import EXIT_ERROR, EXIT_USAGE, ClientError
from client.transport import Transport, connect
from client.types import ModelSpec, VersionStatus
from common.contract import SERVING_DEFAULT


@dataclass(frozen=True)
class Connection:
    """Where and how a command reaches the model: what the connection options said."""

    server: str
    model: ModelSpec
    timeout: float | None = None  # None: the command has its own --timeout
    retries: int = options.DEFAULT_RETRIES
    retry_seconds: float = options.DEFAULT_RETRY_SECONDS

    def open(self, *, max_connections: int = 8, timeout: float | None = None,
             retries: int | None = None) -> Transport:  # fmt: skip
        """The transport to the server (a malformed address is a usage error, exit 2)."""
        return open_transport(
            self.server,
            timeout=self.timeout if timeout is None else timeout,
            retries=self.retries if retries is None else retries,
            max_connections=max_connections,
        )

    def errors(self) -> contextlib.AbstractContextManager[None]:
        """Turns the server's errors into one line that names this server and model."""
        return server_errors(self.server, self.model)


# The connection options, in --help order: (name, annotation, default).
_ADDRESS = (
    ("server", options.ServerOption, options.DEFAULT_SERVER),
    ("model", options.ModelOption, options.DEFAULT_MODEL),
    ("version", options.VersionOption, None),
    ("label", options.LabelOption, None),
)
_SIGNATURE = (("signature", options.SignatureOption, options.DEFAULT_SIGNATURE),)
_REQUESTS = (
    ("timeout", options.TimeoutOption, options.DEFAULT_TIMEOUT),
    ("retries", options.RetriesOption, options.DEFAULT_RETRIES),
)
_RETRY_SECONDS = (("retry_seconds", options.RetrySecondsOption, options.DEFAULT_RETRY_SECONDS),)


def connection_options(
    *, signature: bool = False, requests: bool = True, retry_seconds: bool = False
) -> Callable[[Callable], Callable]:
    """Decorator for a command that talks to a server: its `connection: Connection` parameter
    becomes the connection options, declared here once, at the same place in --help.

    Every such command takes --server, --model, --version and --label; `signature` adds
    --signature (else the contract's serving_default), `requests` --timeout and --retries (a
    command without them has its own deadline), `retry_seconds` --retry-seconds.
    """
    chosen = (
        _ADDRESS
        + (_SIGNATURE if signature else ())
        + (_REQUESTS if requests else ())
        + (_RETRY_SECONDS if retry_seconds else ())
    )
    names = [name for name, _, _ in chosen]

    def decorate(command: Callable) -> Callable:
        declared = inspect.signature(command, eval_str=True)
        clashes = set(names) & set(declared.parameters)
        if "connection" not in declared.parameters or clashes:
            raise TypeError(f"{command.__name__} needs a `connection` parameter, and no {clashes}")
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                              annotation=annotation)
            for name, annotation, default in chosen
        ]  # fmt: skip
        parameters = []
        for parameter in declared.parameters.values():
            if parameter.name == "connection":
                parameters += added
            else:
                parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(command)
        def run(**values):
            given = {name: values.pop(name) for name in names}
            spec = model_spec(
                given["model"], given["version"], given["label"],
                given.get("signature", SERVING_DEFAULT),
            )  # fmt: skip
            connection = Connection(
                server=given["server"],
                model=spec,
                timeout=given.get("timeout"),
                retries=given.get("retries", options.DEFAULT_RETRIES),
                retry_seconds=given.get("retry_seconds", options.DEFAULT_RETRY_SECONDS),
            )
            return command(connection=connection, **values)

        run.__signature__ = declared.replace(parameters=parameters)
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate


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
