"""`status`: the state of the model's versions on the server."""

from __future__ import annotations

import json

import typer

from client.commands.common import Connection, connection_options, model_versions
from client.options import JsonOption


@connection_options()
def status(connection: Connection, json_output: JsonOption = False) -> None:
    """Show each version of the model and its state (LOADING, AVAILABLE, END, ...).

    Exit code 0 when the server answered, 1 when it could not be reached or does not know the
    model.

    Example: python -m client status --server http://localhost:8501
    """
    spec = connection.model
    with connection.open() as transport, connection.errors():
        versions = model_versions(transport, spec)
    if json_output:
        rows = [
            {
                "version": item.version,
                "state": item.state,
                "error_code": item.error_code,
                "error_message": item.error_message,
            }
            for item in versions
        ]
        typer.echo(json.dumps({"model": spec.name, "versions": rows}, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{spec.name} on {connection.server}"))
    table.add_column("version", justify="right")
    table.add_column("state")
    table.add_column("status")
    for item in versions:
        style = "green" if item.state == "AVAILABLE" else "yellow"
        detail = item.error_code + (f": {item.error_message}" if item.error_message else "")
        # The server's message is text: "[...]" in it is not rich markup.
        table.add_row(str(item.version), f"[{style}]{item.state}[/]", escape(detail))
    Console().print(table)
