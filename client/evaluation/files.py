"""The five report files of `evaluate`, written so that a reader never sees half a file."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from client.evaluation import REPORT_FILES
from client.evaluation.pictures import confusion_png, image_grid_png, mistake_captions
from client.evaluation.report import Report
from client.evaluation.sections import report_document
from client.evaluation.writers import to_html, to_markdown


def write_report(
    report: Report,
    report_dir: Path,
    *,
    mistake_images: Sequence[np.ndarray] = (),
    image_caption: str = "model input after preprocessing",
) -> dict[str, Path]:
    """Write report.json, report.md, report.html, confusion_matrix.png and misclassified.png
    into `report_dir` (created if needed); returns their paths by file name.

    mistake_images: one uint8 `[H, W]` or `[H, W, C]` image per entry of
        report.most_confident_mistakes (what the grid shows, described by `image_caption`).
    Each file is written to a hidden temporary name and renamed over the old one.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    mistakes = report.most_confident_mistakes
    if mistake_images and len(mistake_images) != len(mistakes):
        raise ValueError(f"{len(mistake_images)} images for {len(mistakes)} mistakes")
    matrix = confusion_png(report)
    grid = image_grid_png(
        list(mistake_images),
        mistake_captions(report),
        title=f"Most confident mistakes ({image_caption})",
    )
    document = report_document(report, matrix, grid, image_caption)
    contents = dict(
        zip(
            REPORT_FILES,
            (
                (json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n").encode(),
                to_markdown(document).encode(),
                to_html(document).encode(),
                matrix,
                grid,
            ),
            strict=True,
        )
    )
    written = {}
    for name, content in contents.items():
        path = report_dir / name
        staging = report_dir / f".{name}.partial"
        staging.write_bytes(content)
        os.replace(staging, path)
        written[name] = path
    return written
