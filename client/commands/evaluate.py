"""`evaluate`: score a labelled folder (one sub-folder per class) and write a report.

The command parses options, talks to the user and picks exit codes; what an evaluation is
(class folders, metrics, the report and its files) lives in `client.evaluation`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from client.commands.common import Connection, connection_options, describe, fail
from client.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USAGE
from client.names import escape_name
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

# Every image was scored but the accuracy is below --min-accuracy (a CI quality gate).
EXIT_BELOW_MIN_ACCURACY = 4


@connection_options(signature=True, retry_seconds=True)
def evaluate(
    folder: Annotated[
        Path,
        typer.Argument(
            exists=True,
            file_okay=False,
            dir_okay=True,
            readable=True,
            help="Labelled images: one sub-folder per class, named after the model's class "
            "names or class ids (e.g. 0/ … 9/), searched recursively.",
        ),
    ],
    report_dir: Annotated[
        Path,
        typer.Option(
            "--report-dir",
            "-o",
            file_okay=False,
            help="Where to write report.json, report.md, report.html, confusion_matrix.png and "
            "misclassified.png (created if needed; existing reports are replaced).",
        ),
    ],
    connection: Connection,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    preprocess: PreprocessOption = DEFAULT_PREPROCESS,
    mistakes: Annotated[
        int,
        typer.Option(
            "--mistakes",
            min=0,
            max=200,
            help="How many of the most confident mistakes misclassified.png and the tables show.",
        ),
    ] = 25,
    min_accuracy: Annotated[
        float | None,
        typer.Option(
            "--min-accuracy",
            min=0.0,
            max=1.0,
            help=f"Exit with code {EXIT_BELOW_MIN_ACCURACY} when the accuracy is below this "
            "fraction (e.g. 0.97), after writing the report.",
        ),
    ] = None,
    min_confidence: MinConfidenceOption = DEFAULT_MIN_CONFIDENCE,
    input_check: InputCheckOption = DEFAULT_INPUT_CHECK,
) -> None:
    """Score every image of a labelled folder and write an evaluation report.

    The report has accuracy, per-class precision/recall/F1/support, the confusion matrix,
    latency percentiles, throughput, the files that failed, the most confident mistakes, and
    the images that look unlike the training data or scored below --min-confidence.
    Exit codes: 0 all scored, 1 server error, 2 bad input, 3 some files failed,
    4 accuracy below --min-accuracy.

    Example: python -m client evaluate digits/ --report-dir report/ --server http://localhost:8501
    """
    from client.evaluation import EvaluationError
    from client.evaluation.files import write_report
    from client.evaluation.folders import list_class_folders, map_class_folders
    from client.evaluation.pictures import model_inputs
    from client.evaluation.report import assemble, output_width
    from client.scoring import failed_result, image_input, score_files

    spec = connection.model
    try:
        classes = list_class_folders(folder, skip=report_dir)
    except EvaluationError as error:
        fail(str(error), error.exit_code)
    files = classes.all_files
    for name, reason in classes.unlisted:
        warn(f"cannot list folder {escape_name(name)}: {reason} (listed in the report's failed "
             "files)")  # fmt: skip
    if not files:
        fail(f"no files in the class sub-folders of {escape_name(str(folder))}", EXIT_USAGE)
    if classes.ignored:
        warn(f"{len(classes.ignored)} file(s) directly in {folder} have no class sub-folder and "
             "are not evaluated (listed in report.json under 'ignored')")  # fmt: skip

    with connection.open(max_connections=concurrency) as transport, connection.errors():
        metadata = transport.metadata(spec)
        try:
            image_spec = image_input(metadata, spec.signature)
        except ValueError as error:
            fail(str(error), EXIT_USAGE)
        n_classes = output_width(metadata, spec.signature)
        started = time.perf_counter()
        try:
            results = list(
                score_files(
                    transport,
                    spec,
                    files,
                    root=folder,
                    metadata=metadata,  # fetched above: one metadata call per evaluation
                    batch_size=batch_size,
                    concurrency=concurrency,
                    preprocess=preprocess,
                    top_k=3,
                    progress=True,
                    timeout=connection.timeout,
                    input_check=input_check,
                    min_confidence=min_confidence,
                    retry_seconds=connection.retry_seconds,
                )
            )
        except KeyboardInterrupt:
            fail("interrupted; no report written", EXIT_INTERRUPTED)
        elapsed = time.perf_counter() - started
    # Folders that could not be listed count as failed entries: their files are unknown.
    results += [failed_result(name, f"cannot list folder: {why}") for name, why in classes.unlisted]

    scored = [result for result in results if result.ok]
    if n_classes is None:
        widths = {len(item.probabilities) for item in scored if item.probabilities is not None}
        n_classes = max(widths, default=0) or None
    if n_classes is None:
        fail(
            f"could not learn the number of classes of {describe(spec)}: its metadata gives no "
            "width for 'probabilities' and no image was scored",
            EXIT_ERROR,
        )
    versions = sorted({result.model_version for result in scored if result.model_version})
    if len(versions) > 1:
        warn(f"the server answered with several model versions {versions} during the run (a new "
             "version was loaded); the report names the last one")  # fmt: skip
    known_names = {result.class_id: result.class_name for result in scored if result.class_name}
    try:
        report = assemble(
            results,
            folder_ids=map_class_folders(list(classes.files), known_names, n_classes),
            known_names=known_names,
            n_classes=n_classes,
            elapsed=elapsed,
            model_name=metadata.name or spec.name,
            model_version=versions[-1] if versions else metadata.version,
            mistakes=mistakes,
            settings={
                "folder": escape_name(str(folder)),
                "server": connection.server,
                "signature": spec.signature,
                "requested": describe(spec),
                "preprocess": preprocess,
                "batch_size": batch_size,
                "concurrency": concurrency,
                "input_check": input_check,
                "min_confidence": min_confidence,
            },
            ignored=[path.relative_to(folder).as_posix() for path in classes.ignored],
        )
    except EvaluationError as error:
        fail(str(error), error.exit_code)
    try:
        written = write_report(
            report,
            report_dir,
            mistake_images=model_inputs(report, folder, image_spec, preprocess),
            image_caption=f"the model's input after --preprocess {preprocess}",
        )
    except OSError as error:
        fail(f"cannot write the report in {report_dir}: {error.strerror or error}", EXIT_ERROR)
    _print_summary(report, written["report.html"])
    if report.n_failed:
        raise typer.Exit(EXIT_PARTIAL)
    if min_accuracy is not None and (report.accuracy or 0.0) < min_accuracy:
        fail(
            f"accuracy {report.accuracy or 0.0:.4f} is below --min-accuracy {min_accuracy}",
            EXIT_BELOW_MIN_ACCURACY,
        )


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _print_summary(report, html_path: Path) -> None:
    from client.evaluation.sections import percent

    latency = report.latency_ms
    timing = ""
    if latency.p50 is not None and report.images_per_second:
        timing = (
            f", {report.images_per_second:.0f} images/s, latency p50 {latency.p50:.1f} ms "
            f"p99 {latency.p99:.1f} ms"
        )
    shown = "n/a" if report.accuracy is None else f"{report.accuracy:.2%}"
    typer.echo(
        f"{report.model_name} version {report.model_version}: accuracy {shown} on "
        f"{report.n_scored} images ({report.n_failed} failed){timing}"
    )
    typer.echo(f"report: {html_path}")
    warned = report.warnings
    if warned.count:
        warn(
            f"{warned.count} of {report.n_scored} images look unlike the model's training data "
            f"or scored below --min-confidence (accuracy {percent(warned.accuracy_flagged)} on "
            f"them, {percent(warned.accuracy_others)} on the rest); the report lists them"
        )
