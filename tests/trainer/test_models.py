"""Model builders: the tutorial's MLP exactly, the others' defining structure."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from trainer.models import build_model  # noqa: E402


def _layers(model):
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def test_mlp_is_exactly_the_tutorial_network() -> None:
    model = build_model("mlp", (28, 28, 1), 10)
    layers = _layers(model)
    # Rescaling first (normalisation inside the model), then the tutorial's five layers.
    assert [type(layer).__name__ for layer in layers] == [
        "Rescaling", "Flatten", "Dense", "Dropout", "Dense", "Dense",
    ]  # fmt: skip
    rescaling, _, hidden, dropout, second, output = layers
    assert rescaling.scale == pytest.approx(1 / 255)
    assert (hidden.units, second.units, output.units) == (256, 128, 10)
    assert dropout.rate == 0.5
    assert [layer.activation.__name__ for layer in (hidden, second, output)] == [
        "relu", "relu", "softmax",
    ]  # fmt: skip
    assert model.count_params() == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10


def test_leaky_relu_and_l2_reach_every_hidden_layer() -> None:
    model = build_model("mlp", (8, 8, 1), 3, activation="leaky_relu", l2=1e-4)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.activation.__name__ for layer in dense[:2]] == ["leaky_relu", "leaky_relu"]
    assert all(layer.kernel_regularizer is not None for layer in dense)


def test_cnn_has_one_conv_with_batch_norm_per_resolution_and_stays_small() -> None:
    model = build_model("cnn", (28, 28, 1), 10)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.filters for layer in convs] == [16, 32, 64]
    # Each conv sees a resolution half the previous one's: 28, 14, 7.
    assert [layer.input.shape[1] for layer in convs] == [28, 14, 7]
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("BatchNormalization") == 3 and kinds.count("MaxPooling2D") == 3
    # Inference's batch-norm statistics follow the last ~10 batches, not Keras' ~100, which
    # lag behind a short training's first epochs.
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.momentum == 0.9 for layer in norms)
    assert 50_000 < model.count_params() < 150_000
    assert model.output_shape == (None, 10)
    # Each conv is pooled first, so batch norm and the activation see a quarter of its values.
    blocks = [kinds[index + 1 : index + 4] for index, kind in enumerate(kinds) if kind == "Conv2D"]
    assert blocks == [["MaxPooling2D", "BatchNormalization", "Activation"]] * 3
    assert [layer.input.shape[1] for layer in norms] == [14, 7, 3]


def test_resnet_pools_nowhere_but_at_the_end() -> None:
    model = build_model("resnet", (28, 28, 1), 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert "MaxPooling2D" not in kinds and kinds.count("GlobalAveragePooling2D") == 1
    first_conv = kinds.index("Conv2D")
    assert kinds[first_conv + 1 : first_conv + 3] == ["BatchNormalization", "Activation"]


def test_resnet_has_residual_connections() -> None:
    model = build_model("resnet", (28, 28, 1), 10)
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 3
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def test_transfer_adapts_gray_28px_input_without_downloading() -> None:
    model = build_model("transfer", (28, 28, 1), 4)
    names = [layer.name for layer in model.layers]
    assert "gray_to_rgb" in names and "upsize" in names
    predictions = model.predict(np.full((2, 28, 28, 1), 200, np.float32), verbose=0)
    assert predictions.shape == (2, 4)
    np.testing.assert_allclose(predictions.sum(axis=1), 1, rtol=1e-5)


def test_models_take_pixels_0_to_255() -> None:
    model = build_model("cnn", (8, 8, 1), 3)
    assert isinstance(_layers(model)[0], keras.layers.Rescaling)
    assert model.input_shape == (None, 8, 8, 1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"kind": "vgg"}, "unknown model 'vgg'"),
        ({"kind": "mlp", "activation": "tanh"}, "unknown activation 'tanh'"),
        ({"kind": "mlp", "weights": "w.h5"}, "only applies to --model transfer"),
        ({"kind": "transfer", "weights": "/absent/w.h5"}, "no such file"),
    ],
)
def test_builder_rejects_bad_arguments(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(input_shape=(32, 32, 3), num_classes=2, **arguments)


def test_pipeline_batches_float_pixels_and_one_hot_labels() -> None:
    from trainer.training import make_pipeline

    images = np.arange(10 * 4 * 4, dtype=np.uint8).reshape(10, 4, 4, 1)
    labels = np.arange(10) % 3
    batches = list(make_pipeline(images, labels, 3, 4, shuffle=False, augment="none", seed=None))
    assert [len(batch[0]) for batch in batches] == [4, 4, 2]
    pixels, one_hot = batches[0]
    assert pixels.dtype == "float32"
    np.testing.assert_array_equal(pixels.numpy(), images[:4].astype(np.float32))
    np.testing.assert_array_equal(one_hot.numpy().argmax(axis=1), labels[:4])


def test_augmentation_changes_training_batches_only_when_asked() -> None:
    from trainer.training import make_pipeline

    images = np.zeros((8, 16, 16, 1), np.uint8)
    images[:, 6:10, 6:10] = 255
    labels = np.zeros(8, np.int64)
    plain = next(iter(make_pipeline(images, labels, 2, 8, True, "none", seed=1)))[0].numpy()
    moved = next(iter(make_pipeline(images, labels, 2, 8, True, "light", seed=1)))[0].numpy()
    np.testing.assert_array_equal(plain, images.astype(np.float32))
    assert not np.array_equal(moved, plain)
    # One shift/rotation/zoom per image: the square moves but keeps about its brightness.
    assert moved.min() >= 0 and moved.max() <= 255
    assert moved.sum() == pytest.approx(plain.sum(), rel=0.25)
    # Evaluation pipelines never augment, whatever is asked.
    held_out = next(iter(make_pipeline(images, labels, 2, 8, False, "light", seed=1)))[0].numpy()
    np.testing.assert_array_equal(held_out, images.astype(np.float32))
