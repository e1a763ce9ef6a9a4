"""The `python -m client` application: one module per command under client/commands/.

Only typer, rich and numpy load here; each command imports what it needs (grpc, requests,
Pillow) when it runs, so `--help` is instant and never imports TensorFlow or grpc.
"""

from __future__ import annotations

import typer

from client.commands.evaluate import evaluate
from client.commands.metadata import metadata
from client.commands.predict import predict
from client.commands.score import score
from client.commands.status import status
from client.commands.wait import wait
from client.rollout.cli import app as rollout
from common.cli import OneLineErrors

app = typer.Typer(
    name="client",
    cls=OneLineErrors,
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

app.command("evaluate")(evaluate)
# Command groups (one module each, typer's add_typer) are registered after the commands.
app.add_typer(rollout, name="rollout")


def main() -> None:
    app()
