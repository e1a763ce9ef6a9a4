"""`score`: classify every image under a folder into a CSV or JSON Lines file."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from client.commands.common import Connection, connection_options, fail
from client.errors import EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USAGE
from client.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_INPUT_CHECK,
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_PREPROCESS,
    BatchSizeOption,
    ConcurrencyOption,
    InputCheckOption,
    MinConfidenceOption,
    PreprocessOption,
)


@connection_options(signature=True, retry_seconds=True)
def score(
    folder: Annotated[
        Path,
        typer.Argument(exists=True, file_okay=False, help="Folder of images, scored recursively."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            dir_okay=False,
            help="Predictions file: *.csv or *.jsonl. Columns: path, class_id, class, "
            "confidence, top_k, model_version, error, warning.",
        ),
    ],
    connection: Connection,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    preprocess: PreprocessOption = DEFAULT_PREPROCESS,
    top_k: Annotated[
        int, typer.Option("--top-k", min=0, help="Classes listed in the top_k column.")
    ] = 3,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            metavar="I/N",
            help="Score only shard I of N (0 <= I < N), chosen by a stable hash of each file's "
            "path; N runs with I = 0..N-1 cover every file exactly once.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an existing --out file: keep its scored rows, score the rest and "
            "its failed rows again. Without the file, start a new one.",
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out file.")
    ] = False,
    decode_processes: Annotated[
        int | None,
        typer.Option(
            "--decode-processes",
            min=0,
            max=64,
            show_default=False,
            help="Decode images in this many worker processes; 0: in threads. Default: threads; "
            "over gRPC, for 5,000 files or more on 2+ CPUs, one process per CPU (at most 4) "
            "once they have started.",
        ),
    ] = None,
    min_confidence: MinConfidenceOption = DEFAULT_MIN_CONFIDENCE,
    input_check: InputCheckOption = DEFAULT_INPUT_CHECK,
) -> None:
    """Score every file under FOLDER and write one row per file to --out.

    Files are listed recursively (hidden ones skipped) in sorted path order, decoded and
    preprocessed in parallel, and sent in batches. A file that cannot be read or scored gets a
    row with the reason in `error`; an input that does not look like the model's training data,
    or a prediction below --min-confidence, gets a `warning` (and a summary line). The
    predictions files and evaluation reports that score and evaluate wrote inside FOLDER are
    not scored. Rows are written as they finish, so an interrupted run keeps
    them; --resume continues it. Exit code 0 when every file was scored, 3 when some failed,
    1 when the server or model could not be used, 2 for usage errors, 130 when interrupted.

    Example: python -m client score digits/ --out preds.csv --server grpc://localhost:8500
    """
    from client.names import escape_name, name_order
    from client.outputs import PredictionWriter, output_format, own_outputs
    from client.preprocess import find_image_names
    from client.scoring import (
        failed_result,
        image_input,
        parse_shard,
        relative_name,
        score_files,
        shard_of,
    )

    if resume and overwrite:
        fail("--resume and --overwrite contradict each other", EXIT_USAGE)
    try:
        output_format(out)
        shard_index, shard_count = parse_shard(shard) if shard else (0, 1)
    except ValueError as error:
        fail(str(error), EXIT_USAGE)
    spec = connection.model
    transport = connection.open(max_connections=concurrency)
    listed, unreadable = find_image_names(folder)
    if unreadable and not unreadable[0].name:
        fail(f"cannot list {escape_name(str(folder))}: {unreadable[0].reason}", EXIT_USAGE)
    # The predictions file may live in the folder it describes: never score it, nor the other
    # predictions files and evaluation reports that score and evaluate left there. Plain
    # strings: a Path per file costs a noticeable part of a run over a folder of small images.
    out_path = os.fspath(out.resolve())
    out_name = os.path.basename(out_path)
    listed = [
        (name, path)
        for name, path in listed
        if os.path.basename(path) != out_name or os.path.realpath(path) != out_path
    ]
    ours = own_outputs([path for _, path in listed])
    if ours:
        listed = [(name, path) for name, path in listed if path not in ours]
        shown = ", ".join(escape_name(relative_name(path, folder)) for path in sorted(ours)[:3])
        print(
            f"note: not scoring {len(ours)} file(s) that score or evaluate wrote ({shown}"
            f"{', ...' if len(ours) > 3 else ''})",
            file=sys.stderr,
        )
    if not listed and not unreadable:
        fail(
            f"no files to score in {escape_name(str(folder))} (it is empty, or holds only hidden "
            "files and our own outputs); point score at a folder of images",
            EXIT_USAGE,
        )
    if shard_count > 1:
        listed = [item for item in listed if shard_of(item[0], shard_count) == shard_index]
        unreadable = [
            item for item in unreadable if shard_of(item.name, shard_count) == shard_index
        ]
    names = [name for name, _ in listed]
    files = [path for _, path in listed]
    # A folder that cannot be listed gets an error row in its place: its files are unknown, and
    # the exit code says the run is incomplete, as for a file that cannot be read.
    for item in unreadable:
        print(f"warning: cannot list folder {escape_name(item.name)}: {item.reason} (it gets an "
              "error row)", file=sys.stderr)  # fmt: skip
    unlisted = [
        failed_result(item.name, f"cannot list folder: {item.reason}") for item in unreadable
    ]
    scored = failed = folders = warned = 0
    with transport, connection.errors():
        # Check the server and the signature before touching --out: a failed start must not
        # leave an empty predictions file that the next run would refuse to overwrite.
        metadata = transport.metadata(spec)  # the run's only metadata call
        try:
            image_input(metadata, spec.signature)
        except ValueError as error:
            fail(str(error), EXIT_USAGE)
        try:
            writer = PredictionWriter(out, resume=resume, overwrite=overwrite)
        except (ValueError, FileExistsError) as error:
            fail(str(error), EXIT_USAGE)
        todo = [i for i, name in enumerate(names) if name not in writer.done]
        if writer.kept or writer.dropped_failures:
            print(
                f"resuming {out}: {writer.kept} rows kept, {writer.dropped_failures} failed rows "
                f"to retry, {len(todo)} files to score",
                file=sys.stderr,
            )
        started = time.perf_counter()
        try:
            results = score_files(
                transport,
                spec,
                [files[i] for i in todo],
                root=folder,
                names=[names[i] for i in todo],
                metadata=metadata,
                batch_size=batch_size,
                concurrency=concurrency,
                preprocess=preprocess,
                top_k=top_k,
                decode_processes=decode_processes,
                timeout=connection.timeout,
                input_check=input_check,
                min_confidence=min_confidence,
                retry_seconds=connection.retry_seconds,
            )
            pending = list(reversed(unlisted))  # merged into the rows in listing order
            for result in results:
                while pending and name_order(pending[-1].path) < name_order(result.path):
                    writer.write(pending.pop())
                    folders += 1
                writer.write(result)
                scored += 1
                failed += result.error is not None
                warned += result.warning is not None
            while pending:
                writer.write(pending.pop())
                folders += 1
        except KeyboardInterrupt:
            writer.close(sort=False)
            print(
                f"interrupted: {writer.kept + scored + folders} rows are in {out}; run again with "
                "--resume",
                file=sys.stderr,
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
        finally:
            # Rows from a resumed run come after the kept ones: restore path order at the end.
            writer.close(sort=bool(writer.kept))
    elapsed = time.perf_counter() - started
    rate = scored / elapsed if elapsed > 0 else 0.0
    shard_text = f" (shard {shard_index}/{shard_count})" if shard_count > 1 else ""
    unlisted_text = f", {folders} folder(s) could not be listed" if folders else ""
    print(
        f"scored {scored - failed} of {scored} files{shard_text}, {failed} failed"
        f"{unlisted_text}, in {elapsed:.1f} s ({rate:.0f} files/s) -> {out}",
        file=sys.stderr,
    )
    if warned:
        print(
            f"warning: {warned} of {scored - failed} scored files look unlike the model's "
            f"training data or scored below --min-confidence {min_confidence:g}; see the "
            f"warning column of {out}",
            file=sys.stderr,
        )
    if failed or folders:
        raise typer.Exit(EXIT_PARTIAL)
