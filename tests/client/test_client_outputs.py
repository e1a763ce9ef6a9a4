"""The predictions file: CSV and JSON Lines rows, crash safety, resume."""

from __future__ import annotations

import csv

import numpy as np
import orjson
import pytest

from client import outputs
from client.outputs import COLUMNS, PredictionWriter, output_format, read_rows
from client.scoring import ScoredImage


def _scored(path: str, class_id: int = 7, error: str | None = None) -> ScoredImage:
    if error:
        return ScoredImage(path, None, None, None, [], None, error, None, None)
    probabilities = np.full(10, 0.01, dtype=np.float32)
    probabilities[class_id] = 0.91
    top = [(class_id, str(class_id), 0.91), ((class_id + 1) % 10, "x", 0.01)]
    return ScoredImage(path, class_id, f"name {class_id}", 0.91, top, 2, None, probabilities, 3.0)


@pytest.mark.parametrize("name", ["p.csv", "p.jsonl", "p.CSV", "p.ndjson"])
def test_output_format_from_extension(name):
    assert output_format(name) in ("csv", "jsonl")


def test_unknown_extension_is_refused():
    with pytest.raises(ValueError, match=r"\*\.csv or \*\.jsonl"):
        output_format("predictions.txt")


def test_csv_rows_have_the_documented_columns(tmp_path):
    out = tmp_path / "p.csv"
    with PredictionWriter(out) as writer:
        writer.write(_scored("a, with comma/x.png", 3))
        writer.write(_scored("b.png", error="truncated image"))
    with open(out, newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == COLUMNS
    assert rows[1] == ["a, with comma/x.png", "3", "name 3", "0.91", "3:0.91;4:0.01", "2", "", ""]
    assert rows[2] == ["b.png", "", "", "", "", "", "truncated image", ""]
    assert read_rows(out)[0]["top_k"] == [
        {"class_id": 3, "confidence": 0.91},
        {"class_id": 4, "confidence": 0.01},
    ]


def test_jsonl_rows_are_json_objects(tmp_path):
    out = tmp_path / "p.jsonl"
    with PredictionWriter(out) as writer:
        writer.write(_scored("a.png", 1))
        writer.write(_scored("b.png", error="empty file"))
    lines = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert lines[0] == {
        "path": "a.png",
        "class_id": 1,
        "class": "name 1",
        "confidence": 0.91,
        "top_k": [{"class_id": 1, "confidence": 0.91}, {"class_id": 2, "confidence": 0.01}],
        "model_version": 2,
        "error": None,
        "warning": None,
    }
    assert lines[1]["error"] == "empty file" and lines[1]["class_id"] is None
    assert read_rows(out) == lines


def test_rows_reach_the_file_as_they_are_written(tmp_path, monkeypatch):
    out = tmp_path / "p.csv"
    writer = PredictionWriter(out)
    monkeypatch.setattr(outputs, "FLUSH_SECONDS", 0.0)
    writer.write(_scored("a.png"))
    assert [row["path"] for row in read_rows(out)] == ["a.png"]  # before close: flushed
    monkeypatch.setattr(outputs, "FLUSH_SECONDS", 3600.0)
    writer.write(_scored("b.png"))
    writer.close()
    assert [row["path"] for row in read_rows(out)] == ["a.png", "b.png"]


def test_an_existing_file_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "p.csv"
    out.write_text("anything\n")
    with pytest.raises(FileExistsError, match="--resume"):
        PredictionWriter(out)
    with PredictionWriter(out, overwrite=True):
        pass
    assert out.read_text() == ",".join(COLUMNS) + "\n"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_keeps_scored_rows_and_drops_failed_and_torn_ones(tmp_path, suffix):
    out = tmp_path / f"p{suffix}"
    with PredictionWriter(out) as writer:
        for name in ("c.png", "a.png", "b.png"):
            writer.write(_scored(name))
        writer.write(_scored("d.png", error="server said no"))
    # A crash in the middle of a write leaves an unterminated last line.
    with open(out, "a") as handle:
        handle.write('e.png,1,"nam' if suffix == ".csv" else '{"path": "e.png", "cla')
    writer = PredictionWriter(out, resume=True)
    assert writer.done == {"a.png", "b.png", "c.png"}
    assert (writer.kept, writer.dropped_failures) == (3, 1)
    writer.write(_scored("e.png"))
    writer.write(_scored("d.png", 4))
    writer.close(sort=True)
    rows = read_rows(out)
    assert [row["path"] for row in rows] == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    assert all(row["error"] is None for row in rows)


def test_resume_refuses_a_file_that_is_not_a_predictions_file(tmp_path):
    out = tmp_path / "p.csv"
    out.write_text("name,score\nx,1\n")
    with pytest.raises(ValueError, match="header"):
        PredictionWriter(out, resume=True)
    assert out.read_text() == "name,score\nx,1\n"  # untouched


def test_resume_without_a_file_starts_one(tmp_path):
    with PredictionWriter(tmp_path / "p.jsonl", resume=True) as writer:
        assert writer.done == set()
    assert (tmp_path / "p.jsonl").exists()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_predictions_files_get_the_mode_the_umask_gives_like_the_reports(tmp_path, umask, mode):
    import os
    import stat

    previous = os.umask(umask)
    try:
        out = tmp_path / "p.csv"
        with PredictionWriter(out) as writer:
            writer.write(_scored("a.png", 1))
        assert stat.S_IMODE(out.stat().st_mode) == mode
        # Rewritten on resume and sorted on close: still the same mode.
        with PredictionWriter(out, resume=True) as writer:
            writer.write(_scored("0.png", 2))
            writer.close(sort=True)
        assert stat.S_IMODE(out.stat().st_mode) == mode
    finally:
        os.umask(previous)


def test_numbers_are_the_shortest_float32_decimals_in_pythons_notation() -> None:
    # The one-call path (orjson) against the plain definition, where the notations part ways:
    # exponents below 1e-4 and from 1e16, negative zero, the float32 extremes, and the values
    # JSON cannot write.
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            rng.random(2000, dtype=np.float32),
            rng.random(2000, dtype=np.float32) ** 30,
            rng.integers(0, 2**32, 2000, dtype=np.uint64).astype(np.uint32).view(np.float32),
            np.array([0.0, -0.0, 1.0, 1e-4, 9.99e-5, 1e16, 9.9e15, 1e-45, 3.4e38], np.float32),
        ]
    )
    finite = values[np.isfinite(values)].tolist()
    expected = [repr(float(text)) for text in np.asarray(finite, np.float32).astype(str).tolist()]
    assert outputs._number_texts(finite) == expected
    assert outputs._numbers(finite) == [float(text) for text in expected]
    assert outputs._number_texts([0.5, float("nan"), float("inf")]) == ["0.5", "nan", "inf"]


def test_own_outputs_finds_every_file_score_and_evaluate_wrote_and_nothing_else(tmp_path):
    # The pre-filter (one endswith per path) must keep everything the full test would keep:
    # predictions files under any case of their suffix, report files only in report folders.
    def write(relative: str, text: str = "") -> str:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    header = ",".join(COLUMNS) + "\n"
    ours = {
        write("preds.csv", header),
        write("deep/er/PREDS.CSV", header),
        write("rows.jsonl", '{"path":"a.png","class_id":1}\n'),
        write("rows.NDJSON", '{"path":"a.png","class_id":1}\n'),
        *(
            write(f"report/{name}")
            for name in ("report.json", "report.html", "report.md", "confusion_matrix.png")
        ),
    }
    theirs = {
        write("digits/3.png"),
        write("digits/report.json.png"),
        write("notes.csv", "a,b\n1,2\n"),
        write("other.jsonl", '{"x": 1}\n'),
        write("not-a-report/report.json"),  # no report.html beside it
        write("not-a-report/confusion_matrix.png"),
        write("preds.csv.bak", header),
    }
    assert outputs.own_outputs(sorted(ours | theirs)) == ours
