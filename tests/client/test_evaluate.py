"""`evaluate` without a server: a fake transport whose "model" reads the image's brightness.

These cover the command's own logic (class folders, failures, exit codes, report content); the
end-to-end tests in test_evaluate_e2e.py run it against the real local server and a real model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from client_fixtures import png_header_only
from PIL import Image
from typer.testing import CliRunner

import client.commands.common as common_module
from client.commands.evaluate import EXIT_BELOW_MIN_ACCURACY, evaluate
from client.errors import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from client.evaluation.folders import map_class_folders
from client.transport.base import Transport
from client.types import ModelMetadata, PredictResult, SignatureInfo, TensorInfo
from common.contract import CLASS_IDS, CLASSES, IMAGES_INPUT, PROBABILITIES, SERVING_DEFAULT

NAMES = ["dark", "medium", "light"]
LEVELS = {0: 20, 1: 120, 2: 220}  # the gray level the fake model maps to each class


class BrightnessModel(Transport):
    """Class = mean gray level // 80 (0, 1 or 2); 8x8 grayscale input, TF Serving's shapes."""

    server = "fake://brightness"

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.metadata_calls = 0

    def metadata(self, model) -> ModelMetadata:
        self.metadata_calls += 1
        signature = SignatureInfo(
            SERVING_DEFAULT,
            inputs={IMAGES_INPUT: TensorInfo(IMAGES_INPUT, "uint8", (-1, 8, 8, 1))},
            outputs={
                PROBABILITIES: TensorInfo(PROBABILITIES, "float32", (-1, 3)),
                CLASS_IDS: TensorInfo(CLASS_IDS, "int64", (-1,)),
                CLASSES: TensorInfo(CLASSES, "object", (-1,)),
            },
        )
        return ModelMetadata("brightness", 7, {SERVING_DEFAULT: signature})

    def predict(self, model, inputs, *, timeout=None, retry=None) -> PredictResult:
        images = inputs[IMAGES_INPUT]
        self.batches.append(len(images))
        class_ids = np.minimum(images.reshape(len(images), -1).mean(axis=1) // 80, 2).astype(int)
        probabilities = np.full((len(images), 3), 0.05, np.float32)
        probabilities[np.arange(len(images)), class_ids] = 0.9
        classes = np.array([NAMES[k].encode() for k in class_ids], dtype=object)
        outputs = {PROBABILITIES: probabilities, CLASS_IDS: class_ids, CLASSES: classes}
        return PredictResult(outputs, "brightness", 7, latency_ms=2.0)

    def close(self) -> None:
        pass


def gray_png(path: Path, level: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), level).save(path)


def make_folder(root: Path, folder_names: list[str], per_class: int = 4) -> Path:
    for class_id, name in enumerate(folder_names):
        for index in range(per_class):
            gray_png(root / name / f"img{index}.png", LEVELS[class_id])
    return root


@pytest.fixture
def fake_model(monkeypatch) -> BrightnessModel:
    model = BrightnessModel()
    monkeypatch.setattr(common_module, "open_transport", lambda *args, **kwargs: model)
    return model


def run(*arguments: str):
    app = typer.Typer()
    app.command()(evaluate)
    return CliRunner().invoke(app, [*arguments, "--preprocess", "none", "--batch-size", "5"])


def read_report(report_dir: Path) -> dict:
    return json.loads((report_dir / "report.json").read_text())


def test_folders_named_after_the_classes(tmp_path: Path, fake_model) -> None:
    folder = make_folder(tmp_path / "data", NAMES)
    gray_png(folder / "dark" / "nested" / "too-light.png", LEVELS[2])  # a mistake, recursive
    result = run(str(folder), "--report-dir", str(tmp_path / "out"))
    assert result.exit_code == EXIT_OK, result.output
    report = read_report(tmp_path / "out")
    assert report["accuracy"] == 12 / 13
    assert report["n_images"] == 13 and report["n_failed"] == 0
    assert report["confusion_matrix"] == [[4, 0, 1], [0, 4, 0], [0, 0, 4]]
    assert report["class_names"] == NAMES
    assert (report["model_name"], report["model_version"]) == ("brightness", 7)
    assert report["most_confident_mistakes"][0]["path"] == "dark/nested/too-light.png"
    assert report["latency_ms"]["p50"] == 2.0 and report["images_per_second"] > 0
    assert sorted(fake_model.batches) == [3, 5, 5]
    assert fake_model.metadata_calls == 1  # evaluate hands its metadata to the scoring
    assert "accuracy 92.31% on 13 images (0 failed)" in result.output
    for name in ("report.md", "report.html", "confusion_matrix.png", "misclassified.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_folders_named_by_class_id_and_the_accuracy_gate(tmp_path: Path, fake_model) -> None:
    folder = make_folder(tmp_path / "data", ["0", "1", "2"])
    gray_png(folder / "1" / "wrong.png", LEVELS[0])
    (folder / "2").rename(tmp_path / "elsewhere")
    (folder / "2").symlink_to(tmp_path / "elsewhere")  # a symlinked class folder is followed
    result = run(str(folder), "--report-dir", str(tmp_path / "out"), "--min-accuracy", "0.95")
    assert result.exit_code == EXIT_BELOW_MIN_ACCURACY, result.output
    assert "below --min-accuracy 0.95" in result.output
    report = read_report(tmp_path / "out")
    assert report["accuracy"] == 12 / 13
    assert [row["folder"] for row in report["per_class"]] == ["0", "1", "2"]
    assert run(str(folder), "--report-dir", str(tmp_path / "again")).exit_code == EXIT_OK


def test_unreadable_files_are_reported_and_the_exit_code_says_partial(
    tmp_path: Path, fake_model
) -> None:
    folder = make_folder(tmp_path / "data", NAMES)
    (folder / "medium" / "empty.png").write_bytes(b"")
    (folder / "light" / "notes.png").write_text("not an image")
    (folder / "dark" / "huge.png").write_bytes(png_header_only(20000, 20000))
    noise = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "dark" / "half.png")
    whole = (folder / "dark" / "half.png").read_bytes()
    (folder / "dark" / "half.png").write_bytes(whole[: len(whole) // 2])
    result = run(str(folder), "--report-dir", str(tmp_path / "out"))
    assert result.exit_code == EXIT_PARTIAL, result.output
    report = read_report(tmp_path / "out")
    assert report["accuracy"] == 1.0 and report["n_scored"] == 12
    assert report["n_images"] == 16 and report["n_failed"] == 4
    reasons = {item["path"]: item["error"] for item in report["failed"]}
    assert reasons["light/notes.png"] == "not an image (cannot identify image file)"
    assert reasons["medium/empty.png"] == "empty file"
    assert reasons["dark/half.png"] == "truncated image"
    assert reasons["dark/huge.png"].startswith("image too large: ")
    assert "empty file" in (tmp_path / "out" / "report.html").read_text()


def test_files_outside_class_folders_are_listed_not_scored(tmp_path: Path, fake_model) -> None:
    folder = make_folder(tmp_path / "data", NAMES)
    (folder / "README.txt").write_text("labels are folder names")
    result = run(str(folder), "--report-dir", str(tmp_path / "out"))
    assert result.exit_code == EXIT_OK, result.output
    assert "1 file(s) directly in" in result.output
    assert read_report(tmp_path / "out")["ignored"] == ["README.txt"]


def test_a_report_folder_inside_the_data_is_not_a_class(tmp_path: Path, fake_model) -> None:
    folder = make_folder(tmp_path / "data", NAMES)
    for attempt in range(2):  # the second run finds the first run's report in FOLDER
        result = run(str(folder), "--report-dir", str(folder / "report"))
        assert result.exit_code == EXIT_OK, (attempt, result.output)
    report = read_report(folder / "report")
    assert report["n_images"] == 12 and report["ignored"] == []


def test_a_folder_matching_no_class_is_a_clear_usage_error(tmp_path: Path, fake_model) -> None:
    folder = make_folder(tmp_path / "data", ["dark", "medium", "shiny"])
    result = run(str(folder), "--report-dir", str(tmp_path / "out"))
    assert result.exit_code == EXIT_USAGE
    assert "class folder(s) 'shiny' match no class name" in result.output
    assert not (tmp_path / "out").exists()


def test_an_unwritable_report_folder_is_one_clear_line(tmp_path: Path, fake_model) -> None:
    folder = make_folder(tmp_path / "data", NAMES)
    (tmp_path / "taken").write_text("a file where the report folder should go")
    result = run(str(folder), "--report-dir", str(tmp_path / "taken" / "report"))
    assert result.exit_code == EXIT_ERROR
    assert "error: cannot write the report in" in result.output


def test_a_folder_without_class_folders_is_refused(tmp_path: Path, fake_model) -> None:
    gray_png(tmp_path / "flat" / "a.png", 10)
    result = run(str(tmp_path / "flat"), "--report-dir", str(tmp_path / "out"))
    assert result.exit_code == EXIT_USAGE
    assert "has no class sub-folders" in result.output


def test_map_class_folders() -> None:
    names = {0: "T-shirt/top", 1: "Trouser", 2: "Pullover"}
    assert map_class_folders(["T-shirt_top", "trouser", "2"], names, 3) == {
        "T-shirt_top": 0,
        "trouser": 1,
        "2": 2,
    }
    # A class the model never predicted has no known name: its id still works.
    assert map_class_folders(["0", "1"], {0: "zero"}, 2) == {"0": 0, "1": 1}
    # Numeric class names that differ from the ids win over reading the folder as an id.
    assert map_class_folders(["3", "5"], {0: "3", 1: "5"}, 2) == {"3": 0, "5": 1}
    with pytest.raises(ValueError, match="'1'"):
        map_class_folders(["1"], {0: "3", 1: "5"}, 2)
    with pytest.raises(ValueError, match=r"not class ids 0\.\.2"):
        map_class_folders(["7"], {}, 3)
    with pytest.raises(ValueError, match="map to the same class: 'Trouser' and 'trouser'"):
        map_class_folders(["Trouser", "trouser"], names, 3)
