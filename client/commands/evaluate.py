"""`evaluate`: score a labelled folder (one sub-folder per class) and write a report."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from client.commands.common import describe, fail, model_spec, open_transport, server_errors
from client.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USAGE
from client.names import escape_name, unescape_name
from client.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_INPUT_CHECK,
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_MODEL,
    DEFAULT_PREPROCESS,
    DEFAULT_RETRIES,
    DEFAULT_RETRY_SECONDS,
    DEFAULT_SERVER,
    DEFAULT_SIGNATURE,
    DEFAULT_TIMEOUT,
    BatchSizeOption,
    ConcurrencyOption,
    InputCheckOption,
    LabelOption,
    MinConfidenceOption,
    ModelOption,
    PreprocessOption,
    RetriesOption,
    RetrySecondsOption,
    ServerOption,
    SignatureOption,
    TimeoutOption,
    VersionOption,
)
from client.preprocess import find_images

# Every image was scored but the accuracy is below --min-accuracy (a CI quality gate).
EXIT_BELOW_MIN_ACCURACY = 4

_DECIMAL = re.compile(r"[0-9]+")


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
    server: ServerOption = DEFAULT_SERVER,
    model: ModelOption = DEFAULT_MODEL,
    version: VersionOption = None,
    label: LabelOption = None,
    signature: SignatureOption = DEFAULT_SIGNATURE,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    preprocess: PreprocessOption = DEFAULT_PREPROCESS,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    retries: RetriesOption = DEFAULT_RETRIES,
    retry_seconds: RetrySecondsOption = DEFAULT_RETRY_SECONDS,
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
    from client.scoring import failed_result, image_input, score_files

    spec = model_spec(model, version, label, signature)
    class_folders, ignored, unlisted = _class_folders(folder, skip=report_dir)
    files = [path for paths in class_folders.values() for path in paths]
    for name, reason in unlisted:
        print(
            f"warning: cannot list folder {escape_name(name)}: {reason} (listed in the report's "
            "failed files)",
            file=sys.stderr,
        )
    if not files:
        fail(f"no files in the class sub-folders of {escape_name(str(folder))}", EXIT_USAGE)
    if ignored:
        print(
            f"warning: {len(ignored)} file(s) directly in {folder} have no class sub-folder and "
            f"are not evaluated (listed in report.json under 'ignored')",
            file=sys.stderr,
        )

    transport = open_transport(
        server, timeout=timeout, retries=retries, max_connections=concurrency
    )
    with transport, server_errors(server, spec):
        metadata = transport.metadata(spec)
        try:
            image_spec = image_input(metadata, spec.signature)
        except ValueError as error:
            fail(str(error), EXIT_USAGE)
        n_classes = _output_width(metadata, spec.signature)
        started = time.perf_counter()
        try:
            results = list(
                score_files(
                    transport,
                    spec,
                    files,
                    root=folder,
                    batch_size=batch_size,
                    concurrency=concurrency,
                    preprocess=preprocess,
                    top_k=3,
                    progress=True,
                    timeout=timeout,
                    input_check=input_check,
                    min_confidence=min_confidence,
                    retry_seconds=retry_seconds,
                )
            )
        except KeyboardInterrupt:
            fail("interrupted; no report written", EXIT_INTERRUPTED)
        elapsed = time.perf_counter() - started
    # Folders that could not be listed count as failed entries: their files are unknown.
    results += [failed_result(name, f"cannot list folder: {reason}") for name, reason in unlisted]

    scored = [result for result in results if result.ok]
    if n_classes is None:
        widths = {
            len(result.probabilities) for result in scored if result.probabilities is not None
        }
        n_classes = max(widths, default=0) or None
    if n_classes is None:
        fail(
            f"could not learn the number of classes of {describe(spec)}: its metadata gives no "
            "width for 'probabilities' and no image was scored",
            EXIT_ERROR,
        )
    known_names = {result.class_id: result.class_name for result in scored if result.class_name}
    try:
        folder_ids = map_class_folders(list(class_folders), known_names, n_classes)
    except ValueError as error:
        fail(str(error), EXIT_USAGE)

    report = _build(
        results=results,
        folder_ids=folder_ids,
        known_names=known_names,
        n_classes=n_classes,
        elapsed=elapsed,
        model_name=metadata.name or spec.name,
        metadata_version=metadata.version,
        mistakes=mistakes,
        settings={
            "folder": escape_name(str(folder)),
            "server": server,
            "signature": spec.signature,
            "requested": describe(spec),
            "preprocess": preprocess,
            "batch_size": batch_size,
            "concurrency": concurrency,
            "input_check": input_check,
            "min_confidence": min_confidence,
        },
    )
    report["ignored"] = [escape_name(path.relative_to(folder).as_posix()) for path in ignored]
    images = _mistake_images(report, folder, image_spec, preprocess)
    from client.report import write_report

    try:
        written = write_report(
            report,
            report_dir,
            mistake_images=images,
            image_caption=f"the model's input after --preprocess {preprocess}",
        )
    except OSError as error:
        fail(f"cannot write the report in {report_dir}: {error.strerror or error}", EXIT_ERROR)
    _print_summary(report, written["report.html"])
    if report["n_failed"]:
        raise typer.Exit(EXIT_PARTIAL)
    if min_accuracy is not None and (report["accuracy"] or 0.0) < min_accuracy:
        print(
            f"error: accuracy {report['accuracy'] or 0.0:.4f} is below --min-accuracy "
            f"{min_accuracy}",
            file=sys.stderr,
        )
        raise typer.Exit(EXIT_BELOW_MIN_ACCURACY)


def map_class_folders(
    folder_names: list[str], known_names: dict[int, str], n_classes: int
) -> dict[str, int]:
    """Class id of every class folder, from the model's class names or class ids.

    known_names: class id -> name as the model returned them (the serving API has no call that
    lists class names, so only classes predicted at least once are known).
    A folder matches a class name exactly, then ignoring case and punctuation ("T-shirt_top"
    matches "T-shirt/top"); otherwise a decimal folder name is read as a class id, unless the
    model's class names are themselves numbers that differ from their ids. Raises ValueError
    naming every folder that matches nothing, and folders that map to the same class.
    """
    exact = {name: class_id for class_id, name in known_names.items()}
    loose: dict[str, set[int]] = {}
    for class_id, name in known_names.items():
        loose.setdefault(_loose(name), set()).add(class_id)
    numeric_names = bool(known_names) and all(_DECIMAL.fullmatch(n) for n in known_names.values())
    names_are_ids = all(name == str(class_id) for class_id, name in known_names.items())

    mapping: dict[str, int] = {}
    unmatched: list[str] = []
    for folder in folder_names:
        candidates = loose.get(_loose(folder), set())
        if folder in exact:
            mapping[folder] = exact[folder]
        elif len(candidates) == 1:
            mapping[folder] = next(iter(candidates))
        elif (
            _DECIMAL.fullmatch(folder)
            and int(folder) < n_classes
            and (names_are_ids or not numeric_names)
        ):
            mapping[folder] = int(folder)
        else:
            unmatched.append(folder)
    if unmatched:
        seen = ", ".join(repr(known_names[key]) for key in sorted(known_names)) or "none"
        raise ValueError(
            f"class folder(s) {', '.join(map(repr, unmatched))} match no class name the model "
            f"returned ({seen}) and are not class ids 0..{n_classes - 1}; name the class "
            "folders after the model's class names or ids (a name is only known once the "
            "model has predicted it, so ids are the safe choice)"
        )
    by_id: dict[int, list[str]] = {}
    for folder, class_id in mapping.items():
        by_id.setdefault(class_id, []).append(folder)
    clashes = [folders for folders in by_id.values() if len(folders) > 1]
    if clashes:
        described = "; ".join(" and ".join(map(repr, folders)) for folders in clashes)
        raise ValueError(f"class folders map to the same class: {described}")
    return mapping


def _loose(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.casefold()).strip("_")


def _class_folders(
    folder: Path, *, skip: Path
) -> tuple[dict[str, list[Path]], list[Path], list[tuple[str, str]]]:
    """Files per class sub-folder (sorted by folder name), the files outside any class, and
    (relative name ending in "/", reason) of every class folder, or folder in one, that cannot
    be listed.

    `skip` is the report folder: when it sits inside FOLDER it is not a class.
    """
    from client.outputs import is_report_folder

    skipped = skip.resolve()
    try:
        classes: dict[str, list[Path]] = {
            entry.name: []
            for entry in sorted(folder.iterdir(), key=lambda entry: entry.name)
            if entry.is_dir()
            and not entry.name.startswith(".")
            and entry.resolve() != skipped
            and not is_report_folder(entry)  # an earlier run's --report-dir
        }
    except OSError as error:
        fail(f"cannot list {escape_name(str(folder))}: {error.strerror or error}", EXIT_USAGE)
    if not classes:
        fail(
            f"{escape_name(str(folder))} has no class sub-folders (expected one sub-folder per "
            "class)",
            EXIT_USAGE,
        )
    # Each class folder is listed on its own, so that a class folder that is a symlink is
    # followed (find_images does not follow symlinked folders below its root).
    unlisted = []
    for name in classes:
        classes[name], unreadable = find_images(folder / name)
        unlisted += [(f"{name}/{item.name}", item.reason) for item in unreadable]
    files, _ = find_images(folder)  # its unreadable folders are those of the classes
    ignored = [path for path in files if path.parent == folder]
    return classes, ignored, unlisted


def _output_width(metadata, signature: str) -> int | None:
    outputs = metadata.signatures[signature].outputs
    probabilities = outputs.get("probabilities")
    if probabilities is None or not probabilities.shape or probabilities.shape[-1] <= 0:
        return None
    return int(probabilities.shape[-1])


def _build(
    *,
    results,
    folder_ids: dict[str, int],
    known_names: dict[int, str],
    n_classes: int,
    elapsed: float,
    model_name: str,
    metadata_version: int,
    mistakes: int,
    settings: dict,
) -> dict:
    import numpy as np

    from client.report import (
        build_report,
        compute_metrics,
        most_confident_mistakes,
        warning_summary,
    )

    scored = [result for result in results if result.ok]
    failed = [(result.path, result.error) for result in results if not result.ok]
    true_ids = np.array([folder_ids[result.path.split("/", 1)[0]] for result in scored], np.int64)
    predicted = np.array([result.class_id for result in scored], np.int64)
    if predicted.size and (predicted.min() < 0 or predicted.max() >= n_classes):
        fail(f"the model predicted class ids outside 0..{n_classes - 1}", EXIT_ERROR)
    confidences = np.array([result.confidence or 0.0 for result in scored], np.float64)
    latencies = np.array([result.latency_ms for result in scored], np.float64)
    metrics = compute_metrics(
        true_ids, predicted, confidences, latencies, n_classes=n_classes, elapsed_seconds=elapsed
    )
    folder_of = {class_id: folder for folder, class_id in folder_ids.items()}
    # Classes the model never predicted have no known name: their folder's name stands in.
    class_names = [
        known_names.get(k, escape_name(folder_of.get(k, str(k)))) for k in range(n_classes)
    ]
    versions = sorted({result.model_version for result in scored if result.model_version})
    if len(versions) > 1:
        print(
            f"warning: the server answered with several model versions {versions} during the "
            "run (a new version was loaded); the report names the last one",
            file=sys.stderr,
        )
    return build_report(
        metrics,
        class_names=class_names,
        model_name=model_name,
        model_version=versions[-1] if versions else metadata_version,
        n_images=len(results),
        failed=failed,
        mistakes=most_confident_mistakes(
            [result.path for result in scored], true_ids, predicted, confidences, limit=mistakes
        ),
        class_folders=folder_of,
        settings=settings,
        warnings=warning_summary(
            [result.path for result in scored],
            [result.warning for result in scored],
            (true_ids == predicted).tolist(),
        ),
    )


def _mistake_images(report: dict, folder: Path, image_spec, preprocess: str) -> list:
    """What the model saw for each shown mistake: the file, preprocessed again the same way."""
    import numpy as np

    from client.preprocess import ImageError, load_image

    images = []
    for item in report["most_confident_mistakes"]:
        try:
            pixels = load_image(
                folder / unescape_name(item["path"]),
                height=image_spec.height,
                width=image_spec.width,
                channels=image_spec.channels,
                mode=preprocess,
            )
        except (ImageError, OSError):  # changed on disk since it was scored
            pixels = np.zeros((image_spec.height, image_spec.width, image_spec.channels), np.uint8)
        images.append(pixels)
    return images


def _print_summary(report: dict, html_path: Path) -> None:
    accuracy = report["accuracy"]
    shown = "n/a" if accuracy is None else f"{accuracy:.2%}"
    latency = report["latency_ms"]
    timing = ""
    if latency["p50"] is not None and report["images_per_second"]:
        timing = (
            f", {report['images_per_second']:.0f} images/s, latency p50 {latency['p50']:.1f} ms "
            f"p99 {latency['p99']:.1f} ms"
        )
    typer.echo(
        f"{report['model_name']} version {report['model_version']}: accuracy {shown} on "
        f"{report['n_scored']} images ({report['n_failed']} failed){timing}"
    )
    typer.echo(f"report: {html_path}")
    warned = report["warnings"]
    if warned["count"]:
        flagged, others = warned["accuracy_flagged"], warned["accuracy_others"]
        print(
            f"warning: {warned['count']} of {report['n_scored']} images look unlike the "
            f"model's training data or scored below --min-confidence (accuracy {flagged:.2%} "
            f"on them, {'n/a' if others is None else f'{others:.2%}'} on the rest); the "
            "report lists them",
            file=sys.stderr,
        )
