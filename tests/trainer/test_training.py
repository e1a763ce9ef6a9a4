"""`training.run` in-process on tiny synthetic data: the other architectures, RGB, folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from trainer_helpers import write_image_folder

from common import contract
from trainer.training import (
    WARMUP_FRACTION,
    RunError,
    TrainConfig,
    learning_rate_schedule,
    run,
)

tf = pytest.importorskip("tensorflow")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet"])
def test_rgb_folder_dataset_trains_and_publishes(model: str, tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "colours", {"amber": 12, "teal": 12}, mode="RGB")
    config = TrainConfig(
        dataset=f"folder:{root}", model=model, epochs=1, batch_size=8, seed=5,
        run_dir=tmp_path / "run", model_repo=tmp_path / "models", model_name="colours",
        progress="lines",
    )  # fmt: skip
    result = run(config)
    assert result.version == 1
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == model and metrics["version"] == 1
    loaded = tf.saved_model.load(str(result.version_path))
    signature = loaded.signatures[contract.SERVING_DEFAULT]
    spec = signature.structured_input_signature[1][contract.IMAGES_INPUT]
    assert spec.shape.as_list() == [None, 10, 12, 3] and spec.dtype == tf.uint8
    outputs = signature(images=tf.zeros((2, 10, 12, 3), tf.uint8))
    assert set(outputs) == {contract.PROBABILITIES, contract.CLASS_IDS, contract.CLASSES}
    assert set(outputs[contract.CLASSES].numpy().astype(str)) <= {"amber", "teal"}
    np.testing.assert_allclose(outputs[contract.PROBABILITIES].numpy().sum(axis=1), 1, rtol=1e-5)


def test_run_validates_before_loading_anything(tmp_path: Path) -> None:
    config = TrainConfig(dataset="npz:/absent.npz", keep=2, run_dir=tmp_path / "run")
    with pytest.raises(RunError, match="--keep needs --model-repo"):
        run(config)
    assert not (tmp_path / "run").exists()


def test_an_unusable_model_repo_fails_before_training(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "repo-file"
    not_a_folder.write_text("")
    config = TrainConfig(
        dataset="npz:/absent.npz", model_repo=not_a_folder, model_name="mnist",
        run_dir=tmp_path / "run",
    )  # fmt: skip
    # A RunError rather than the data set's DatasetError: checked before anything is loaded.
    with pytest.raises(RunError, match=r"--model-repo: cannot create .*repo-file/mnist"):
        run(config)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_steps_per_execution_changes_no_update(idx_dir: Path, tmp_path: Path) -> None:
    """32 batches per call into TensorFlow train the same weights as Keras' one (seeded)."""
    import keras

    weights = []
    for steps in (1, 32):
        run_dir = tmp_path / f"steps-{steps}"
        config = TrainConfig(
            dataset=f"idx:{idx_dir}", epochs=2, batch_size=4, seed=11, run_dir=run_dir,
            steps_per_execution=steps, progress="lines",
        )  # fmt: skip
        run(config)
        weights.append(keras.saving.load_model(run_dir / "best.keras").get_weights())
    for one, many in zip(*weights, strict=True):
        np.testing.assert_allclose(one, many, rtol=1e-5, atol=1e-6)


def test_warmup_cosine_rises_to_the_rate_then_decays_to_one_percent() -> None:
    config = TrainConfig(learning_rate=0.01, schedule="warmup_cosine", epochs=4)
    schedule = learning_rate_schedule(config, steps_per_epoch=50)
    total = 4 * 50
    warmup = round(total * WARMUP_FRACTION)
    rates = np.array([float(schedule(step)) for step in range(total + 1)])
    assert rates[0] == pytest.approx(0.001)
    assert rates.argmax() == warmup and rates.max() == pytest.approx(0.01)
    assert np.all(np.diff(rates[: warmup + 1]) > 0)
    assert np.all(np.diff(rates[warmup:]) < 0)
    assert rates[-1] == pytest.approx(0.0001)
    # Past the last step the rate stays at its floor.
    assert float(schedule(total + 100)) == pytest.approx(0.0001)


def test_cosine_starts_at_the_rate_and_ends_at_one_percent() -> None:
    config = TrainConfig(learning_rate=0.01, schedule="cosine", epochs=2)
    schedule = learning_rate_schedule(config, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(20)) == pytest.approx(0.0001)


@pytest.mark.parametrize(
    ("model", "before", "after"),
    [("mlp", None, None), ("cnn", None, "1"), ("resnet", None, "1"), ("cnn", "0", "0")],
)
def test_onednn_is_turned_on_for_convolutional_models_only(monkeypatch, model, before, after):
    # The mlp keeps TensorFlow's default kernels: its seeded runs stay the ones measured; a
    # user's TF_ENABLE_ONEDNN_OPTS always wins.
    from trainer.training import use_onednn

    if before is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", before)
    use_onednn(model)
    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == after
