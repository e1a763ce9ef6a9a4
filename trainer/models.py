"""Model builders. Every model takes float pixels in 0..255 and scales them itself.

Scaling inside the model (a `Rescaling` layer first) means the exported graph, the checkpoint
and the training pipeline all agree on what a pixel is.
"""

from __future__ import annotations

from pathlib import Path

# The moving statistics that inference uses average the last ~10 batches (Keras' default,
# 0.99, averages ~100). Early in training the convolutions change faster than a 100-batch
# average follows: the cnn's first epoch (issue 9) scored 0.90 on the test set with those
# lagging statistics, and 0.986 with the same weights and statistics re-measured on clean
# training digits (0.27 against 0.983 without augmentation).
BATCH_NORM_MOMENTUM = 0.9
MODEL_NAMES = ("mlp", "cnn", "resnet", "transfer")
ACTIVATIONS = ("relu", "leaky_relu")
MODEL_HELP = (
    "mlp: the tutorial's network (Flatten, Dense 256, Dropout 0.5, Dense 128, Dense K); "
    "cnn: three 3x3 convs with batch norm, one per resolution (16 at full size, 32 at 1/2, "
    "64 at 1/4), each max-pooled, and a dense head (~99k parameters, cheap on CPU); "
    "resnet: a small ResNet (residual blocks with batch norm); "
    "transfer: MobileNetV2 backbone (weights from --weights FILE, else random) with a new head"
)


def build_model(
    kind: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    activation: str = "relu",
    l2: float = 0.0,
    weights: Path | None = None,
):
    """Return an uncompiled Keras model `kind` for images `input_shape` and `num_classes`."""
    import keras

    if kind not in MODEL_NAMES:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODEL_NAMES)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose {' or '.join(ACTIVATIONS)}")
    if weights is not None and kind != "transfer":
        raise ValueError("--weights only applies to --model transfer")
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    builders = {"mlp": _mlp, "cnn": _cnn, "resnet": _resnet, "transfer": _transfer}
    inputs = keras.Input(shape=input_shape, dtype="float32", name="pixels")
    scaled = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    features = builders[kind](scaled, activation, regularizer, weights)
    # float32 output even under mixed precision, so the softmax and the loss stay stable.
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", kernel_regularizer=regularizer,
        dtype="float32", name="probabilities",
    )(features)  # fmt: skip
    return keras.Model(inputs, outputs, name=kind)


def _mlp(x, activation, regularizer, weights):
    import keras

    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(256, activation=activation, kernel_regularizer=regularizer)(x)
    x = keras.layers.Dropout(0.5)(x)
    return keras.layers.Dense(128, activation=activation, kernel_regularizer=regularizer)(x)


def _conv_bn(x, filters, activation, regularizer, strides=1, kernel_size=3, pool=False):
    """Conv, batch norm, activation; with `pool`, 2x2 max-pooling right after the conv, so
    batch norm and the activation run on a quarter of the values."""
    import keras

    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False,
        kernel_regularizer=regularizer,
    )(x)  # fmt: skip
    if pool:
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM)(x)
    return keras.layers.Activation(activation)(x)


def _cnn(x, activation, regularizer, weights):
    import keras

    # One conv per resolution, each followed by max-pooling: 16 filters at 28x28, 32 at 14x14,
    # 64 at 7x7, then a small dense head (~99k parameters, ~2.0M multiply-adds per image). The
    # full-resolution layer's activations (and their batch norm, pooling and gradients) cost
    # more CPU time than their multiply-adds say; halving every width (32/64/128 until issue 9)
    # cut an epoch of 48,000 digits (training and validation) from ~150 to ~51 CPU seconds on
    # the 2-core machine. Pooling before batch norm and ReLU, and oneDNN's kernels
    # (training.use_onednn), cut it to ~25 CPU seconds.
    for filters in (16, 32, 64):
        x = _conv_bn(x, filters, activation, regularizer, pool=True)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.Dense(128, activation=activation, kernel_regularizer=regularizer)(x)
    return keras.layers.Dropout(0.3)(x)


def _residual_block(x, filters, activation, regularizer, strides):
    import keras

    shortcut = x
    y = _conv_bn(x, filters, activation, regularizer, strides=strides)
    y = keras.layers.Conv2D(
        filters, 3, padding="same", use_bias=False, kernel_regularizer=regularizer
    )(y)
    y = keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM)(y)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, kernel_regularizer=regularizer
        )(shortcut)
        shortcut = keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM)(shortcut)
    return keras.layers.Activation(activation)(keras.layers.Add()([shortcut, y]))


def _resnet(x, activation, regularizer, weights):
    import keras

    x = _conv_bn(x, 32, activation, regularizer)
    for filters, strides in ((32, 1), (64, 2), (128, 2)):
        x = _residual_block(x, filters, activation, regularizer, strides)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.layers.Dropout(0.3)(x)


def _transfer(x, activation, regularizer, weights):
    import keras

    height, width, channels = x.shape[1:]
    # MobileNetV2 wants three channels, at least 32x32 pixels, and inputs in [-1, 1].
    if channels == 1:
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    if min(height, width) < 32:
        x = keras.layers.Resizing(max(32, height), max(32, width), name="upsize")(x)
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="to_unit_range")(x)
    if weights is not None and not Path(weights).is_file():
        raise ValueError(f"--weights {weights}: no such file")
    backbone = keras.applications.MobileNetV2(
        input_shape=tuple(x.shape[1:]),
        alpha=0.35,
        include_top=False,
        # A path or None: never the string "imagenet", which would download.
        weights=str(weights) if weights is not None else None,
        pooling="avg",
    )
    x = backbone(x)
    x = keras.layers.Dense(128, activation=activation, kernel_regularizer=regularizer)(x)
    return keras.layers.Dropout(0.3)(x)
