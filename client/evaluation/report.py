"""The typed evaluation report: what was evaluated, against what, when, and the numbers.

`Report.to_json()` is report.json. Paths and folder names are taken as the file system gives
them (undecodable bytes as surrogates); the report holds them escaped by
`client.names.escape_name`, so that every report file is valid UTF-8 and names each file
losslessly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from client.errors import EXIT_ERROR
from client.evaluation import EvaluationError
from client.evaluation.metrics import (
    Averages,
    Latency,
    Metrics,
    Mistake,
    compute_metrics,
    most_confident_mistakes,
)
from client.names import escape_name
from common.contract import PROBABILITIES


@dataclass(frozen=True)
class ClassScores:
    class_id: int
    class_name: str
    folder: str | None  # the sub-folder its images came from
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class FailedFile:
    path: str
    error: str


@dataclass(frozen=True)
class MistakeRow:
    path: str
    true_id: int
    true_class: str
    predicted_id: int
    predicted_class: str
    confidence: float


@dataclass(frozen=True)
class FlaggedImage:
    path: str
    warning: str


@dataclass(frozen=True)
class WarningSummary:
    """Scored images whose input looks unlike the training data or whose confidence was low."""

    count: int = 0
    accuracy_flagged: float | None = None
    accuracy_others: float | None = None
    examples: tuple[FlaggedImage, ...] = ()  # the first few


@dataclass(frozen=True)
class Report:
    model_name: str
    model_version: int | None
    created_at: str  # ISO 8601, UTC, e.g. 2026-01-02T03:04:05Z
    accuracy: float | None
    n_images: int  # every labelled file found: scored + failed
    n_scored: int
    n_failed: int
    n_correct: int
    class_names: tuple[str, ...]
    per_class: tuple[ClassScores, ...]
    macro_avg: Averages
    weighted_avg: Averages
    confusion_matrix: list[list[int]]  # rows: true classes, columns: predicted ones
    mean_confidence: float | None
    latency_ms: Latency
    elapsed_seconds: float | None
    images_per_second: float | None
    failed: tuple[FailedFile, ...] = ()
    most_confident_mistakes: tuple[MistakeRow, ...] = ()
    settings: dict[str, object] = field(default_factory=dict)  # how the run was made
    warnings: WarningSummary = WarningSummary()
    ignored: tuple[str, ...] = ()  # files outside any class folder

    def to_json(self) -> dict:
        """The content of report.json."""
        return dataclasses.asdict(self)


def build_report(
    metrics: Metrics,
    *,
    class_names: Sequence[str],
    model_name: str,
    model_version: int | None,
    n_images: int,
    failed: Sequence[tuple[str, str]] = (),
    mistakes: Sequence[Mistake] = (),
    class_folders: dict[int, str] | None = None,
    settings: dict | None = None,
    created_at: datetime | None = None,
    warnings: WarningSummary | None = None,
    ignored: Sequence[str] = (),
) -> Report:
    """The report of `metrics`, with names, failures (path, reason) and mistakes escaped."""
    names = tuple(str(name) for name in class_names)
    n_classes = len(metrics.confusion_matrix)
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for a {n_classes}-class confusion matrix")
    scores = metrics.per_class
    folders = class_folders or {}
    moment = (created_at or datetime.now(UTC)).astimezone(UTC)
    return Report(
        model_name=model_name,
        model_version=model_version,
        created_at=moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        accuracy=metrics.accuracy,
        n_images=n_images,
        n_scored=metrics.n_scored,
        n_failed=len(failed),
        n_correct=metrics.n_correct,
        class_names=names,
        per_class=tuple(
            ClassScores(
                class_id=k,
                class_name=names[k],
                folder=None if folders.get(k) is None else escape_name(folders[k]),
                precision=scores.precision[k],
                recall=scores.recall[k],
                f1=scores.f1[k],
                support=scores.support[k],
            )
            for k in range(n_classes)
        ),
        macro_avg=metrics.macro_avg,
        weighted_avg=metrics.weighted_avg,
        confusion_matrix=metrics.confusion_matrix,
        mean_confidence=metrics.mean_confidence,
        latency_ms=metrics.latency_ms,
        elapsed_seconds=metrics.elapsed_seconds,
        images_per_second=metrics.images_per_second,
        failed=tuple(FailedFile(escape_name(str(path)), str(reason)) for path, reason in failed),
        most_confident_mistakes=tuple(
            MistakeRow(
                path=escape_name(mistake.path),
                true_id=mistake.true_id,
                true_class=names[mistake.true_id],
                predicted_id=mistake.predicted_id,
                predicted_class=names[mistake.predicted_id],
                confidence=mistake.confidence,
            )
            for mistake in mistakes
        ),
        settings=dict(settings or {}),
        warnings=warnings or WarningSummary(),
        ignored=tuple(escape_name(path) for path in ignored),
    )


def warning_summary(
    paths: Sequence[str], warnings: Sequence[str | None], correct: Sequence[bool], limit: int = 25
) -> WarningSummary:
    """How many scored images got a warning, the accuracy on them and on the rest, and the
    first `limit` of them. Arguments: one entry per scored image."""
    flagged = [index for index, warning in enumerate(warnings) if warning]
    others = [index for index, warning in enumerate(warnings) if not warning]

    def accuracy(indices: list[int]) -> float | None:
        return sum(bool(correct[i]) for i in indices) / len(indices) if indices else None

    return WarningSummary(
        count=len(flagged),
        accuracy_flagged=accuracy(flagged),
        accuracy_others=accuracy(others),
        examples=tuple(
            FlaggedImage(escape_name(str(paths[i])), str(warnings[i])) for i in flagged[:limit]
        ),
    )


def output_width(metadata, signature: str) -> int | None:
    """K, the width of the signature's probabilities, when its metadata gives it."""
    probabilities = metadata.signatures[signature].outputs.get(PROBABILITIES)
    if probabilities is None or not probabilities.shape or probabilities.shape[-1] <= 0:
        return None
    return int(probabilities.shape[-1])


def assemble(
    results: Sequence,
    *,
    folder_ids: dict[str, int],
    known_names: dict[int, str],
    n_classes: int,
    elapsed: float,
    model_name: str,
    model_version: int | None,
    mistakes: int,
    settings: dict,
    ignored: Sequence[str] = (),
) -> Report:
    """The report of scored images (`client.scoring.ScoredImage`, paths "<class folder>/...").

    folder_ids: class folder -> class id (`map_class_folders`). known_names: class id -> the
    name the model returned. model_version: the version that answered last.
    """
    import numpy as np

    scored = [result for result in results if result.ok]
    failed = [(result.path, result.error) for result in results if not result.ok]
    true_ids = np.array([folder_ids[result.path.split("/", 1)[0]] for result in scored], np.int64)
    predicted = np.array([result.class_id for result in scored], np.int64)
    if predicted.size and (predicted.min() < 0 or predicted.max() >= n_classes):
        message = f"the model predicted class ids outside 0..{n_classes - 1}"
        raise EvaluationError(message, exit_code=EXIT_ERROR)
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
    paths = [result.path for result in scored]
    return build_report(
        metrics,
        class_names=class_names,
        model_name=model_name,
        model_version=model_version,
        n_images=len(results),
        failed=failed,
        mistakes=most_confident_mistakes(paths, true_ids, predicted, confidences, limit=mistakes),
        class_folders=folder_of,
        settings=settings,
        warnings=warning_summary(
            paths, [result.warning for result in scored], (true_ids == predicted).tolist()
        ),
        ignored=ignored,
    )
