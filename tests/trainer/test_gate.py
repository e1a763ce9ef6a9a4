"""The publishing gate: a new model is measured against the repository's reference version.

Runs train the tutorial MLP for one epoch on the `idx_dir` fixture (30 training, 12 test images
of 8x8, 3 classes whose brightness encodes the label). Reference versions are built by hand
with the trainer's own exporter, once per module (`references`), and copied into each test's
repository: `perfect` classifies by mean brightness (accuracy 1.0 on that data), `wrong` maps
every class to the next one (accuracy 0.0).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from trainer_helpers import run_python, synthetic_arrays, write_idx, write_image_folder

from common import contract
from trainer import export
from trainer.training import RunError, TrainConfig, run

tf = pytest.importorskip("tensorflow")

MODEL_NAME = "digits"
CLASS_NAMES = ("0", "1", "2")
# Mean pixel of each class in `synthetic_arrays`: 40 + 80 * label + U[0, 20).
CENTERS = np.array([50.0, 130.0, 210.0]) / 255


def reference_model(folder: Path, kind: str, shape=(8, 8, 1), class_names=CLASS_NAMES) -> Path:
    """Export a hand-weighted classifier of mean brightness as a published version."""
    import keras

    centers = CENTERS if kind == "perfect" else np.roll(CENTERS, 1)  # "wrong": class k+1's
    model = keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Rescaling(1 / 255),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(class_names), activation="softmax"),
        ]
    )
    # Nearest centre: argmax_k -(x - c_k)^2 = argmax_k 2 c_k x - c_k^2.
    scale = 100.0
    kernel = np.zeros((shape[-1], len(class_names)), np.float32)
    kernel[:] = 2 * scale * centers[: len(class_names)] / shape[-1]
    bias = (-scale * centers[: len(class_names)] ** 2).astype(np.float32)
    model.layers[-1].set_weights([kernel, bias])
    info = {"class_names": list(class_names), "input_shape": list(shape), "model": kind}
    warmup = np.zeros((2, *shape), np.uint8)
    folder.mkdir(parents=True)
    export.write_saved_model(model, folder, class_names, MODEL_NAME, info, warmup)
    return folder


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory):
    """place(folder, kind, shape, class_names): a copy of that hand-made reference in `folder`.
    Each kind is exported once per module (an export takes seconds), then copied."""
    root = tmp_path_factory.mktemp("references")
    built: dict[tuple, Path] = {}

    def place(folder: Path, kind: str, shape=(8, 8, 1), class_names=CLASS_NAMES) -> Path:
        key = (kind, tuple(shape), tuple(class_names))
        if key not in built:
            built[key] = reference_model(root / str(len(built)), kind, shape, class_names)
        shutil.copytree(built[key], folder)
        return folder

    return place


def config(idx_dir: Path, tmp_path: Path, run_name: str = "run", **overrides) -> TrainConfig:
    options = dict(
        dataset=f"idx:{idx_dir}", model="mlp", epochs=1, batch_size=8, seed=1,
        run_dir=tmp_path / run_name, model_repo=tmp_path / "models", model_name=MODEL_NAME,
        progress="lines",
    )  # fmt: skip
    options.update(overrides)
    return TrainConfig(**options)


def listing(tmp_path: Path) -> list[str]:
    return sorted(path.name for path in (tmp_path / "models" / MODEL_NAME).iterdir())


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def write_config(repo: Path, stable: int, name: str = MODEL_NAME) -> None:
    (repo / "models.config").write_text(
        "model_config_list {\n"
        f'  config {{ name: "other" base_path: "/models/other" model_platform: "tensorflow"\n'
        '    version_labels { key: "stable" value: 7 } }\n'
        f'  config {{ name: "{name}" base_path: "/models/{name}" model_platform: "tensorflow"\n'
        f'    version_labels {{ key: "stable" value: {stable} }}\n'
        '    version_labels { key: "canary" value: 2 } }\n'
        "}\n"
    )


def test_the_hand_made_references_score_as_intended(
    references, idx_dir: Path, tmp_path: Path
) -> None:
    from trainer import data, gate

    dataset = data.load_dataset(f"idx:{idx_dir}")
    for kind, expected in (("perfect", 1.0), ("wrong", 0.0)):
        references(tmp_path / MODEL_NAME / kind / "1", kind)
        found = gate.find_reference(tmp_path / MODEL_NAME, kind)
        assert found is not None and found.version == 1 and found.class_names == CLASS_NAMES
        accuracy = gate.evaluate(
            found, MODEL_NAME, dataset.test_images, dataset.test_labels, dataset.num_classes
        )
        assert accuracy == expected, kind


@pytest.mark.slow
def test_a_worse_model_is_refused_with_exit_3_and_nothing_published(
    references, idx_dir: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    references(repo / MODEL_NAME / "1", "perfect")
    result = run_python(
        "-m", "trainer", "train", "--dataset", f"idx:{idx_dir}", "--model", "mlp",
        "--epochs", "1", "--batch-size", "8", "--seed", "1", "--learning-rate", "1e-7",
        "--model-repo", str(repo), "--model-name", MODEL_NAME, "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: test accuracy 0.")
    assert (
        "below the 1.0000 of version 1 of digits (newest version) on the same 12 test" in lines[0]
    )
    assert "--max-regression 0.005; nothing published (--allow-regression" in lines[0]
    assert listing(tmp_path) == ["1"]  # no new version, no staging folder left
    recorded = metrics(tmp_path / "run")
    assert recorded["published"] is False and recorded["version"] is None
    assert recorded["publish_refused"] == lines[0].removeprefix("error: ")
    comparison = recorded["comparison"]
    assert comparison["reference_version"] == 1 and comparison["reference_accuracy"] == 1.0
    assert comparison["passed"] is False and comparison["max_regression"] == 0.005
    assert comparison["accuracy"] == pytest.approx(recorded["test_accuracy"])


def test_allow_regression_publishes_the_worse_model(
    references, idx_dir: Path, tmp_path: Path
) -> None:
    # Without --allow-regression this model is refused: the test above, through the CLI.
    references(tmp_path / "models" / MODEL_NAME / "1", "perfect")
    result = run(config(idx_dir, tmp_path, learning_rate=1e-7, allow_regression=True))
    assert result.version == 2 and listing(tmp_path) == ["1", "2"]
    comparison = metrics(tmp_path / "run")["comparison"]
    assert comparison["passed"] is False and comparison["allow_regression"] is True
    assert comparison["reference_accuracy"] == 1.0 and comparison["delta"] < -0.005
    info = json.loads((result.version_path / contract.ASSETS_EXTRA / "model_info.json").read_text())
    assert info["comparison"] == comparison


def test_a_better_model_publishes_and_says_both_figures(
    references, idx_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    references(tmp_path / "models" / MODEL_NAME / "1", "wrong")
    result = run(config(idx_dir, tmp_path))
    assert result.version == 2
    out = capsys.readouterr().out
    recorded = metrics(tmp_path / "run")
    accuracy = recorded["test_accuracy"]
    assert (
        f"gate: test accuracy {accuracy:.4f} vs 0.0000 of version 1 of digits (newest version) "
        f"on the same 12 test images (+{accuracy:.4f}): publishing"
    ) in out
    assert recorded["comparison"]["passed"] is True and recorded["published"] is True


def test_an_equal_model_publishes_and_a_first_publish_has_nothing_to_compare(
    idx_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first = run(config(idx_dir, tmp_path, "first"))
    assert first.version == 1
    assert "gate: digits has no published version to compare with" in capsys.readouterr().out
    assert metrics(tmp_path / "first")["comparison"] == {"reference_version": None}
    # The same command again: the same model (--seed), measured equal, published as 2.
    second = run(config(idx_dir, tmp_path, "second"))
    assert second.version == 2
    comparison = metrics(tmp_path / "second")["comparison"]
    assert comparison["reference_version"] == 1 and comparison["delta"] == 0
    first_accuracy = metrics(tmp_path / "first")["test_accuracy"]
    assert comparison["reference_accuracy"] == pytest.approx(first_accuracy)


@pytest.mark.parametrize(
    ("shape", "names", "says"),
    [
        ((10, 10, 1), CLASS_NAMES, "takes 10x10x1 images, this model 8x8x1"),
        ((8, 8, 1), ("cat", "dog", "owl"), "has 3 classes (cat, dog, owl), this model 3 classes"),
    ],
)
def test_another_shape_or_other_classes_are_refused_before_training(
    references, idx_dir: Path, tmp_path: Path, shape, names, says
) -> None:
    references(tmp_path / "models" / MODEL_NAME / "1", "perfect", shape, names)
    with pytest.raises(RunError) as refused:
        run(config(idx_dir, tmp_path, allow_regression=True))
    message = str(refused.value)
    assert refused.value.exit_code == 3 and "\n" not in message
    assert says in message and "version 1 of digits (newest version)" in message
    assert "belongs under another --model-name" in message
    assert not (tmp_path / "run").exists()  # refused before training
    assert listing(tmp_path) == ["1"]


def test_a_reference_without_model_info_is_checked_by_its_signature(
    references, idx_dir: Path, tmp_path: Path
) -> None:
    folder = references(tmp_path / "models" / MODEL_NAME / "1", "perfect", (10, 10, 1))
    (folder / contract.ASSETS_EXTRA / contract.MODEL_INFO_FILE).unlink()
    with pytest.raises(RunError, match=r"takes 10x10x1 images, this model 8x8x1") as refused:
        run(config(idx_dir, tmp_path))
    assert refused.value.exit_code == 3 and listing(tmp_path) == ["1"]
    assert "takes 10x10x1" in metrics(tmp_path / "run")["publish_refused"]


def test_the_stable_label_in_models_config_picks_the_reference(
    references, idx_dir: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    references(repo / MODEL_NAME / "00000001", "wrong")  # zero-padded: version 1
    references(repo / MODEL_NAME / "2", "perfect")
    write_config(repo, stable=1)
    result = run(config(idx_dir, tmp_path, learning_rate=1e-7))
    assert result.version == 3  # better than stable (v1), though worse than the newest (v2)
    comparison = metrics(tmp_path / "run")["comparison"]
    assert comparison["reference_version"] == 1 and comparison["reference_accuracy"] == 0.0
    assert comparison["reference_chosen_by"] == "stable label in models.config"
    # Labelled stable, the perfect version 2 refuses the same model.
    shutil.rmtree(result.version_path)
    write_config(repo, stable=2)
    with pytest.raises(RunError, match=r"of version 2 of digits \(stable label in models\.config"):
        run(config(idx_dir, tmp_path, "again", learning_rate=1e-7))
    assert listing(tmp_path) == ["00000001", "2"]


def test_a_stable_label_on_a_missing_version_is_one_line(
    references, idx_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    repo = tmp_path / "models"
    references(repo / MODEL_NAME / "1", "wrong")
    write_config(repo, stable=5)
    with pytest.raises(RunError, match=r"labels version 5 of digits 'stable', but .* has no "):
        run(config(idx_dir, tmp_path))
    assert not (tmp_path / "run").exists()
    # --allow-regression publishes without a comparison, and says why.
    result = run(config(idx_dir, tmp_path, allow_regression=True))
    assert result.version == 2
    comparison = metrics(tmp_path / "run")["comparison"]
    assert comparison["reference_version"] is None and "has no version 5" in comparison["error"]
    assert "--allow-regression: publishing without a comparison" in capsys.readouterr().out


@pytest.mark.slow
def test_one_class_is_refused_before_training_with_one_line(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "one", {"only": 10})
    result = run_python(
        "-m", "trainer", "train", "--dataset", f"folder:{root}", "--model-repo",
        str(tmp_path / "models"), "--model-name", "one", "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert lines[0].endswith(": 1 class ('only'); a classifier needs at least two")
    assert "model:" not in result.stdout  # no model was built
    assert not (tmp_path / "run").exists() and not (tmp_path / "models").exists()


def test_a_class_without_test_examples_is_refused_before_training(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    folder.mkdir()
    images, labels = synthetic_arrays(30, seed=1)
    write_idx(folder / "train-images-idx3-ubyte", images)
    write_idx(folder / "train-labels-idx1-ubyte", labels)
    images, labels = synthetic_arrays(12, classes=2, seed=2)  # class 2 never appears
    write_idx(folder / "t10k-images-idx3-ubyte", images)
    write_idx(folder / "t10k-labels-idx1-ubyte", labels)
    (folder / "classes.txt").write_text("zero\none\ntwo\n")
    with pytest.raises(RunError) as refused:
        run(config(folder, tmp_path))
    message = str(refused.value)
    assert refused.value.exit_code == 2 and "\n" not in message
    assert "class 'two' has no test examples (12 test examples in all)" in message
    assert not (tmp_path / "run").exists() and not (tmp_path / "models").exists()
