"""Evaluation of a labelled folder against a served model: everything `evaluate` does but talk
to the user.

- `folders`: which files belong to which class (class sub-folders, mapped to class ids);
- `metrics`: the numbers (accuracy, per-class scores, confusion matrix, latency), numpy only;
- `report`: the typed report (report.json is its `to_json()`), assembled from scored images;
- `sections` and `writers`: one section model of the report, which the Markdown and the HTML
  writers both render;
- `pictures`: the confusion matrix and the mistakes grid (matplotlib);
- `files`: the five report files, written atomically.

Nothing here exits or prints: failures are `EvaluationError`, whose `exit_code` the command uses.
"""

from __future__ import annotations

from client.errors import EXIT_USAGE
from common.cli import OneLineError

# What `evaluate` writes into its --report-dir.
REPORT_FILES = (
    "report.json",
    "report.md",
    "report.html",
    "confusion_matrix.png",
    "misclassified.png",
)


class EvaluationError(OneLineError, ValueError):
    """Why an evaluation cannot go on, in one line, with the exit code the CLI should use."""

    exit_code = EXIT_USAGE
