"""The command line: fast help, one-line errors with the right exit codes, export-images."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trainer import data
from trainer.cli import app

runner = CliRunner()
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_help_does_not_import_tensorflow() -> None:
    from trainer_helpers import run_python

    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from trainer.cli import app\n"
        "for command in (['--help'], ['train', '--help'], ['export-images', '--help']):\n"
        "    assert CliRunner().invoke(app, command).exit_code == 0, command\n"
        "heavy = ('tensorflow', 'keras', 'matplotlib')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    result = run_python("-c", code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_train_help_documents_every_dataset_kind() -> None:
    result = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for text in ("idx:DIR", "npz:FILE", "folder:DIR", "fashion_mnist", "--min-accuracy", "--keep"):
        assert text in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "vgg"], "--model 'vgg': choose one of mlp, cnn, resnet, transfer"),
        (["--optimizer", "adagrad"], "--optimizer 'adagrad'"),
        (["--augment", "flip"], "turns digits into other shapes"),
        (["--augment", "full"], "--augment full mirrors images"),
        (["--augment", "rotate"], "--augment 'rotate': choose one of none, flip, light, full"),
        (["--model-repo", "models"], "--model-repo and --model-name go together"),
        (["--keep", "2"], "--keep needs --model-repo"),
        (["--validation-split", "0"], "--validation-split must lie strictly in (0, 1)"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--image-size", "big"], "image size must be N or HEIGHTxWIDTH"),
        (["--model-repo", "m", "--model-name", "a/b"], "use a plain folder name"),
        (["--dataset", "cifar"], "unknown data set 'cifar'"),
        (["--preset", "turbo"], "--preset 'turbo': choose one of fast, accurate"),
        (["--preset", "fast", "--model", "resnet"], "--preset fast is defined for --model mlp"),
        (["--preset", "accurate"], "--preset accurate is defined for --model cnn"),
        (["--schedule", "onecycle"], "--schedule 'onecycle': choose one of constant, cosine"),
        (["--steps-per-execution", "0"], "--steps-per-execution must be at least 1"),
    ],
)
def test_train_rejects_bad_options_in_one_line(
    arguments: list[str], message: str, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "run"), *arguments])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]


def test_train_on_a_missing_data_dir_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    result = runner.invoke(
        app, ["train", "--data-dir", str(tmp_path), "--run-dir", str(tmp_path / "run")]
    )
    assert result.exit_code == 2
    assert f"mnist: not found in {tmp_path}" in result.output
    assert "train-images-idx3-ubyte.gz" in result.output


def test_export_images_writes_the_mnist_test_split(mnist_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "png"
    started = time.monotonic()
    result = runner.invoke(
        app, ["export-images", "--dataset", "mnist", "--data-dir", str(mnist_dir),
              "--split", "test", "--out", str(out)],
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert "wrote 10000 PNGs" in result.output
    assert elapsed < 60
    counts = [len(list((out / str(digit)).glob("*.png"))) for digit in range(10)]
    assert counts == MNIST_TEST_COUNTS
    # The first test image is a 7: its file is named after its index in the split.
    assert (out / "7" / "00000.png").is_file() and (out / "2" / "00001.png").is_file()
    reloaded = data.load_folder(out, test_split=0.5)
    assert reloaded.input_shape == (28, 28, 1)
    original = data.load_idx(mnist_dir).test_images
    from PIL import Image

    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "7" / "00000.png")), original[0, ..., 0]
    )


def test_export_images_limit_and_fashion_names(fashion_mnist_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fashion"
    result = runner.invoke(
        app, ["export-images", "--dataset", "fashion_mnist", "--split", "train",
              "--limit", "50", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*.png"))
    assert len(written) == 50
    assert {Path(name).parent.name for name in written} <= set(data.FASHION_CLASS_NAMES)
    assert written[0].endswith(".png") and any(name.startswith("T-shirt_top/") for name in written)


def test_export_images_rejects_a_bad_split(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export-images", "--split", "validation", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--split 'validation': choose train or test" in result.output


def test_export_images_into_an_unwritable_place_is_one_line(idx_dir: Path, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    result = runner.invoke(
        app, ["export-images", "--dataset", f"idx:{idx_dir}", "--out", str(not_a_folder)]
    )
    assert result.exit_code == 2
    assert result.output.startswith(f"error: --out {not_a_folder}: cannot write")
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_mixed_precision_without_a_gpu_is_one_clear_line(idx_dir: Path, tmp_path: Path) -> None:
    from trainer_helpers import run_python

    result = run_python(
        "-m", "trainer", "train", "--dataset", f"idx:{idx_dir}", "--mixed-precision",
        "--run-dir", str(tmp_path / "run"), timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "error: --mixed-precision needs a GPU and TensorFlow sees none" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("shape", [(28, 28, 1), (7, 9, 3), (1, 1, 1)])
def test_png_encoder_round_trips_through_pillow(shape: tuple[int, int, int]) -> None:
    import io

    from PIL import Image

    from trainer.images import encode_png

    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    with Image.open(io.BytesIO(encode_png(pixels))) as image:
        assert image.mode == ("L" if shape[2] == 1 else "RGB")
        np.testing.assert_array_equal(np.asarray(image).reshape(shape), pixels)


def test_usage_errors_are_one_line_like_the_trainers_own() -> None:
    for arguments, words in (
        (["train", "--bogus"], "No such option: --bogus"),
        (["train", "--epochs", "x"], "Invalid value for '--epochs'"),
        (["train", "--min-accuracy", "1.5"], "--min-accuracy"),
    ):
        result = runner.invoke(app, arguments)
        assert result.exit_code == 2, arguments
        assert result.stderr.startswith("error: ") and words in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "╭" not in result.stderr


def test_train_help_fits_80_columns_without_cutting_descriptions() -> None:
    result = runner.invoke(app, ["train", "--help"], terminal_width=80)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) <= 120, len(lines)
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout
    # The longest descriptions arrive whole, e.g. --data-dir's last words.
    assert "then Keras' download." in " ".join(result.stdout.split())


def test_a_failed_run_leaves_no_empty_model_folder(tmp_path: Path) -> None:
    repo = tmp_path / "models"

    def train(name: str):
        arguments = f"train --dataset folder:{tmp_path / 'nothing'} --model-repo {repo} "
        arguments += f"--model-name {name} --run-dir {tmp_path / 'run'}"
        return runner.invoke(app, arguments.split())

    result = train("mine")
    assert result.exit_code == 2, result.output
    assert not (repo / "mine").exists() and not repo.exists()
    # A repository that existed before is kept, and so is a model folder with versions.
    (repo / "mnist" / "1").mkdir(parents=True)
    assert train("mnist").exit_code == 2
    assert train("fashion").exit_code == 2
    assert sorted(path.name for path in repo.iterdir()) == ["mnist"]


@pytest.mark.slow
def test_tensorflow_starts_without_its_noise_unless_verbose() -> None:
    from trainer_helpers import run_python

    code = "from common import quiet; quiet.import_tensorflow({}); print('ok')"
    quiet = run_python("-c", code.format("False"), timeout=120)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "ok", quiet.stderr
    for noise in ("oneDNN", "cudart_stub", "cuInit", "absl::InitializeLog"):
        assert noise not in quiet.stderr, quiet.stderr
    loud = run_python("-c", code.format("True"), timeout=120)
    assert loud.returncode == 0
    assert "oneDNN" in loud.stderr or "cudart_stub" in loud.stderr, loud.stderr


def _parsed_config(arguments: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The TrainConfig `train` would run with these arguments (the run itself replaced)."""
    from trainer import cli, training

    seen = []
    monkeypatch.setattr(training, "run", seen.append)
    monkeypatch.setattr(cli, "_quiet_tensorflow", lambda model: None)
    result = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "run"), *arguments])
    assert result.exit_code == 0, result.output
    return seen[0]


def test_defaults_stay_the_tutorials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _parsed_config([], tmp_path, monkeypatch)
    assert (config.model, config.optimizer, config.learning_rate, config.schedule) == (
        "mlp", "adam", 1e-3, "constant",
    )  # fmt: skip
    assert (config.batch_size, config.epochs, config.validation_split) == (64, 20, 0.2)
    assert config.preset is None and config.augment == "none"


def test_preset_fast_sets_what_it_says_and_given_options_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.training import PRESETS

    config = _parsed_config(["--preset", "fast"], tmp_path, monkeypatch)
    for key, value in PRESETS["fast"]["mlp"].items():
        assert getattr(config, key) == value, key
    # The network and the validation split are not the preset's to change.
    assert (config.model, config.validation_split, config.optimizer) == ("mlp", 0.2, "adam")

    config = _parsed_config(
        ["--preset", "fast", "--epochs", "3", "--batch-size", "64"], tmp_path, monkeypatch
    )
    assert (config.epochs, config.batch_size) == (3, 64)
    assert config.learning_rate == PRESETS["fast"]["mlp"]["learning_rate"]

    config = _parsed_config(["--preset", "fast", "--model", "cnn"], tmp_path, monkeypatch)
    for key, value in PRESETS["fast"]["cnn"].items():
        assert getattr(config, key) == value, key


def test_preset_accurate_trains_the_cnn_longer_with_augmentation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.training import PRESETS

    fast = PRESETS["fast"]["cnn"]
    config = _parsed_config(["--preset", "accurate", "--model", "cnn"], tmp_path, monkeypatch)
    assert (config.model, config.validation_split, config.optimizer) == ("cnn", 0.2, "adam")
    assert config.schedule == fast["schedule"] == "warmup_cosine"
    # The fast preset's short run without augmentation for 0.99; this one's longer, with
    # shifted and rotated digits, for 0.995.
    assert fast["augment"] == "none" and config.augment == "light"
    assert config.epochs > fast["epochs"]
    for key, value in PRESETS["accurate"]["cnn"].items():
        assert getattr(config, key) == value, key
    config = _parsed_config(
        ["--preset", "accurate", "--model", "cnn", "--augment", "none"], tmp_path, monkeypatch
    )
    assert config.augment == "none" and config.epochs == PRESETS["accurate"]["cnn"]["epochs"]
