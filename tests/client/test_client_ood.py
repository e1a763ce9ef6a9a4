"""Garbage in, flagged out: inputs unlike the training data get a warning (issue 11, item 2).

Also: an empty folder is an error, and score leaves its own and evaluate's outputs alone.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from client_fixtures import (
    fake,
    fake_server_instance,
    load_mnist_test,
    make_uniform_folder,
    render_dark_on_light,
    save_png,
)
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

from client.cli import app
from client.outputs import read_rows
from client.preprocess import glyph_check, load_image

__all__ = ["fake", "fake_server_instance"]  # fixtures used by name

runner = CliRunner()
PHOTO = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"


def run(*args: object):
    return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False)


def model_input(source, mode: str = "auto") -> np.ndarray:
    return load_image(source, height=28, width=28, channels=1, mode=mode)


def text_image(text: str) -> bytes:
    """Dark text on white paper, as a PNG."""
    canvas = Image.new("L", (300, 120), 255)
    ImageDraw.Draw(canvas).text((10, 10), text, fill=0, font=ImageFont.load_default(size=80))
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()


def test_mnist_digits_and_scans_of_them_pass_the_glyph_check(mnist_dir):
    images, _ = load_mnist_test(mnist_dir, 1000)
    flagged = [index for index, image in enumerate(images) if glyph_check(image)]
    assert len(flagged) <= 2, flagged  # 3 of the 10,000 test digits are odd enough to flag
    rng = np.random.default_rng(0)
    scans = [model_input(render_dark_on_light(image, rng)) for image in images[:200]]
    assert [note for note in map(glyph_check, scans) if note] == []


@pytest.mark.parametrize("mode", ["auto", "mnist", "none"])
def test_a_colour_photo_fails_the_glyph_check_however_it_is_preprocessed(mode):
    note = glyph_check(model_input(PHOTO.read_bytes(), mode))
    assert note, mode


@pytest.mark.parametrize(
    ("pixels", "words"),
    [
        (model_input(text_image("123")), "separate marks"),
        (np.zeros((28, 28), np.uint8), "blank"),
        (np.full((28, 28), 200, np.uint8), "background not dark"),
    ],
    ids=["text", "blank", "grey"],
)
def test_text_blank_and_grey_inputs_say_why(pixels, words):
    assert words in (glyph_check(pixels) or "")


def photo_folder(root: Path) -> Path:
    """Two uniform images (the fake model's input) and a colour photo."""
    make_uniform_folder(root, [12, 47])
    (root / "photo.jpg").write_bytes(PHOTO.read_bytes())
    return root


def test_score_flags_the_photo_in_a_column_and_a_summary_line(fake, tmp_path):
    folder = photo_folder(tmp_path / "images")
    out = tmp_path / "preds.csv"
    result = run("score", folder, "--out", out, "-s", fake.grpc_url, "--input-check", "glyph",
                 "--preprocess", "none")  # fmt: skip
    assert result.exit_code == 0, result.output  # a warning, not a failure
    rows = {row["path"]: row for row in read_rows(out)}
    assert "does not look like a digit" in rows["photo.jpg"]["warning"]
    assert "background not dark" in rows["photo.jpg"]["warning"]
    assert "warning: " in result.stderr and "see the warning column" in result.stderr
    assert "3 of 3" in result.stderr  # uniform grey squares are no glyphs either


def test_min_confidence_is_the_threshold_and_off_turns_the_input_check_off(fake, tmp_path):
    folder = make_uniform_folder(tmp_path / "images", [12, 47]) and tmp_path / "images"
    out = tmp_path / "preds.jsonl"
    quiet = run("score", folder, "--out", out, "-s", fake.rest_url, "--input-check", "off")
    assert quiet.exit_code == 0, quiet.output
    assert [row["warning"] for row in read_rows(out)] == [None, None]  # the fake says 0.91
    assert "warning" not in quiet.stderr
    strict = run("score", folder, "--out", out, "-s", fake.rest_url, "--overwrite",
                 "--input-check", "off", "--min-confidence", "0.95")  # fmt: skip
    assert strict.exit_code == 0, strict.output
    assert all(row["warning"] == "low confidence 0.91 < 0.95" for row in read_rows(out))
    assert "2 of 2 scored files" in strict.stderr


def test_auto_applies_the_glyph_check_to_digit_models_only(fake, tmp_path):
    # The fake model's classes are "digit-0" ... "digit-9", not the digits themselves.
    folder = photo_folder(tmp_path / "images")
    result = run("score", folder, "--out", tmp_path / "p.csv", "-s", fake.grpc_url)
    assert result.exit_code == 0, result.output
    assert all(row["warning"] is None for row in read_rows(tmp_path / "p.csv"))


def test_predict_shows_a_warning_column_and_line(fake, tmp_path):
    folder = photo_folder(tmp_path / "images")
    result = run("predict", folder / "photo.jpg", "-s", fake.grpc_url, "--input-check", "glyph")
    assert result.exit_code == 0, result.output
    assert "warning" in result.stdout
    assert result.stderr.startswith("warning: 1 of 1 images look unlike")
    as_json = run("predict", folder / "photo.jpg", "-s", fake.grpc_url, "--json",
                  "--input-check", "glyph")  # fmt: skip
    assert json.loads(as_json.stdout)[0]["warning"].startswith("input does not look like")


def test_evaluate_reports_the_flagged_images(fake, tmp_path):
    folder = tmp_path / "labelled"
    save_png(folder / "2" / "a.png", np.full((28, 28), 12, np.uint8))  # the fake says 2
    save_png(folder / "7" / "b.png", np.full((28, 28), 47, np.uint8))
    result = run("evaluate", folder, "--report-dir", tmp_path / "report", "-s", fake.grpc_url,
                 "--input-check", "off", "--min-confidence", "0.95")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["warnings"]["count"] == 2
    assert report["warnings"]["accuracy_flagged"] == 1.0
    assert "warnings" in (tmp_path / "report" / "report.md").read_text()
    assert "2 of 2 images look unlike" in result.stderr


def test_score_refuses_an_empty_folder_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden").write_text("x")
    result = run("score", tmp_path / "empty", "--out", tmp_path / "p.csv")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no files to score in")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p.csv").exists()


def test_score_skips_its_own_and_evaluates_outputs_inside_the_folder(fake, tmp_path):
    folder = tmp_path / "digits"
    save_png(folder / "2" / "a.png", np.full((28, 28), 12, np.uint8))
    save_png(folder / "7" / "b.png", np.full((28, 28), 47, np.uint8))
    # The documented `evaluate digits --report-dir digits/report`, then an earlier score run.
    evaluated = run("evaluate", folder, "--report-dir", folder / "report", "-s", fake.grpc_url)
    assert evaluated.exit_code == 0, evaluated.output
    first = run("score", folder, "--out", folder / "old.csv", "-s", fake.grpc_url)
    assert first.exit_code == 0, first.output
    result = run("score", folder, "--out", tmp_path / "new.jsonl", "-s", fake.grpc_url)
    assert result.exit_code == 0, result.output
    assert [row["path"] for row in read_rows(tmp_path / "new.jsonl")] == ["2/a.png", "7/b.png"]
    assert "not scoring 6 file(s)" in result.stderr
    # And evaluate again: the report folder is no class.
    again = run("evaluate", folder, "--report-dir", tmp_path / "elsewhere", "-s", fake.grpc_url)
    assert again.exit_code == 0, again.output
