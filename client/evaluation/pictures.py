"""The report's pictures: the confusion matrix and the grid of the most confident mistakes.

Matplotlib's Agg backend through the object-oriented Figure API, which never touches pyplot's
global state, so reports can be drawn from any thread and without a display. Names and paths
are drawn with parse_math=False: "$" pairs in them are text, not mathtext (a malformed formula
would fail the whole report).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from client.evaluation.report import Report


def confusion_png(report: Report) -> bytes:
    """A heat map of the confusion matrix: colour = share of the true class, text = count."""
    figure_module = _figure_module()
    matrix = np.asarray(report.confusion_matrix, dtype=np.int64).reshape(
        len(report.class_names), len(report.class_names)
    )
    n_classes = matrix.shape[0]
    support = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)
    side = min(14.0, max(4.5, 0.55 * n_classes + 2.5))
    figure = figure_module.Figure(figsize=(side + 1.2, side), dpi=110)
    axes = figure.add_subplot()
    shown = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    labels = [shorten(name, 18) for name in report.class_names]
    ticks = np.arange(n_classes)
    show_labels = n_classes <= 40
    # Tilt the column labels only when, side by side, they would run into each other.
    crowded = n_classes * max((len(label) for label in labels), default=1) > 6 * side
    axes.set_xticks(
        ticks,
        labels if show_labels else [],
        rotation=45 if crowded else 0,
        ha="right" if crowded else "center",
        parse_math=False,
    )
    axes.set_yticks(ticks, labels if show_labels else [], parse_math=False)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"Confusion matrix ({int(matrix.sum())} images)")
    if n_classes <= 25:
        font = 9 if n_classes <= 12 else 6
        for row, column in zip(*np.nonzero(matrix), strict=True):
            color = "white" if shares[row, column] > 0.5 else "black"
            axes.text(column, row, str(matrix[row, column]), ha="center", va="center",
                      color=color, fontsize=font)  # fmt: skip
    figure.tight_layout()
    return _png(figure)


def mistake_captions(report: Report) -> list[str]:
    """One caption per shown mistake; the path keeps its class folder ("7/00042.png"): the file
    name alone is ambiguous."""
    return [
        f"{shorten_left(item.path, 24)}\ntrue {shorten(item.true_class, 16)}\n"
        f"predicted {shorten(item.predicted_class, 16)} ({item.confidence:.1%})"
        for item in report.most_confident_mistakes
    ]


def image_grid_png(
    images: Sequence[np.ndarray], captions: Sequence[str], *, title: str, columns: int = 5
) -> bytes:
    """A grid of images with a caption each; a short note when there are none."""
    figure_module = _figure_module()
    if not images:
        figure = figure_module.Figure(figsize=(5, 1.2), dpi=110)
        figure.text(0.5, 0.5, "No misclassified images.", ha="center", va="center", fontsize=12)
        return _png(figure)
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    figure = figure_module.Figure(figsize=(2.1 * columns, 2.6 * rows + 0.5), dpi=110)
    figure.suptitle(title, fontsize=11, parse_math=False)
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        axes = figure.add_subplot(rows, columns, index + 1)
        pixels = np.asarray(image)
        if pixels.ndim == 3 and pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        if pixels.ndim == 2:
            axes.imshow(pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            axes.imshow(pixels.astype(np.uint8), interpolation="nearest")
        axes.set_title(caption, fontsize=8, parse_math=False)
        axes.set_axis_off()
    figure.tight_layout()
    return _png(figure)


def model_inputs(report: Report, folder: Path, image_spec, preprocess: str) -> list[np.ndarray]:
    """What the model saw for each shown mistake: its file, preprocessed again the same way
    (black when the file changed on disk since it was scored)."""
    from client.names import unescape_name
    from client.preprocess import ImageError, load_image

    shape = (image_spec.height, image_spec.width, image_spec.channels)
    images = []
    for item in report.most_confident_mistakes:
        try:
            pixels = load_image(
                folder / unescape_name(item.path),
                height=shape[0],
                width=shape[1],
                channels=shape[2],
                mode=preprocess,
            )
        except (ImageError, OSError):
            pixels = np.zeros(shape, np.uint8)
        images.append(pixels)
    return images


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shorten_left(text: str, limit: int) -> str:
    """`text`, its start cut when too long: a path's end (class folder, file name) matters."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def _figure_module():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import figure

    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
