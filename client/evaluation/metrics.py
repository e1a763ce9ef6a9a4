"""The numbers of an evaluation, from true and predicted class ids: pure numpy, no server.

Conventions: the confusion matrix has true classes as rows and predicted classes as columns;
precision, recall and F1 of a class that has no predictions (or no images) are 0.0, as
scikit-learn reports them with `zero_division=0`; accuracy counts only images that were scored
(failed files are listed separately, never counted as right or wrong).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Averages:
    precision: float | None
    recall: float | None
    f1: float | None


@dataclass(frozen=True)
class Latency:
    """Milliseconds; None without measurements."""

    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    max: float | None


@dataclass(frozen=True)
class PerClass:
    """Lists indexed by class id."""

    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]


@dataclass(frozen=True)
class Metrics:
    accuracy: float | None  # None when nothing was scored
    n_scored: int
    n_correct: int
    per_class: PerClass
    # Macro averages cover only the classes that have images, so that a folder holding a subset
    # of the classes is not penalised for the ones it left out; weighted ones weigh by support.
    macro_avg: Averages
    weighted_avg: Averages
    confusion_matrix: list[list[int]]
    mean_confidence: float | None
    latency_ms: Latency
    elapsed_seconds: float | None
    images_per_second: float | None


@dataclass(frozen=True)
class Mistake:
    """One misclassified image, for the "most confident mistakes" grid and tables."""

    path: str  # relative to the evaluated folder
    true_id: int
    predicted_id: int
    confidence: float  # the model's probability for its (wrong) prediction


def confusion_matrix(true_ids: np.ndarray, predicted_ids: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts `[n_classes, n_classes]`: row = true class, column = predicted class."""
    true_ids, predicted_ids = _ids(true_ids, n_classes), _ids(predicted_ids, n_classes)
    if true_ids.shape != predicted_ids.shape:
        raise ValueError(f"{true_ids.size} true ids but {predicted_ids.size} predictions")
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (true_ids, predicted_ids), 1)
    return matrix


def per_class_metrics(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of every class, from a confusion matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    correct = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    recall = np.divide(correct, support, out=np.zeros_like(correct), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(correct), where=both > 0)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support.astype(np.int64),
    }


def latency_percentiles(latencies_ms: Sequence[float] | np.ndarray) -> Latency:
    """p50, p95, p99, mean and max in milliseconds (None for no measurements)."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Latency(None, None, None, None, None)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return Latency(
        _round(p50), _round(p95), _round(p99), _round(values.mean()), _round(values.max())
    )


def compute_metrics(
    true_ids: Sequence[int] | np.ndarray,
    predicted_ids: Sequence[int] | np.ndarray,
    confidences: Sequence[float] | np.ndarray,
    latencies_ms: Sequence[float] | np.ndarray,
    *,
    n_classes: int,
    elapsed_seconds: float | None = None,
) -> Metrics:
    """All the numbers of a report, for the images that were scored.

    true_ids, predicted_ids, confidences: one entry per scored image.
    latencies_ms: the latency of the predict request that carried each image (one per image, so
        the percentiles weigh requests by their batch size), or one per request.
    n_classes: K, the width of the model's probabilities (classes never seen still get a row).
    elapsed_seconds: wall-clock time of the whole run, for images_per_second.
    """
    if n_classes <= 0:
        raise ValueError(f"n_classes must be positive, not {n_classes}")
    true_array = _ids(true_ids, n_classes)
    predicted_array = _ids(predicted_ids, n_classes)
    confidence_array = np.asarray(confidences, dtype=np.float64).reshape(-1)
    if not (true_array.size == predicted_array.size == confidence_array.size):
        raise ValueError(
            f"lengths differ: {true_array.size} true ids, {predicted_array.size} predictions, "
            f"{confidence_array.size} confidences"
        )
    matrix = confusion_matrix(true_array, predicted_array, n_classes)
    scores = per_class_metrics(matrix)
    n_scored = int(true_array.size)
    correct = int(np.trace(matrix))
    support = scores["support"]
    weights = support / support.sum() if support.sum() > 0 else np.zeros(n_classes)
    present = support > 0
    rate = None
    if elapsed_seconds is not None and elapsed_seconds > 0:
        rate = _round(n_scored / elapsed_seconds)
    return Metrics(
        accuracy=correct / n_scored if n_scored else None,
        n_scored=n_scored,
        n_correct=correct,
        per_class=PerClass(**{key: values.tolist() for key, values in scores.items()}),
        macro_avg=Averages(
            *(float(scores[k][present].mean()) if present.any() else None for k in _AVERAGED)
        ),
        weighted_avg=Averages(*(float((scores[k] * weights).sum()) for k in _AVERAGED)),
        confusion_matrix=matrix.tolist(),
        mean_confidence=float(confidence_array.mean()) if n_scored else None,
        latency_ms=latency_percentiles(latencies_ms),
        elapsed_seconds=_round(elapsed_seconds) if elapsed_seconds is not None else None,
        images_per_second=rate,
    )


_AVERAGED = ("precision", "recall", "f1")


def most_confident_mistakes(
    paths: Sequence[str],
    true_ids: Sequence[int] | np.ndarray,
    predicted_ids: Sequence[int] | np.ndarray,
    confidences: Sequence[float] | np.ndarray,
    *,
    limit: int = 25,
) -> list[Mistake]:
    """The `limit` misclassified images the model was surest about, surest first.

    Ties keep the input order, so the selection is the same on every run.
    """
    true_array = np.asarray(true_ids).reshape(-1)
    predicted_array = np.asarray(predicted_ids).reshape(-1)
    confidence_array = np.asarray(confidences, dtype=np.float64).reshape(-1)
    wrong = np.flatnonzero(true_array != predicted_array)
    order = wrong[np.argsort(-confidence_array[wrong], kind="stable")][: max(0, limit)]
    return [
        Mistake(
            path=str(paths[index]),
            true_id=int(true_array[index]),
            predicted_id=int(predicted_array[index]),
            confidence=float(confidence_array[index]),
        )
        for index in order
    ]


def _ids(values, n_classes: int) -> np.ndarray:
    array = np.asarray(values).reshape(-1)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"class ids must be integers, got {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= n_classes):
        raise ValueError(
            f"class ids must be in 0..{n_classes - 1}, got {array.min()}..{array.max()}"
        )
    return array


def _round(value) -> float | None:
    return None if value is None else round(float(value), 3)
