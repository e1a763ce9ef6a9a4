"""client.evaluation: metrics against hand-computed values, the typed report, its sections in
both writers, and the five report files."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client.evaluation import REPORT_FILES
from client.evaluation.files import write_report
from client.evaluation.metrics import (
    compute_metrics,
    confusion_matrix,
    latency_percentiles,
    most_confident_mistakes,
    per_class_metrics,
)
from client.evaluation.report import Report, build_report

# Three classes, eight images; worked out by hand below.
TRUE = [0, 0, 0, 1, 1, 2, 2, 2]
PREDICTED = [0, 0, 1, 1, 2, 2, 2, 0]
CONFIDENCE = [0.9, 0.8, 0.7, 0.95, 0.6, 0.99, 0.5, 0.85]


def test_confusion_matrix_rows_are_true_and_columns_predicted() -> None:
    expected = [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert confusion_matrix(np.array(TRUE), np.array(PREDICTED), 3).tolist() == expected


def test_per_class_metrics_match_hand_computed_values() -> None:
    scores = per_class_metrics(np.array([[2, 1, 0], [0, 1, 1], [1, 0, 2]]))
    # class 0: 2 right of 3 predicted, 2 of 3 true; class 1: 1/2 and 1/2; class 2: 2/3 and 2/3.
    np.testing.assert_allclose(scores["precision"], [2 / 3, 1 / 2, 2 / 3])
    np.testing.assert_allclose(scores["recall"], [2 / 3, 1 / 2, 2 / 3])
    np.testing.assert_allclose(scores["f1"], [2 / 3, 1 / 2, 2 / 3])
    assert scores["support"].tolist() == [3, 2, 3]


def test_classes_without_predictions_or_images_score_zero_not_nan() -> None:
    scores = per_class_metrics(np.array([[3, 0, 0], [1, 0, 0], [0, 0, 0]]))
    assert scores["precision"].tolist() == [0.75, 0.0, 0.0]
    assert scores["recall"].tolist() == [1.0, 0.0, 0.0]
    assert np.isfinite(scores["f1"]).all()


def test_compute_metrics() -> None:
    latencies = [10.0] * 6 + [50.0, 100.0]
    metrics = compute_metrics(
        TRUE, PREDICTED, CONFIDENCE, latencies, n_classes=4, elapsed_seconds=2.0
    )
    assert metrics.accuracy == 5 / 8
    assert metrics.n_scored == 8 and metrics.n_correct == 5
    assert metrics.images_per_second == 4.0
    assert len(metrics.confusion_matrix) == 4  # class 3 has no images but keeps its row
    assert metrics.per_class.support == [3, 2, 3, 0]
    # The macro average skips class 3 (no images); the weighted one weighs by support.
    assert metrics.macro_avg.recall == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert metrics.weighted_avg.recall == pytest.approx(5 / 8)
    assert metrics.mean_confidence == pytest.approx(np.mean(CONFIDENCE))
    latency = metrics.latency_ms
    assert latency.p50 == 10.0 and latency.max == 100.0
    assert latency.p95 == pytest.approx(np.percentile(latencies, 95), abs=1e-3)
    assert 50.0 < latency.p99 <= 100.0


def test_compute_metrics_rejects_inconsistent_input() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        compute_metrics([0, 1], [0], [0.5, 0.5], [1.0], n_classes=2)
    with pytest.raises(ValueError, match=r"class ids must be in 0\.\.1"):
        compute_metrics([0, 2], [0, 1], [0.5, 0.5], [1.0], n_classes=2)
    with pytest.raises(ValueError, match="integers"):
        compute_metrics([0.5], [0], [0.5], [1.0], n_classes=2)


def test_empty_runs_have_no_accuracy_instead_of_dividing_by_zero() -> None:
    metrics = compute_metrics([], [], [], [], n_classes=2, elapsed_seconds=0.0)
    assert metrics.accuracy is None and metrics.images_per_second is None
    assert latency_percentiles([]).p50 is None


def test_most_confident_mistakes_are_sorted_and_stable() -> None:
    paths = [f"file{index}.png" for index in range(8)]
    mistakes = most_confident_mistakes(paths, TRUE, PREDICTED, CONFIDENCE, limit=2)
    assert [(m.path, m.true_id, m.predicted_id) for m in mistakes] == [
        ("file7.png", 2, 0),
        ("file2.png", 0, 1),
    ]
    assert most_confident_mistakes(paths, TRUE, TRUE, CONFIDENCE) == []


def make_report(tmp_path: Path, names=("zero", "one", "two")) -> tuple[Report, dict[str, Path]]:
    metrics = compute_metrics(
        TRUE, PREDICTED, CONFIDENCE, [5.0] * 8, n_classes=3, elapsed_seconds=1.0
    )
    paths = ["0/a.png", "0/b.png", "0/<script>x</script>|c.png", "1/d.png", "1/e.png", "2/f.png",
             "2/g.png", "2/h.png"]  # fmt: skip
    mistakes = most_confident_mistakes(paths, TRUE, PREDICTED, CONFIDENCE, limit=5)
    report = build_report(
        metrics,
        class_names=list(names),
        model_name="mnist",
        model_version=3,
        n_images=10,
        failed=[("0/empty.png", "empty file"), ("2/<b>bad</b>.png", "truncated image")],
        mistakes=mistakes,
        class_folders={0: "0", 1: "1", 2: "2"},
        settings={"server": "grpc://localhost:8500", "preprocess": "auto"},
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    images = [np.full((28, 28, 1), 40 * index, np.uint8) for index in range(len(mistakes))]
    return report, write_report(report, tmp_path / "report", mistake_images=images)


def test_report_json_has_the_documented_fields(tmp_path: Path) -> None:
    _, written = make_report(tmp_path)
    assert sorted(written) == sorted(REPORT_FILES)
    report = json.loads(written["report.json"].read_text())
    for key in ("accuracy", "n_images", "n_failed", "per_class", "confusion_matrix",
                "latency_ms", "images_per_second", "model_name", "model_version",
                "class_names", "failed", "created_at"):  # fmt: skip
        assert key in report, key
    assert report["accuracy"] == 5 / 8
    assert (report["n_images"], report["n_scored"], report["n_failed"]) == (10, 8, 2)
    assert set(report["latency_ms"]) >= {"p50", "p95", "p99"}
    assert report["per_class"][2] == {
        "class_id": 2,
        "class_name": "two",
        "folder": "2",
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(2 / 3),
        "support": 3,
    }
    assert report["failed"][0] == {"path": "0/empty.png", "error": "empty file"}
    assert report["created_at"] == "2026-01-02T03:04:05Z"
    top = report["most_confident_mistakes"][0]
    assert (top["path"], top["true_class"], top["predicted_class"]) == ("2/h.png", "two", "zero")
    assert not list((tmp_path / "report").glob(".*partial"))


def test_html_is_self_contained_and_escapes_file_names(tmp_path: Path) -> None:
    _, written = make_report(tmp_path)
    page = written["report.html"].read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;bad" in page
    # No external assets: every src is a data URI, and nothing links out.
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "href=" not in page and "http://" not in page.replace("grpc://", "")
    for source in sources:
        png = base64.b64decode(source.split(",", 1)[1])
        assert Image.open(io.BytesIO(png)).format == "PNG"


def test_markdown_escapes_table_breaking_names(tmp_path: Path) -> None:
    _, written = make_report(tmp_path, names=("zero", "o|ne", "two"))
    markdown = written["report.md"].read_text()
    assert "accuracy | 62.50%" in markdown
    assert "o\\|ne" in markdown and "\\<script\\>x\\</script\\>\\|c.png" in markdown
    for line in markdown.splitlines():
        if line.startswith("| 1 |"):  # the per-class row of "o|ne" keeps its six columns
            assert len(re.findall(r"(?<!\\)\|", line)) == 7


def test_pngs_are_real_images_of_sensible_size(tmp_path: Path) -> None:
    _, written = make_report(tmp_path)
    for name in ("confusion_matrix.png", "misclassified.png"):
        with Image.open(written[name]) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 200


def test_no_mistakes_still_writes_every_file(tmp_path: Path) -> None:
    metrics = compute_metrics([0, 1], [0, 1], [0.9, 0.8], [1.0, 1.0], n_classes=2)
    report = build_report(
        metrics, class_names=["a", "b"], model_name="m", model_version=1, n_images=2
    )
    written = write_report(report, tmp_path)
    assert "None: every scored image was classified correctly." in written["report.md"].read_text()
    assert Image.open(written["misclassified.png"]).format == "PNG"


def test_write_report_checks_the_images_match_the_mistakes(tmp_path: Path) -> None:
    report, _ = make_report(tmp_path)
    with pytest.raises(ValueError, match="images for"):
        write_report(report, tmp_path / "again", mistake_images=[np.zeros((28, 28), np.uint8)])
    with pytest.raises(ValueError, match="class names"):
        build_report(
            compute_metrics([0], [0], [1.0], [1.0], n_classes=2),
            class_names=["only one"],
            model_name="m",
            model_version=1,
            n_images=1,
        )


def test_dollar_signs_in_names_and_paths_are_text_not_mathtext(tmp_path: Path) -> None:
    # matplotlib reads "$...$" as a formula and fails on a malformed one: a file or class name
    # like these must not cost the whole report.
    metrics = compute_metrics([0, 1], [1, 0], [0.9, 0.8], [1.0, 1.0], n_classes=2)
    paths = ["$\\frac$/a$\\sqrt$.png", "b/price_$5_$10.png"]
    report = build_report(
        metrics,
        class_names=["$\\frac$", "b"],
        model_name="m",
        model_version=1,
        n_images=2,
        mistakes=most_confident_mistakes(paths, [0, 1], [1, 0], [0.9, 0.8]),
    )
    images = [np.zeros((28, 28, 1), np.uint8)] * 2
    written = write_report(report, tmp_path, mistake_images=images)
    for name in ("confusion_matrix.png", "misclassified.png"):
        assert Image.open(written[name]).format == "PNG"


def test_mistakes_grid_names_files_with_their_class_folder(tmp_path: Path, monkeypatch) -> None:
    from client.evaluation import files, pictures

    seen = {}
    original = files.image_grid_png

    def capture(images, captions, **kwargs):
        seen["captions"] = list(captions)
        return original(images, captions, **kwargs)

    monkeypatch.setattr(files, "image_grid_png", capture)
    make_report(tmp_path)
    first_lines = [caption.splitlines()[0] for caption in seen["captions"]]
    assert "2/h.png" in first_lines  # not "h.png": the class folder tells 2/h from 0/h
    assert all("/" in line for line in first_lines)
    long = pictures.shorten_left("scans/batch-2026-01/7/a-very-long-name.png", 24)
    assert long.endswith("7/a-very-long-name.png") and len(long) == 24


def test_every_section_is_rendered_by_both_writers_from_the_one_model(tmp_path: Path) -> None:
    from client.evaluation.sections import Paragraph, Picture, Table, report_document
    from client.evaluation.writers import md, to_html, to_markdown

    report, _ = make_report(tmp_path)
    document = report_document(report, b"matrix-png", b"grid-png", "what the model saw")
    titles = [section.title for section in document.sections]
    assert titles == [None, "Per class", "Confusion matrix", "Most confident mistakes",
                      "Failed files"]  # fmt: skip
    markdown, page = to_markdown(document), to_html(document)
    assert markdown.startswith(f"# {md(document.title)}\n")
    assert f"<h1>{document.title}</h1>" in page
    for section in document.sections:
        if section.title:
            assert f"\n## {section.title}\n" in markdown and f"<h2>{section.title}</h2>" in page
        for block in section.blocks:
            if isinstance(block, Paragraph):
                assert md(block.text) in markdown
                assert f"<p>{html.escape(block.text)}</p>" in page
            elif isinstance(block, Picture):
                assert f"![{block.alt}]({block.file_name})" in markdown
                assert base64.b64encode(block.png).decode() in page
            else:
                assert isinstance(block, Table)
                for row in (block.columns, *block.rows):
                    for cell in row:
                        assert md(cell) in markdown and html.escape(cell) in page, cell
    # The summary's created-at and the mistakes' caption are in both, not in one only.
    for text in ("Created 2026-01-02T03:04:05Z.", "Images shown: what the model saw."):
        assert text in markdown and text in page


def test_the_writers_render_alignment_row_headers_and_the_diagonal() -> None:
    from client.evaluation.sections import Document, Section, Table
    from client.evaluation.writers import to_html, to_markdown

    table = Table(("true \\ predicted", "a", "b"), (("a", "3", "1"), ("b", "0", "2")),
                  (False, True, True), row_headers=True, diagonal=True)  # fmt: skip
    document = Document("T", (Section("Matrix", (table,)),))
    markdown = to_markdown(document)
    assert "| --- | ---: | ---: |" in markdown and "| **a** | 3 | 1 |" in markdown
    page = to_html(document)
    assert '<tr><th>a</th><td class="number diagonal">3</td><td class="number">1</td></tr>' in page
    assert '<tr><th>b</th><td class="number">0</td><td class="number diagonal">2</td></tr>' in page


def test_report_json_is_the_typed_report(tmp_path: Path) -> None:
    report, written = make_report(tmp_path)
    assert json.loads(written["report.json"].read_text()) == json.loads(
        json.dumps(report.to_json())
    )
    assert report.per_class[2].class_name == "two" and report.failed[0].error == "empty file"
