"""Run reports: sample grid, learning curves, confusion matrix, per-class metrics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    # Agg renders to files without a display (CI, containers, Kubernetes Jobs).
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_samples(
    path: Path,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    rows: int = 4,
    columns: int = 8,
) -> None:
    """A grid of the first training images, each titled with its class name."""
    plt = _pyplot()
    count = min(rows * columns, len(images))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.35))
    for index, axis in enumerate(np.ravel(axes)):
        axis.axis("off")
        if index >= count:
            continue
        pixels = images[index]
        if pixels.shape[-1] == 1:
            axis.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            axis.imshow(pixels)
        axis.set_title(class_names[int(labels[index])], fontsize=8)
    figure.suptitle("training samples")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_curves(path: Path, history: dict[str, list[float]]) -> None:
    """Accuracy and loss per epoch, training against validation."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for axis, metric in zip(axes, ("accuracy", "loss"), strict=True):
        axis.plot(epochs, history[metric], marker="o", label="train")
        if f"val_{metric}" in history:
            axis.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(metric)
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return matrix


def per_class_metrics(matrix: np.ndarray, class_names: Sequence[str]) -> dict[str, dict]:
    """Precision, recall, F1 and support per class (0 where undefined, as scikit-learn does)."""
    true_positives = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    actual = matrix.sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_positives / predicted, 0.0)
        recall = np.where(actual > 0, true_positives / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        name: {
            "precision": round(float(precision[index]), 6),
            "recall": round(float(recall[index]), 6),
            "f1": round(float(f1[index]), 6),
            "support": int(actual[index]),
        }
        for index, name in enumerate(class_names)
    }


def save_confusion_matrix(path: Path, matrix: np.ndarray, class_names: Sequence[str]) -> None:
    """The confusion matrix as a heat map with counts in the cells."""
    plt = _pyplot()
    size = max(5.0, 0.55 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, labels=class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    axis.set_title(f"confusion matrix (accuracy {accuracy:.4f})")
    if len(class_names) <= 30:
        threshold = matrix.max() / 2
        for row in range(len(class_names)):
            for column in range(len(class_names)):
                axis.text(
                    column, row, str(matrix[row, column]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[row, column] > threshold else "black",
                )  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
