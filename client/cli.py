"""The `python -m client` application: one module per command under client/commands/.

Only typer, rich and numpy load here; each command imports what it needs (grpc, requests,
Pillow) when it runs, so `--help` is instant and never imports TensorFlow or grpc.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from client.commands.metadata import metadata
from client.commands.predict import predict
from client.commands.score import score
from client.commands.status import status
from client.commands.wait import wait


class OneLineErrors(TyperGroup):
    """Usage errors as one line, like every other error of the client:
    `error: <what is wrong> (see 'python -m client score --help')`, exit code 2 — not rich's
    five-line box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            if not standalone_mode:
                raise
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        except TyperException as error:  # click's usage errors (typer vendors click)
            if not standalone_mode or not hasattr(error, "format_message"):
                raise
            context = getattr(error, "ctx", None)
            if type(error).__name__ == "NoArgsIsHelpError" and context is not None:
                print(context.get_help())  # `python -m client` alone: the help, as before
                sys.exit(0)
            print(f"error: {one_line_usage(error)}", file=sys.stderr)
            sys.exit(getattr(error, "exit_code", 2))
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


def one_line_usage(error: Exception) -> str:
    """A click usage error in one line, pointing at the command's --help."""
    message = " ".join(error.format_message().split())
    context = getattr(error, "ctx", None)
    if context is not None:
        return f"{message} (see '{context.command_path} --help')"
    return message


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

try:
    from client.commands.evaluate import evaluate
except ModuleNotFoundError as error:  # built separately; --help must work without it
    if error.name != "client.commands.evaluate":
        raise
else:
    app.command("evaluate")(evaluate)


def main() -> None:
    app()
