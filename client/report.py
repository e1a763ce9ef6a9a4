"""Evaluation metrics and the report files `evaluate` writes.

Pure functions over numpy arrays: no server, no model. `compute_metrics` turns true and predicted
class ids, confidences and latencies into the numbers; `write_report` writes report.json,
report.md, report.html (self-contained), confusion_matrix.png and misclassified.png.

Conventions: the confusion matrix has true classes as rows and predicted classes as columns;
precision, recall and F1 of a class that has no predictions (or no images) are 0.0, as
scikit-learn reports them with `zero_division=0`; accuracy counts only images that were scored
(failed files are listed separately, never counted as right or wrong).
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPORT_FILES = (
    "report.json",
    "report.md",
    "report.html",
    "confusion_matrix.png",
    "misclassified.png",
)


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


def latency_percentiles(latencies_ms: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """p50, p95, p99, mean and max in milliseconds (None for no measurements)."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "p50": _round(p50),
        "p95": _round(p95),
        "p99": _round(p99),
        "mean": _round(values.mean()),
        "max": _round(values.max()),
    }


def compute_metrics(
    true_ids: Sequence[int] | np.ndarray,
    predicted_ids: Sequence[int] | np.ndarray,
    confidences: Sequence[float] | np.ndarray,
    latencies_ms: Sequence[float] | np.ndarray,
    *,
    n_classes: int,
    elapsed_seconds: float | None = None,
) -> dict:
    """All the numbers of a report, for the images that were scored.

    true_ids, predicted_ids, confidences: one entry per scored image.
    latencies_ms: the latency of the predict request that carried each image (one per image, so
        the percentiles weigh requests by their batch size), or one per request.
    n_classes: K, the width of the model's probabilities (classes never seen still get a row).
    elapsed_seconds: wall-clock time of the whole run, for images_per_second.

    Returns accuracy, n_scored, per_class (lists indexed by class id), macro_avg, weighted_avg,
    confusion_matrix (nested lists), mean_confidence, latency_ms and images_per_second.
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
    return {
        "accuracy": correct / n_scored if n_scored else None,
        "n_scored": n_scored,
        "n_correct": correct,
        "per_class": {key: values.tolist() for key, values in scores.items()},
        # Macro averages cover only the classes that have images, so that a folder holding a
        # subset of the classes is not penalised for the ones it left out.
        "macro_avg": {
            key: float(scores[key][present].mean()) if present.any() else None
            for key in ("precision", "recall", "f1")
        },
        "weighted_avg": {
            key: float((scores[key] * weights).sum()) for key in ("precision", "recall", "f1")
        },
        "confusion_matrix": matrix.tolist(),
        "mean_confidence": float(confidence_array.mean()) if n_scored else None,
        "latency_ms": latency_percentiles(latencies_ms),
        "elapsed_seconds": _round(elapsed_seconds) if elapsed_seconds is not None else None,
        "images_per_second": rate,
    }


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


def build_report(
    metrics: dict,
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
    warnings: dict | None = None,
) -> dict:
    """The content of report.json: metrics plus what was evaluated, against what, and when.

    n_images: every labelled file found (scored + failed). failed: (path, reason) pairs.
    class_folders: class id -> the sub-folder its images came from.
    settings: how the run was made (server, signature, preprocess, batch size, ...).
    warnings: the out-of-distribution summary (`warning_summary`), or None.
    Paths and folder names are taken as the file system gives them (undecodable bytes as
    surrogates); the report holds them escaped by `client.names.escape_name`, so that every
    report file is valid UTF-8 and names each file losslessly.
    """
    from client.names import escape_name

    names = [str(name) for name in class_names]
    n_classes = len(metrics["confusion_matrix"])
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for a {n_classes}-class confusion matrix")
    scores = metrics["per_class"]
    folders = class_folders or {}
    per_class = [
        {
            "class_id": class_id,
            "class_name": names[class_id],
            "folder": None if folders.get(class_id) is None else escape_name(folders[class_id]),
            "precision": scores["precision"][class_id],
            "recall": scores["recall"][class_id],
            "f1": scores["f1"][class_id],
            "support": scores["support"][class_id],
        }
        for class_id in range(n_classes)
    ]
    moment = created_at or datetime.now(UTC)
    return {
        "model_name": model_name,
        "model_version": model_version,
        "created_at": moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "accuracy": metrics["accuracy"],
        "n_images": n_images,
        "n_scored": metrics["n_scored"],
        "n_failed": len(failed),
        "n_correct": metrics["n_correct"],
        "class_names": names,
        "per_class": per_class,
        "macro_avg": metrics["macro_avg"],
        "weighted_avg": metrics["weighted_avg"],
        "confusion_matrix": metrics["confusion_matrix"],
        "mean_confidence": metrics["mean_confidence"],
        "latency_ms": metrics["latency_ms"],
        "elapsed_seconds": metrics["elapsed_seconds"],
        "images_per_second": metrics["images_per_second"],
        "failed": [
            {"path": escape_name(str(path)), "error": str(reason)} for path, reason in failed
        ],
        "most_confident_mistakes": [
            {
                "path": escape_name(mistake.path),
                "true_id": mistake.true_id,
                "true_class": names[mistake.true_id],
                "predicted_id": mistake.predicted_id,
                "predicted_class": names[mistake.predicted_id],
                "confidence": mistake.confidence,
            }
            for mistake in mistakes
        ],
        "settings": dict(settings or {}),
        "warnings": warnings or warning_summary([], [], []),
    }


def warning_summary(
    paths: Sequence[str], warnings: Sequence[str | None], correct: Sequence[bool], limit: int = 25
) -> dict:
    """How many scored images got a `warning` (their input looks unlike the training data, or
    the prediction's confidence was low), the accuracy on them and on the rest, and the first
    `limit` of them. Arguments: one entry per scored image."""
    from client.names import escape_name

    flagged = [index for index, warning in enumerate(warnings) if warning]
    others = [index for index, warning in enumerate(warnings) if not warning]

    def accuracy(indices: list[int]) -> float | None:
        return sum(bool(correct[i]) for i in indices) / len(indices) if indices else None

    return {
        "count": len(flagged),
        "accuracy_flagged": accuracy(flagged),
        "accuracy_others": accuracy(others),
        "examples": [
            {"path": escape_name(str(paths[i])), "warning": str(warnings[i])}
            for i in flagged[:limit]
        ],
    }


def _warnings_text(report: dict) -> str:
    summary = report.get("warnings") or {"count": 0}
    if not summary["count"]:
        return "none"
    return (
        f"{summary['count']} images look unlike the training data or scored below "
        f"--min-confidence (accuracy {_percent(summary['accuracy_flagged'])} on them, "
        f"{_percent(summary['accuracy_others'])} on the rest)"
    )


def write_report(
    report: dict,
    report_dir: Path,
    *,
    mistake_images: Sequence[np.ndarray] = (),
    image_caption: str = "model input after preprocessing",
) -> dict[str, Path]:
    """Write the five report files into `report_dir` (created if needed); returns their paths.

    mistake_images: one uint8 `[H, W]` or `[H, W, C]` image per entry of
        report["most_confident_mistakes"] (what the grid shows; see `image_caption`).
    Each file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    names = report["class_names"]
    mistakes = report["most_confident_mistakes"]
    if mistake_images and len(mistake_images) != len(mistakes):
        raise ValueError(f"{len(mistake_images)} images for {len(mistakes)} mistakes")

    confusion_png = render_confusion_matrix(np.asarray(report["confusion_matrix"]), names)
    # The path keeps its class folder ("7/00042.png"): the file name alone is ambiguous.
    captions = [
        f"{_shorten_left(item['path'], 24)}\ntrue {_shorten(item['true_class'], 16)}\n"
        f"predicted {_shorten(item['predicted_class'], 16)} ({item['confidence']:.1%})"
        for item in mistakes
    ]
    mistakes_png = render_image_grid(
        list(mistake_images),
        captions,
        title=f"Most confident mistakes ({image_caption})",
    )
    contents: dict[str, bytes] = {
        "report.json": (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode(),
        "report.md": render_markdown(report).encode(),
        "report.html": render_html(report, confusion_png, mistakes_png, image_caption).encode(),
        "confusion_matrix.png": confusion_png,
        "misclassified.png": mistakes_png,
    }
    written = {}
    for name, content in contents.items():
        path = report_dir / name
        staging = report_dir / f".{name}.partial"
        staging.write_bytes(content)
        os.replace(staging, path)
        written[name] = path
    return written


def render_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str]) -> bytes:
    """A PNG heat map of the confusion matrix: colour = share of the true class, text = count."""
    figure_module, _ = _pyplot()
    matrix = np.asarray(matrix, dtype=np.int64)
    n_classes = matrix.shape[0]
    support = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)
    side = min(14.0, max(4.5, 0.55 * n_classes + 2.5))
    figure = figure_module.Figure(figsize=(side + 1.2, side), dpi=110)
    axes = figure.add_subplot()
    shown = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    labels = [_shorten(name, 18) for name in class_names]
    ticks = np.arange(n_classes)
    show_labels = n_classes <= 40
    # Tilt the column labels only when, side by side, they would run into each other.
    crowded = n_classes * max((len(label) for label in labels), default=1) > 6 * side
    # parse_math=False: names and paths are text; "$" pairs in them must not become mathtext
    # (a malformed formula would fail the whole report).
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
        for row in range(n_classes):
            for column in range(n_classes):
                count = matrix[row, column]
                if count == 0:
                    continue
                color = "white" if shares[row, column] > 0.5 else "black"
                axes.text(column, row, str(count), ha="center", va="center", color=color,
                          fontsize=font)  # fmt: skip
    figure.tight_layout()
    return _png(figure)


def render_image_grid(
    images: Sequence[np.ndarray], captions: Sequence[str], *, title: str, columns: int = 5
) -> bytes:
    """A PNG grid of images with a two-line caption each; a short note when there are none."""
    figure_module, _ = _pyplot()
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


def render_markdown(report: dict) -> str:
    """report.md: the summary, per-class table, confusion matrix and failures as Markdown."""
    names = report["class_names"]
    lines = [
        f"# Evaluation of {_md(report['model_name'])} version {report['model_version']}",
        "",
        f"Created {report['created_at']}.",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| accuracy | {_percent(report['accuracy'])} |",
        f"| images | {report['n_images']} ({report['n_scored']} scored, "
        f"{report['n_failed']} failed) |",
        f"| macro F1 | {_number(report['macro_avg']['f1'])} |",
        f"| mean confidence | {_number(report['mean_confidence'])} |",
        f"| latency p50 / p95 / p99 | {_latency(report['latency_ms'])} |",
        f"| throughput | {_number(report['images_per_second'], 1)} images/s |",
        f"| warnings | {_md(_warnings_text(report))} |",
    ]
    for key, value in report.get("settings", {}).items():
        lines.append(f"| {_md(key)} | {_md(value)} |")
    lines += [
        "",
        "## Per class",
        "",
        "| id | class | precision | recall | F1 | support |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in report["per_class"]:
        lines.append(
            f"| {row['class_id']} | {_md(row['class_name'])} | {_number(row['precision'])} | "
            f"{_number(row['recall'])} | {_number(row['f1'])} | {row['support']} |"
        )
    lines += [
        "",
        "## Confusion matrix",
        "",
        "Rows are the true classes, columns the predicted ones.",
        "",
        "| true \\ predicted | " + " | ".join(_md(name) for name in names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for name, row in zip(names, report["confusion_matrix"], strict=True):
        lines.append(f"| **{_md(name)}** | " + " | ".join(str(count) for count in row) + " |")
    lines += ["", "![confusion matrix](confusion_matrix.png)", ""]
    lines += ["## Most confident mistakes", ""]
    if report["most_confident_mistakes"]:
        lines += ["| file | true | predicted | confidence |", "| --- | --- | --- | ---: |"]
        for item in report["most_confident_mistakes"]:
            lines.append(
                f"| {_md(item['path'])} | {_md(item['true_class'])} | "
                f"{_md(item['predicted_class'])} | {_percent(item['confidence'])} |"
            )
        lines += ["", "![most confident mistakes](misclassified.png)"]
    else:
        lines.append("None: every scored image was classified correctly.")
    examples = (report.get("warnings") or {}).get("examples") or []
    if examples:
        lines += ["", "## Warnings", "", "| file | warning |", "| --- | --- |"]
        lines += [f"| {_md(item['path'])} | {_md(item['warning'])} |" for item in examples]
    lines += ["", "## Failed files", ""]
    if report["failed"]:
        lines += ["| file | reason |", "| --- | --- |"]
        lines += [f"| {_md(item['path'])} | {_md(item['error'])} |" for item in report["failed"]]
    else:
        lines.append("None: every file was scored.")
    return "\n".join(lines) + "\n"


def render_html(
    report: dict, confusion_png: bytes, mistakes_png: bytes, image_caption: str = ""
) -> str:
    """report.html: one self-contained page (inline CSS, PNGs as data URIs, nothing fetched)."""
    escape = html.escape
    names = report["class_names"]
    summary = [
        ("accuracy", _percent(report["accuracy"])),
        ("images", f"{report['n_images']} ({report['n_scored']} scored, "
                   f"{report['n_failed']} failed)"),
        ("macro F1", _number(report["macro_avg"]["f1"])),
        ("mean confidence", _number(report["mean_confidence"])),
        ("latency p50 / p95 / p99", _latency(report["latency_ms"])),
        ("throughput", f"{_number(report['images_per_second'], 1)} images/s"),
        ("warnings", _warnings_text(report)),
        ("created", report["created_at"]),
        *[(str(key), str(value)) for key, value in report.get("settings", {}).items()],
    ]  # fmt: skip
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Evaluation of {escape(str(report['model_name']))}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:70rem;"
        "padding:0 1rem;color:#222}table{border-collapse:collapse;margin:1rem 0}"
        "th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}"
        "th:first-child,td:first-child{text-align:left}td.text{text-align:left}"
        "img{max-width:100%;height:auto}.diagonal{background:#e3eefb;font-weight:bold}</style>",
        "</head><body>",
        f"<h1>Evaluation of {escape(str(report['model_name']))} "
        f"version {escape(str(report['model_version']))}</h1>",
        "<table>",
        *[f"<tr><th>{escape(key)}</th><td>{escape(value)}</td></tr>" for key, value in summary],
        "</table>",
        "<h2>Per class</h2><table><tr><th>id</th><th>class</th><th>precision</th>"
        "<th>recall</th><th>F1</th><th>support</th></tr>",
    ]
    for row in report["per_class"]:
        parts.append(
            f"<tr><td>{row['class_id']}</td><td class=text>{escape(row['class_name'])}</td>"
            f"<td>{_number(row['precision'])}</td><td>{_number(row['recall'])}</td>"
            f"<td>{_number(row['f1'])}</td><td>{row['support']}</td></tr>"
        )
    parts += [
        "</table><h2>Confusion matrix</h2>",
        "<p>Rows are the true classes, columns the predicted ones.</p><table><tr><th>true \\ "
        "predicted</th>" + "".join(f"<th>{escape(name)}</th>" for name in names) + "</tr>",
    ]
    for row_index, (name, row) in enumerate(zip(names, report["confusion_matrix"], strict=True)):
        cells = "".join(
            f"<td{' class=diagonal' if column == row_index else ''}>{count}</td>"
            for column, count in enumerate(row)
        )
        parts.append(f"<tr><th>{escape(name)}</th>{cells}</tr>")
    parts += [
        "</table>",
        f'<img alt="confusion matrix" src="{_data_uri(confusion_png)}">',
        "<h2>Most confident mistakes</h2>",
    ]
    if report["most_confident_mistakes"]:
        parts.append(
            f"<p>Images shown: {escape(image_caption)}.</p>"
            f'<img alt="most confident mistakes" src="{_data_uri(mistakes_png)}">'
            "<table><tr><th>file</th><th>true</th><th>predicted</th><th>confidence</th></tr>"
        )
        for item in report["most_confident_mistakes"]:
            parts.append(
                f"<tr><td>{escape(item['path'])}</td><td class=text>"
                f"{escape(item['true_class'])}</td><td class=text>"
                f"{escape(item['predicted_class'])}</td><td>{_percent(item['confidence'])}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>None: every scored image was classified correctly.</p>")
    examples = (report.get("warnings") or {}).get("examples") or []
    if examples:
        parts.append("<h2>Warnings</h2><table><tr><th>file</th><th>warning</th></tr>")
        parts += [
            f"<tr><td>{escape(item['path'])}</td><td class=text>{escape(item['warning'])}</td></tr>"
            for item in examples
        ]
        parts.append("</table>")
    parts.append("<h2>Failed files</h2>")
    if report["failed"]:
        parts.append("<table><tr><th>file</th><th>reason</th></tr>")
        parts += [
            f"<tr><td>{escape(item['path'])}</td><td class=text>{escape(item['error'])}</td></tr>"
            for item in report["failed"]
        ]
        parts.append("</table>")
    else:
        parts.append("<p>None: every file was scored.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _pyplot():
    # The Agg backend renders without a display; the object-oriented Figure API never touches
    # pyplot's global state, so reports can be drawn from any thread.
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import figure

    return figure, matplotlib


def _png(figure) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


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


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _latency(latency: dict) -> str:
    if latency.get("p50") is None:
        return "n/a"
    return f"{latency['p50']:.1f} / {latency['p95']:.1f} / {latency['p99']:.1f} ms"


def _md(value) -> str:
    """Text safe inside a Markdown table cell: no pipes, no line breaks, no inline markup.

    Line breaks (Markdown's: "\\r" and "\\n") become spaces; other characters are kept as they
    are, so an (escaped) file name in the Markdown source is exactly the name, runs of spaces
    included (Markdown collapses them only when rendering).
    """
    text = re.sub(r"[\r\n]+", " ", str(value))
    for character in "\\|*_`[]<>#":
        text = text.replace(character, "\\" + character)
    return text


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shorten_left(text: str, limit: int) -> str:
    """`text`, its start cut when too long: a path's end (class folder, file name) matters."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]
