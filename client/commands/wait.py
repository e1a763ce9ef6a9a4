"""`wait`: block until the model is AVAILABLE, for scripts and init containers."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from client.commands.common import (
    Connection,
    connection_options,
    describe,
    explain,
    fail,
    model_versions,
)
from client.errors import EXIT_ERROR, ClientError


@connection_options(requests=False)
def wait(
    connection: Connection,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Give up after this many seconds.")
    ] = 60.0,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="Seconds between two status polls.")
    ] = 0.5,
) -> None:
    """Poll the model's status until a version (or the one given) is AVAILABLE.

    Unreachable servers and unknown models are polled again until the deadline: the server may
    still be starting. Exit code 0 once AVAILABLE, 1 on timeout with the last state seen.

    Example: python -m client wait --server http://localhost:8501 --timeout 120
    """
    spec, server = connection.model, connection.server
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    # Retries are this loop's job: a transport that also retried would overshoot the deadline.
    with connection.open(timeout=max(1.0, min(timeout, 10.0)), retries=0) as transport:
        while True:
            remaining = deadline - time.monotonic()
            try:
                versions = model_versions(transport, spec)
                if any(item.state == "AVAILABLE" for item in versions):
                    ready = [str(item.version) for item in versions if item.state == "AVAILABLE"]
                    typer.echo(f"{describe(spec)} is AVAILABLE (version {', '.join(ready)})")
                    return
                last = ", ".join(f"version {item.version} {item.state}" for item in versions)
                last = last or "no versions"
            except ClientError as error:
                last = explain(error, server, spec)
            if remaining <= 0:
                break
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    fail(
        f"{describe(spec)} not AVAILABLE on {server} after {timeout:g} s (last: {last})", EXIT_ERROR
    )
