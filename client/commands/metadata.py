"""`metadata`: the model's signatures, as the server describes them."""

from __future__ import annotations

import dataclasses
import json

import typer

from client.commands.common import Connection, connection_options
from client.options import JsonOption


def _shape(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "unknown rank"
    return "[" + ", ".join("?" if size < 0 else str(size) for size in shape) + "]"


@connection_options()
def metadata(connection: Connection, json_output: JsonOption = False) -> None:
    """Show the model's version and, per signature, its inputs and outputs (name, dtype, shape).

    The table leaves out TensorFlow's internal signatures (names starting with "__"); --json
    lists all.

    Example: python -m client metadata --server grpc://localhost:8500 --json
    """
    with connection.open() as transport, connection.errors():
        info = transport.metadata(connection.model)
    if json_output:
        typer.echo(json.dumps(dataclasses.asdict(info), indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{info.name} version {info.version} on {connection.server}"))
    for column in ("signature", "", "name", "dtype", "shape"):
        table.add_column(column)
    for signature in info.signatures.values():
        if signature.name.startswith("__"):  # TensorFlow's own, e.g. __saved_model_init_op
            continue
        first = True
        for kind, tensors in (("input", signature.inputs), ("output", signature.outputs)):
            for tensor in tensors.values():
                name = signature.name if first else ""
                table.add_row(
                    escape(name), kind, escape(tensor.name), tensor.dtype, _shape(tensor.shape)
                )
                first = False
        table.add_section()
    Console().print(table)
