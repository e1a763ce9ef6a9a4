"""The one error style of the typer CLIs (`python -m trainer`, `python -m client`).

Every failure is one line, `error: <what is wrong and how to fix it>`, and a non-zero exit code;
click's usage errors get the same form instead of rich's five-line box. Depends on typer only,
which every extra installs.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException


class OneLineError(Exception):
    """A failure the user can fix, said in one line, and the exit code the CLI ends with.

    Library code raises it (it never prints or exits); the command turns it into
    `error: <message>` and `exit_code`, as OneLineErrors does for click's usage errors, whose
    `exit_code` it keeps the same way. A subclass sets its usual code as the class attribute
    `exit_code`; a raise site that means another passes it.
    """

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class OneLineErrors(TyperGroup):
    """A typer group (`typer.Typer(cls=OneLineErrors)`) whose usage errors are one line:
    `error: <what is wrong> (see 'python -m client score --help')`, exit code 2. `typer.Abort`
    (Ctrl-C at a prompt) is `error: aborted`, exit code 1; the bare program name prints its help
    and exits 0."""

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
                print(context.get_help())  # the program name alone: its help, exit 0
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
