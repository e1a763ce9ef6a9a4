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


def sample_indices(labels: np.ndarray, count: int) -> list[int]:
    """`count` example indices that show every class: the first example of each class, then
    the second of each, and so on (a folder data set is sorted by class, so its first 32
    examples would all be one class)."""
    labels = np.asarray(labels).reshape(-1)
    per_class = [np.flatnonzero(labels == label).tolist() for label in np.unique(labels)]
    chosen: list[int] = []
    for rank in range(max((len(indices) for indices in per_class), default=0)):
        for indices in per_class:
            if rank < len(indices):
                chosen.append(indices[rank])
                if len(chosen) == count:
                    return chosen
    return chosen


def save_samples(
    path: Path,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    rows: int = 4,
    columns: int = 8,
) -> None:
    """A grid of training images from every class (`sample_indices`), titled with the class."""
    plt = _pyplot()
    chosen = sample_indices(labels, rows * columns)
    count = len(chosen)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.35))
    for index, axis in enumerate(np.ravel(axes)):
        axis.axis("off")
        if index >= count:
            continue
        pixels = images[chosen[index]]
        if pixels.shape[-1] == 1:
            axis.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            axis.imshow(pixels)
        axis.set_title(class_names[int(labels[chosen[index]])], fontsize=8)
    figure.suptitle(f"training samples ({len(np.unique(labels))} classes)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_curves(path: Path, history: dict[str, list[float]]) -> None:
    """Accuracy and loss per epoch, training against validation."""
    plt = _pyplot()
    figure = curves_figure(history)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def curves_figure(history: dict[str, list[float]]):
    """The figure of `save_curves`. Epochs are whole numbers on the x axis (every one of them
    up to 20 epochs), each point of a short run (up to 3 epochs) is labelled with its value, so
    that one epoch reads as two labelled points, not two dots on fractional ticks."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    count = len(history["loss"])
    epochs = np.arange(1, count + 1)
    for axis, metric in zip(axes, ("accuracy", "loss"), strict=True):
        series = [("train", history[metric])]
        if f"val_{metric}" in history:
            series.append(("validation", history[f"val_{metric}"]))
        for name, values in series:
            (line,) = axis.plot(epochs, values, marker="o", label=name)
            if count <= 3:
                for epoch, value in zip(epochs, values, strict=True):
                    axis.annotate(
                        f"{value:.4f}", (epoch, value), textcoords="offset points",
                        xytext=(8, 0), va="center", color=line.get_color(), fontsize=9,
                    )  # fmt: skip
        axis.set_xlabel("epoch")
        if count <= 20:
            axis.set_xticks(epochs)
        else:
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlim(0.5, count + 0.5 + (0.6 if count <= 3 else 0))
        axis.set_ylabel(metric)
        axis.set_title(f"{metric} ({count} epoch{'s' if count != 1 else ''})")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return figure


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


def save_confusion_matrix(
    path: Path, matrix: np.ndarray, class_names: Sequence[str], split: str = "test"
) -> None:
    """The confusion matrix of `split` as a heat map with counts in the cells."""
    plt = _pyplot()
    figure = confusion_figure(matrix, class_names, split)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], split: str = "test"):
    """The figure of `save_confusion_matrix`: colour = share of the true class (0-1, with a
    colour bar), so small classes read as clearly as large ones; the count in every non-empty
    cell, white on dark cells and black on light ones; the split and its size in the title."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.int64)
    n_classes = len(class_names)
    support = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)
    side = min(14.0, max(5.5, 0.6 * n_classes + 2.5))
    figure, axis = plt.subplots(figsize=(side + 1.3, side))
    shown = axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = np.arange(n_classes)
    crowded = n_classes * max((len(str(name)) for name in class_names), default=1) > 6 * side
    axis.set_xticks(
        ticks,
        labels=class_names,
        rotation=45 if crowded else 0,
        ha="right" if crowded else "center",
    )
    axis.set_yticks(ticks, labels=class_names)
    axis.tick_params(labelsize=11 if n_classes <= 12 else 8)
    axis.set_xlabel("predicted class", fontsize=12)
    axis.set_ylabel("true class", fontsize=12)
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    axis.set_title(
        f"confusion matrix, {split} split ({int(matrix.sum())} images, accuracy {accuracy:.4f})",
        fontsize=12,
    )
    if n_classes <= 30:
        font = 11 if n_classes <= 12 else 7
        for row in range(n_classes):
            for column in range(n_classes):
                if matrix[row, column] == 0:
                    continue
                axis.text(
                    column, row, str(matrix[row, column]), ha="center", va="center",
                    fontsize=font, color="white" if shares[row, column] > 0.5 else "black",
                )  # fmt: skip
    figure.tight_layout()
    return figure
