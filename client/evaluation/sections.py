"""The report as a document: sections of paragraphs, tables and pictures, in one model that
both writers (`client.evaluation.writers`) render. A section is written here once; how a table
or a picture looks in Markdown or HTML is the writers' business.

Cells are plain text (already formatted numbers, escaped file names): the writers escape them
for their format.
"""

from __future__ import annotations

from dataclasses import dataclass

from client.evaluation.report import Report


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...] = ()  # per column: right-aligned numbers (default: text)
    row_headers: bool = False  # the first cell of each row names it (as in a matrix)
    diagonal: bool = False  # highlight row i's i-th data cell (a matrix's diagonal)

    def is_numeric(self, column: int) -> bool:
        return column < len(self.numeric) and self.numeric[column]

    def is_diagonal(self, row: int, column: int) -> bool:
        return self.diagonal and column - self.row_headers == row


@dataclass(frozen=True)
class Picture:
    alt: str
    file_name: str  # the PNG beside report.md; report.html embeds `png` instead
    png: bytes


Block = Paragraph | Table | Picture


@dataclass(frozen=True)
class Section:
    title: str | None  # None: the untitled opening section
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Document:
    title: str
    sections: tuple[Section, ...]


def report_document(
    report: Report, confusion_png: bytes, mistakes_png: bytes, image_caption: str
) -> Document:
    """Every section of the report, in order; Warnings only when some image got one."""
    sections = [
        _summary(report),
        _per_class(report),
        _confusion(report, confusion_png),
        _mistakes(report, mistakes_png, image_caption),
    ]
    if report.warnings.examples:
        sections.append(_warnings(report))
    sections.append(_failed(report))
    title = f"Evaluation of {report.model_name} version {report.model_version}"
    return Document(title, tuple(sections))


def _summary(report: Report) -> Section:
    rows = [
        ("accuracy", percent(report.accuracy)),
        ("images", f"{report.n_images} ({report.n_scored} scored, {report.n_failed} failed)"),
        ("macro F1", number(report.macro_avg.f1)),
        ("mean confidence", number(report.mean_confidence)),
        ("latency p50 / p95 / p99", _latency(report)),
        ("throughput", f"{number(report.images_per_second, 1)} images/s"),
        ("warnings", _warnings_text(report)),
        *[(str(key), str(value)) for key, value in report.settings.items()],
    ]
    return Section(
        None,
        (Paragraph(f"Created {report.created_at}."), Table(("metric", "value"), tuple(rows))),
    )


def _per_class(report: Report) -> Section:
    rows = tuple(
        (str(row.class_id), row.class_name, number(row.precision), number(row.recall),
         number(row.f1), str(row.support))
        for row in report.per_class
    )  # fmt: skip
    columns = ("id", "class", "precision", "recall", "F1", "support")
    return Section("Per class", (Table(columns, rows, (True, False, True, True, True, True)),))


def _confusion(report: Report, png: bytes) -> Section:
    names = report.class_names
    rows = tuple(
        (name, *(str(count) for count in counts))
        for name, counts in zip(names, report.confusion_matrix, strict=True)
    )
    table = Table(
        ("true \\ predicted", *names),
        rows,
        (False, *[True] * len(names)),
        row_headers=True,
        diagonal=True,
    )
    return Section(
        "Confusion matrix",
        (
            Paragraph("Rows are the true classes, columns the predicted ones."),
            table,
            Picture("confusion matrix", "confusion_matrix.png", png),
        ),
    )


def _mistakes(report: Report, png: bytes, image_caption: str) -> Section:
    items = report.most_confident_mistakes
    if not items:
        return Section(
            "Most confident mistakes",
            (Paragraph("None: every scored image was classified correctly."),),
        )
    rows = tuple(
        (item.path, item.true_class, item.predicted_class, percent(item.confidence))
        for item in items
    )
    return Section(
        "Most confident mistakes",
        (
            Paragraph(f"Images shown: {image_caption}."),
            Picture("most confident mistakes", "misclassified.png", png),
            Table(("file", "true", "predicted", "confidence"), rows, (False, False, False, True)),
        ),
    )


def _warnings(report: Report) -> Section:
    rows = tuple((item.path, item.warning) for item in report.warnings.examples)
    return Section("Warnings", (Table(("file", "warning"), rows),))


def _failed(report: Report) -> Section:
    if not report.failed:
        return Section("Failed files", (Paragraph("None: every file was scored."),))
    rows = tuple((item.path, item.error) for item in report.failed)
    return Section("Failed files", (Table(("file", "reason"), rows),))


def _warnings_text(report: Report) -> str:
    summary = report.warnings
    if not summary.count:
        return "none"
    return (
        f"{summary.count} images look unlike the training data or scored below "
        f"--min-confidence (accuracy {percent(summary.accuracy_flagged)} on them, "
        f"{percent(summary.accuracy_others)} on the rest)"
    )


def _latency(report: Report) -> str:
    latency = report.latency_ms
    if latency.p50 is None:
        return "n/a"
    return f"{latency.p50:.1f} / {latency.p95:.1f} / {latency.p99:.1f} ms"


def number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"
