"""The `python -m client` application: one module per command under client/commands/.

Only typer, rich and numpy load here; each command imports what it needs (grpc, requests,
Pillow) when it runs, so `--help` is instant and never imports TensorFlow or grpc.
"""

from __future__ import annotations

import typer

from client.commands.metadata import metadata
from client.commands.predict import predict
from client.commands.score import score
from client.commands.status import status
from client.commands.wait import wait

app = typer.Typer(
    name="client",
    help="Score and evaluate images against a model served by TF Serving (gRPC or REST).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.command("status")(status)
app.command("metadata")(metadata)
app.command("wait")(wait)
app.command("predict")(predict)
app.command("score")(score)

try:
    from client.commands.evaluate import evaluate
except ModuleNotFoundError as error:  # built separately; --help must work without it
    if error.name != "client.commands.evaluate":
        raise
else:
    app.command("evaluate")(evaluate)


def main() -> None:
    app()
