"""`predict`: classify a few image files and show a table."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from client.commands.common import Connection, connection_options, fail
from client.errors import EXIT_PARTIAL, EXIT_USAGE
from client.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_INPUT_CHECK,
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_PREPROCESS,
    InputCheckOption,
    JsonOption,
    MinConfidenceOption,
    PreprocessOption,
)


@connection_options(signature=True)
def predict(
    images: Annotated[
        list[Path],
        typer.Argument(exists=True, dir_okay=False, help="Image files (PNG, JPEG, BMP, ...)."),
    ],
    connection: Connection,
    preprocess: PreprocessOption = DEFAULT_PREPROCESS,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Classes listed per image.")] = 3,
    min_confidence: MinConfidenceOption = DEFAULT_MIN_CONFIDENCE,
    input_check: InputCheckOption = DEFAULT_INPUT_CHECK,
    json_output: JsonOption = False,
) -> None:
    """Classify IMAGE files (64 per request) and print file, class, confidence and top-k.

    Exit code 0 when every image was classified, 3 when some could not be (their row says why).
    An image that does not look like the model's training data, or a prediction below
    --min-confidence, gets a warning (a column, and a summary line on stderr).

    Example: python -m client predict digit.png --server http://localhost:8501
    """
    from client.scoring import score_files

    with connection.open() as transport, connection.errors():
        try:
            results = list(
                score_files(
                    transport,
                    connection.model,
                    images,
                    root=Path.cwd(),
                    batch_size=min(max(1, len(images)), DEFAULT_BATCH_SIZE),
                    concurrency=1,
                    preprocess=preprocess,
                    top_k=top_k,
                    progress=False,
                    timeout=connection.timeout,
                    input_check=input_check,
                    min_confidence=min_confidence,
                )
            )
        except ValueError as error:
            fail(str(error), EXIT_USAGE)
    if json_output:
        from client.outputs import to_row

        typer.echo(json.dumps([to_row(result) for result in results], indent=2))
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from client.names import escape_name

        table = Table()
        for column, justify in (("file", "left"), ("class", "left"), ("confidence", "right")):
            table.add_column(column, justify=justify)
        table.add_column("top-k")
        warned = any(result.warning for result in results)
        if warned:
            table.add_column("warning")
        # File names, class names and errors are text: "[...]" in them is not rich markup. File
        # names are written as score writes them (client.names.escape_name): a name that is not
        # UTF-8, or holds control characters, could neither be printed nor shown on one line.
        for result in results:
            if result.error:
                table.add_row(
                    escape(escape_name(result.path)),
                    "[red]error[/]",
                    "",
                    f"[red]{escape(result.error)}[/]",
                    *([""] if warned else []),
                )
                continue
            confidence = "" if result.confidence is None else f"{result.confidence:.4f}"
            ranked = ", ".join(
                f"{escape(name)} {probability:.3f}" for _, name, probability in result.top_k
            )
            class_name = result.class_name or str(result.class_id)
            warning = [f"[yellow]{escape(result.warning or '')}[/]"] if warned else []
            table.add_row(
                escape(escape_name(result.path)), escape(class_name), confidence, ranked, *warning
            )
        Console().print(table)
    warnings = sum(result.warning is not None for result in results)
    if warnings:
        print(
            f"warning: {warnings} of {len(results)} images look unlike the model's training data "
            f"or scored below --min-confidence {min_confidence:g}; do not trust those predictions",
            file=sys.stderr,
        )
    if any(result.error for result in results):
        raise typer.Exit(EXIT_PARTIAL)
